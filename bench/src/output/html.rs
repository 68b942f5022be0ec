//! report.html: one self-contained page (no external assets) with the table and the SVG plots.

use std::fmt::Write;

use locktrace_report::human_duration;
use locktrace_report::markup::escape;
use store_core::SyncLevel;

use super::plot::Plot;
use super::table::Table;
use crate::model::{BenchReport, Params, PullResult};
use crate::size::ByteSize;

pub(super) const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1000px;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .8em;border-bottom:1px solid #ddd}\
td{text-align:right;font-variant-numeric:tabular-nums}td.src{color:#888;text-align:left}\
thead th{border-bottom:2px solid #444}.failed{color:#b00;font-weight:bold}.met{color:#070}\
.missed{color:#b00}figure{margin:1.5em 0}figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}\
code{background:#f4f4f4;padding:0 .2em}";

pub fn render(report: &BenchReport, table: &Table, plots: &[Plot]) -> String {
    let mut h = String::new();
    let p = &report.params;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>lockbench report</title><style>{STYLE}</style></head><body>\n\
         <h1>lockbench: parallel pulls, locked vs staged</h1>\n\
         <p>{} parallel pulls of {} images ({} layers, {}) with {} readers; {} run(s) per mode; \
         extraction threads at nice +{}; {}; kernel {}; {} CPUs. Command: <code>{}</code></p>\n",
        p.pulls,
        report
            .images
            .first()
            .map(|i| ByteSize(i.uncompressed_bytes).to_string())
            .unwrap_or_default(),
        p.layers,
        escape(&p.compression),
        p.readers,
        p.repeat,
        p.extract_nice,
        sync_phrase(p),
        escape(report.kernel.as_deref().unwrap_or("unknown")),
        report.cpus,
        escape(&report.command.join(" ")),
    );
    failures(&mut h, &report.failures);
    h.push_str("<h2>Results</h2>\n");
    h.push_str(&table.to_html());
    h.push_str(
        "<p>Sources: <b>parent</b>/<b>worker</b> = lockbench's own processes (CLOCK_MONOTONIC); \
         <b>store</b> = store-core's observer timings of the kernel fcntl locks it takes; \
         <b>kernel</b> = <code>locktrace record</code> (eBPF).</p>\n",
    );
    let traced: Vec<String> = report
        .modes
        .iter()
        .filter(|m| m.kernel_report.is_some())
        .map(|m| format!("<code>{}.pftrace</code>", m.mode))
        .collect();
    if !traced.is_empty() {
        let _ = writeln!(
            h,
            "<p>Timelines: {} next to this report (<code>MODE-2.pftrace</code>, … for further \
             repetitions), every wait and hold the tracer saw, system-wide, with flows from holder \
             to waiter; open them in <a href=\"https://ui.perfetto.dev\">ui.perfetto.dev</a>.</p>",
            traced.join(", ")
        );
    }
    let mut notes: Vec<&str> = report
        .modes
        .iter()
        .filter_map(|m| m.kernel_note.as_deref())
        .collect();
    notes.dedup();
    for note in notes {
        let _ = writeln!(h, "<p>{}</p>", escape(note));
    }
    if !report.targets.is_empty() {
        h.push_str("<h2>Targets</h2>\n<table><thead><tr><th>target</th><th>goal</th><th>measured</th><th></th></tr></thead><tbody>\n");
        for t in &report.targets {
            let (class, word) = if t.met {
                ("met", "met")
            } else {
                ("missed", "missed")
            };
            let _ = writeln!(
                h,
                "<tr><th>{}</th><td class=\"src\">{}</td><td>{}</td><td class=\"{class}\">{word}</td></tr>",
                escape(&t.name),
                escape(&t.goal),
                escape(&t.measured)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    let pulls = report
        .modes
        .iter()
        .flat_map(|m| m.pulls.iter().map(move |p| (m.mode.to_string(), p)));
    pulls_table(&mut h, "mode", pulls);
    figures(&mut h, plots);
    h.push_str("</body></html>\n");
    h
}

/// Every pull: its group (mode, variant), repetition, worker, image, time and error.
pub(super) fn pulls_table<'a>(
    h: &mut String,
    group: &str,
    pulls: impl Iterator<Item = (String, &'a PullResult)>,
) {
    let _ = writeln!(
        h,
        "<h2>Pulls</h2>\n<table><thead><tr><th>{group}</th><th>run</th><th>pull</th>\
         <th>image</th><th>time</th><th>error</th></tr></thead><tbody>"
    );
    for (label, pull) in pulls {
        let _ = writeln!(
            h,
            "<tr><td class=\"src\">{}</td><td>{}</td><th>{}</th><td>{}</td><td>{}</td>\
             <td class=\"src\">{}</td></tr>",
            escape(&label),
            pull.repeat + 1,
            escape(&pull.worker),
            escape(&pull.image),
            pull.duration_ns
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
            escape(pull.error.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody></table>\n");
}

/// "This run FAILED" and the failures, if there are any.
pub(super) fn failures(h: &mut String, failures: &[String]) {
    if failures.is_empty() {
        return;
    }
    h.push_str("<p class=\"failed\">This run FAILED:</p><ul>\n");
    for f in failures {
        let _ = writeln!(h, "<li>{}</li>", escape(f));
    }
    h.push_str("</ul>\n");
}

/// The plots, inlined, under a heading.
pub(super) fn figures(h: &mut String, plots: &[Plot]) {
    h.push_str("<h2>Plots</h2>\n");
    for plot in plots {
        let _ = writeln!(
            h,
            "<figure>{}<figcaption>{}</figcaption></figure>",
            strip_xml_prolog(&plot.svg),
            escape(&plot.title)
        );
    }
}

/// An XML declaration is not allowed in the middle of an HTML document.
/// What the stores synced, in words; reports from before `sync` existed only have `durable`.
fn sync_phrase(p: &Params) -> &'static str {
    match (p.sync, p.durable) {
        (SyncLevel::Filesystem, _) | (_, true) => {
            "durable stores (fsync), sync=filesystem: layer contents and metadata"
        }
        (SyncLevel::Metadata, false) => {
            "sync=metadata: metadata files fdatasync'ed, layer contents not synced"
        }
        (SyncLevel::None, false) => "stores without fsync (sync=none)",
    }
}

fn strip_xml_prolog(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}
