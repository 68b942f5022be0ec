//! podman-report.html: compare-podman's table, failures, lock CDFs per variant and every pull, in
//! one self-contained page like report.html.

use std::fmt::Write;

use locktrace_report::markup::escape;

use super::html::{STYLE, failures, figures, pulls_table};
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
    failures(&mut h, &report.failures);
    h.push_str("<h2>Results</h2>\n");
    h.push_str(&table.to_html());
    h.push_str(
        "<p>Sources: <b>parent</b> = lockbench timing the pull and reader processes \
         (CLOCK_MONOTONIC); <b>kernel</b> = <code>locktrace record</code> (eBPF), the same for \
         every variant (podman has no lock timings of its own). Each traced variant's \
         timeline is next to this report as <code>VARIANT.pftrace</code> \
         (<code>VARIANT-LAYOUT</code> past the shared layout, <code>-2</code>, … for further \
         repetitions): every wait and hold, with flows from holder to waiter; open it in \
         <a href=\"https://ui.perfetto.dev\">ui.perfetto.dev</a>.</p>\n",
    );
    for v in &report.variants {
        if let Some(note) = &v.kernel_note {
            let _ = writeln!(h, "<p>{}: {}</p>", escape(&v.label()), escape(note));
        }
    }
    figures(&mut h, plots);
    let pulls = report
        .variants
        .iter()
        .flat_map(|v| v.pulls.iter().map(move |p| (v.label(), p)));
    pulls_table(&mut h, "variant", pulls);
    h.push_str("</body></html>\n");
    h
}
