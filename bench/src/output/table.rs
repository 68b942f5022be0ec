//! The side-by-side table (modes as columns), as terminal text and as HTML.

use locktrace_report::markup::escape;
use locktrace_report::{Metric, Mode, human_duration};

use crate::model::{
    BenchReport, LAYERS_LOCK, LockStats, ModeResult, Phase, PodmanReport, Source, VariantResult,
    lock_stats,
};

pub struct Table {
    pub modes: Vec<String>,
    pub rows: Vec<Row>,
}

pub struct Row {
    pub label: String,
    /// Which clock measured it: `parent`, `worker`, `store` or `kernel`.
    pub source: &'static str,
    pub cells: Vec<String>,
}

/// Label, lock mode, metric and which statistic of layers.lock a row shows.
type LockRow = (&'static str, Mode, Metric, fn(&LockStats) -> u64);

/// `run`'s table: one column per bench mode.
pub fn build(report: &BenchReport) -> Table {
    let modes = &report.modes;
    let mut rows = Vec::new();
    let mut row = |label: &str, source: &'static str, f: &dyn Fn(&ModeResult) -> String| {
        rows.push(Row {
            label: label.to_string(),
            source,
            cells: modes.iter().map(f).collect(),
        });
    };
    row("makespan", "parent", &|m| {
        human_duration(m.makespan_median_ns)
    });
    row("pull time p50", "worker", &|m| {
        dur(m.pull_time.count, m.pull_time.p50_ns)
    });
    row("pull time max", "worker", &|m| {
        dur(m.pull_time.count, m.pull_time.max_ns)
    });
    row("throughput MB/s", "parent", &|m| {
        format!("{:.1}", m.throughput_mb_s)
    });
    row("reader ops", "worker", &|m| m.reader.all.count.to_string());
    row("reader p50", "worker", &|m| {
        dur(m.reader.all.count, m.reader.all.p50_ns)
    });
    row("reader p99", "worker", &|m| {
        dur(m.reader.all.count, m.reader.all.p99_ns)
    });
    row("reader max", "worker", &|m| {
        dur(m.reader.all.count, m.reader.all.max_ns)
    });
    for (label, phase) in [
        ("extract p50 (per layer)", Phase::Extract),
        ("commit p99 (per layer)", Phase::Commit),
    ] {
        row(label, "store", &|m| {
            m.phases.get(&phase).map_or_else(
                || "-".to_string(),
                |l| match phase {
                    Phase::Extract => human_duration(l.p50_ns),
                    Phase::Commit => human_duration(l.p99_ns),
                },
            )
        });
    }
    let lock_rows: [LockRow; 5] = [
        ("layers.lock W hold p50", Mode::Write, Metric::Hold, |s| {
            s.p50
        }),
        ("layers.lock W hold p99", Mode::Write, Metric::Hold, |s| {
            s.p99
        }),
        ("layers.lock W hold max", Mode::Write, Metric::Hold, |s| {
            s.max
        }),
        ("layers.lock W wait p99", Mode::Write, Metric::Wait, |s| {
            s.p99
        }),
        ("layers.lock R wait p99", Mode::Read, Metric::Wait, |s| {
            s.p99
        }),
    ];
    for (label, mode, metric, pick) in lock_rows {
        row(label, "store", &|m| {
            m.layers_lock(Source::Store, mode, metric)
                .map_or_else(|| "-".to_string(), |s| human_duration(pick(&s)))
        });
    }
    if modes.iter().any(|m| m.kernel_report.is_some()) {
        for (label, mode, metric, pick) in lock_rows {
            row(label, "kernel", &|m| {
                m.layers_lock(Source::Kernel, mode, metric)
                    .map_or_else(|| "-".to_string(), |s| human_duration(pick(&s)))
            });
        }
    }
    row("failures", "", &|m| m.failures.len().to_string());
    Table {
        modes: modes.iter().map(|m| m.mode.to_string()).collect(),
        rows,
    }
}

/// `compare-podman`'s table: a column per variant (and store layout).
pub fn podman(report: &PodmanReport) -> Table {
    let cells = &report.variants;
    let mut rows = Vec::new();
    let mut row = |label: &str, source: &'static str, f: &dyn Fn(&VariantResult) -> String| {
        rows.push(Row {
            label: label.to_string(),
            source,
            cells: cells.iter().map(f).collect(),
        });
    };
    row("client", "", &|v| {
        v.client.trim_start_matches("podman version ").to_string()
    });
    row("makespan (p50 of runs)", "parent", &|v| {
        human_duration(v.makespan_ns)
    });
    row("pull time p50", "parent", &|v| {
        human_duration(v.pull_time.p50_ns)
    });
    row("pull time max", "parent", &|v| {
        human_duration(v.pull_time.max_ns)
    });
    row("throughput MB/s", "parent", &|v| {
        format!("{:.1}", v.throughput_mb_s)
    });
    let kernel = |mode: Mode, metric: Metric, pick: fn(&LockStats) -> u64| {
        move |v: &VariantResult| {
            v.kernel_report
                .as_ref()
                .and_then(|r| lock_stats(r, LAYERS_LOCK, mode, metric))
                .map_or_else(|| "-".to_string(), |s| human_duration(pick(&s)))
        }
    };
    row("layers.lock W holds", "kernel", &|v: &VariantResult| {
        v.kernel_report
            .as_ref()
            .and_then(|r| lock_stats(r, LAYERS_LOCK, Mode::Write, Metric::Hold))
            .map_or_else(|| "-".to_string(), |s| s.count.to_string())
    });
    row(
        "layers.lock W hold p50",
        "kernel",
        &kernel(Mode::Write, Metric::Hold, |s| s.p50),
    );
    row(
        "layers.lock W hold p99",
        "kernel",
        &kernel(Mode::Write, Metric::Hold, |s| s.p99),
    );
    row(
        "layers.lock W hold max",
        "kernel",
        &kernel(Mode::Write, Metric::Hold, |s| s.max),
    );
    row(
        "layers.lock W wait p99",
        "kernel",
        &kernel(Mode::Write, Metric::Wait, |s| s.p99),
    );
    for op in ["images", "create", "rm"] {
        let of = move |v: &VariantResult| v.readers.get(op).copied().unwrap_or_default();
        row(&format!("reader {op} p50"), "parent", &|v| {
            dur(of(v).count, of(v).p50_ns)
        });
        row(&format!("reader {op} p99"), "parent", &|v| {
            dur(of(v).count, of(v).p99_ns)
        });
    }
    row("failures", "", &|v| {
        (v.reader_errors + v.pulls.iter().filter(|p| p.error.is_some()).count() as u64).to_string()
    });
    Table {
        modes: cells.iter().map(VariantResult::label).collect(),
        rows,
    }
}

fn dur(count: u64, ns: u64) -> String {
    if count == 0 {
        "-".to_string()
    } else {
        human_duration(ns)
    }
}

impl Table {
    pub fn to_text(&self) -> String {
        let label_w = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
        let col_w = self
            .rows
            .iter()
            .flat_map(|r| r.cells.iter().map(|c| c.chars().count()))
            .chain(self.modes.iter().map(|m| m.len()))
            .max()
            .unwrap_or(0)
            .max(8);
        let mut out = format!("{:label_w$}  {:8}", "", "source");
        for m in &self.modes {
            out.push_str(&format!("  {m:>col_w$}"));
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!("{:label_w$}  {:8}", r.label, r.source));
            for c in &r.cells {
                out.push_str(&format!("  {c:>col_w$}"));
            }
            out.push('\n');
        }
        out.push_str(
            "sources: parent/worker = lockbench processes' CLOCK_MONOTONIC; store = store-core's own \
             lock timings; kernel = locktrace eBPF\n",
        );
        out
    }

    pub fn to_html(&self) -> String {
        let mut out = String::from("<table>\n<thead><tr><th></th><th>source</th>");
        for m in &self.modes {
            out.push_str(&format!("<th>{}</th>", escape(m)));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for r in &self.rows {
            out.push_str(&format!(
                "<tr><th>{}</th><td class=\"src\">{}</td>",
                escape(&r.label),
                r.source
            ));
            for c in &r.cells {
                out.push_str(&format!("<td>{}</td>", escape(c)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n");
        out
    }
}
