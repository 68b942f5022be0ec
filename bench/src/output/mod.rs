//! What a run leaves behind: report.json and the per-mode lock reports, plots/*.svg, report.html,
//! and the table, targets and failures on the terminal; podman-report.json, the per-variant lock
//! reports and podman-report.html for compare-podman.

pub mod html;
pub mod plot;
pub mod podman_html;
pub mod table;

use std::fs;
use std::path::{Path, PathBuf};

use locktrace_report::write_atomic;
use serde::Serialize;

use crate::error::{Context, Result};
use crate::model::{BenchReport, ModeSamples, PodmanReport};
use crate::text::one_line;
use table::Table;

/// Writes report.json, `<mode>.store.json` / `<mode>.kernel.json`, the plots and report.html into
/// `out`; returns the table they show.
pub fn write_run(report: &BenchReport, samples: &[ModeSamples], out: &Path) -> Result<Table> {
    write_json(report, &out.join("report.json"), "report")?;
    // Each mode's lock figures also as plain locktrace reports, for `locktrace gate|compare|plot`.
    for m in &report.modes {
        m.store_report
            .write(&out.join(format!("{}.store.json", m.mode)))
            .context("writing the per-mode store report")?;
        if let Some(k) = &m.kernel_report {
            k.write(&out.join(format!("{}.kernel.json", m.mode)))
                .context("writing the per-mode kernel report")?;
        }
    }
    let plots = plot::render_all(report, samples, out)?;
    let table = table::build(report);
    write_atomic(
        &out.join("report.html"),
        html::render(report, &table, &plots).as_bytes(),
    )
    .context("writing report.html")?;
    Ok(table)
}

/// The table, the targets, failures and where the reports are.
pub fn print_run(report: &BenchReport, table: &Table, out: &Path) {
    println!("{}", table.to_text());
    for t in &report.targets {
        println!(
            "target {:<22} {:<5} {} (goal: {})",
            t.name,
            if t.met { "met" } else { "MISSED" },
            t.measured,
            t.goal
        );
    }
    for f in &report.failures {
        eprintln!("lockbench: failed: {f}");
    }
    println!(
        "report: {}  {}",
        out.join("report.json").display(),
        out.join("report.html").display()
    );
    if report.failed {
        eprintln!(
            "lockbench: run FAILED ({} failure(s))",
            report.failures.len()
        );
    }
}

/// Writes podman-report.json, `<variant>.kernel.json`, the CDF plot and podman-report.html into
/// `out`, and prints the table, notes and failures.
pub fn podman(report: &PodmanReport, out: &Path) -> Result<()> {
    let path: PathBuf = out.join("podman-report.json");
    write_json(report, &path, "the podman report")?;
    let mut kernel = Vec::new();
    for v in &report.variants {
        if let Some(k) = &v.kernel_report {
            // A plain locktrace report per variant, for `locktrace compare|gate|plot`.
            k.write(&out.join(format!("{}.kernel.json", v.label())))
                .context("writing a variant's kernel report")?;
            kernel.push((v.label(), plot::store_locks_only(k.clone())));
        }
    }
    let table = table::podman(report);
    let dir = out.join("podman-plots");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let title = "lock wait and hold CDFs per variant (kernel, locktrace)";
    let plots = match plot::cdf_plot(kernel, "cdf-kernel.svg", title, &dir) {
        Ok(p) => p.into_iter().collect(),
        Err(e) => {
            eprintln!("lockbench: note: {}", one_line(&e));
            Vec::new()
        }
    };
    let html = out.join("podman-report.html");
    write_atomic(
        &html,
        podman_html::render(report, &table, &plots).as_bytes(),
    )
    .context("writing podman-report.html")?;
    println!("{}", table.to_text());
    for v in &report.variants {
        if let Some(note) = &v.kernel_note {
            println!("note: {}: {note}", v.label());
        }
    }
    for f in &report.failures {
        eprintln!("lockbench: failed: {f}");
    }
    println!("report: {} and {}", path.display(), html.display());
    Ok(())
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json(value: &impl Serialize, path: &Path, what: &str) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).with_context(|| format!("serializing {what}"))?;
    write_atomic(path, &text).with_context(|| format!("writing {}", path.display()))
}
