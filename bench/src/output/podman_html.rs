//! podman-report.html: compare-podman's table, failures, lock CDFs per variant and every pull, in
//! one self-contained page like report.html.

use std::fmt::Write;

use locktrace_report::human_duration;
use locktrace_report::markup::escape;

use super::html::{STYLE, strip_xml_prolog};
use super::plot::Plot;
use super::table::Table;
use crate::model::PodmanReport;

pub fn render(report: &PodmanReport, table: &Table, plots: &[Plot]) -> String {
    let mut h = String::new();
    let clients: Vec<String> = report
        .variants
        .iter()
        .map(|v| format!("{}: {}", v.label(), v.client))
        .collect();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>lockbench compare-podman</title><style>{STYLE}</style></head><body>\n\
         <h1>podman before and after staged layer creation, and store-core</h1>\n\
         <p>{}. Storage driver {}; store-core at sync={}; {} repetition(s), variants interleaved. \
         Command: <code>{}</code></p>\n",
        escape(&clients.join("; ")),
        escape(&report.driver),
        escape(&report.sync),
        report.repeat,
        escape(&report.command.join(" ")),
    );
    if report.failed {
        h.push_str("<p class=\"failed\">This run FAILED:</p><ul>\n");
        for f in &report.failures {
            let _ = writeln!(h, "<li>{}</li>", escape(f));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h2>Results</h2>\n");
    h.push_str(&table.to_html());
    h.push_str(
        "<p>Sources: <b>parent</b> = lockbench timing the pull and reader processes \
         (CLOCK_MONOTONIC); <b>kernel</b> = <code>locktrace record</code> (eBPF), the same for \
         every variant (podman has no lock timings of its own).</p>\n",
    );
    for v in &report.variants {
        if let Some(note) = &v.kernel_note {
            let _ = writeln!(h, "<p>{}: {}</p>", escape(&v.label()), escape(note));
        }
    }
    h.push_str("<h2>Plots</h2>\n");
    for plot in plots {
        let _ = writeln!(
            h,
            "<figure>{}<figcaption>{}</figcaption></figure>",
            strip_xml_prolog(&plot.svg),
            escape(&plot.title)
        );
    }
    h.push_str(
        "<h2>Pulls</h2>\n<table><thead><tr><th>variant</th><th>run</th><th>pull</th>\
                <th>image</th><th>time</th><th>error</th></tr></thead><tbody>\n",
    );
    for v in &report.variants {
        for pull in &v.pulls {
            let _ = writeln!(
                h,
                "<tr><td class=\"src\">{}</td><td>{}</td><th>{}</th><td>{}</td><td>{}</td>\
                 <td class=\"src\">{}</td></tr>",
                escape(&v.label()),
                pull.repeat + 1,
                escape(&pull.worker),
                escape(&pull.image),
                pull.duration_ns
                    .map(human_duration)
                    .unwrap_or_else(|| "-".into()),
                escape(pull.error.as_deref().unwrap_or(""))
            );
        }
    }
    h.push_str("</tbody></table>\n</body></html>\n");
    h
}
