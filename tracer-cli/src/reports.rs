//! Saved reports, for the commands that need no tracing (gate, compare, merge, export, plot,
//! report): reading several at once, naming them in tables and legends, and exporting a selection
//! of their locks. The figures themselves come from `locktrace_report`.

use std::path::{Path, PathBuf};

use locktrace_report::{Metric, Report, ReportError, export, merge};

use crate::timeline::{self, EventsError};

#[derive(Debug, thiserror::Error)]
pub enum ReportsError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{}: no lock matches {pattern:?}", path.display())]
    NoLockMatches { path: PathBuf, pattern: String },
    #[error("{} has no stacks (record with --stacks)", path.display())]
    NoStacks { path: PathBuf },
    #[error("--metric applies to --format folded and pprof only")]
    MetricWithoutStacks,
    #[error("{}: {error}", path.display())]
    Events {
        path: PathBuf,
        #[source]
        error: EventsError,
    },
}

/// What `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Bencher Metric Format JSON.
    Bmf,
    /// HdrHistogram percentile distribution text.
    Hdr,
    /// Stacks as folded lines (`LOCK;MODE;root;…;leaf MICROSECONDS`) for flame graph tools.
    Folded,
    /// Stacks as a gzipped pprof profile, for `go tool pprof`.
    Pprof,
    /// A Perfetto timeline of every wait and hold, from an event stream (`record --format
    /// ndjson`) rather than a report; open it in https://ui.perfetto.dev.
    Perfetto,
}

impl ExportFormat {
    /// Whether the format is binary, so not for a terminal.
    pub fn is_binary(self) -> bool {
        matches!(self, ExportFormat::Pprof | ExportFormat::Perfetto)
    }

    /// Whether the input is an event stream rather than a report.
    pub fn reads_events(self) -> bool {
        self == ExportFormat::Perfetto
    }

    fn has_metric(self) -> bool {
        matches!(self, ExportFormat::Folded | ExportFormat::Pprof)
    }
}

/// An export's bytes (text but for pprof), and what the user should know about it.
pub struct Export {
    pub bytes: Vec<u8>,
    /// One line each, for standard error.
    pub notes: Vec<String>,
}

pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Report>, ReportError> {
    paths.iter().map(|p| Report::read(p)).collect()
}

/// File stems name reports in tables and legends; full paths only where stems collide.
pub fn labels(paths: &[PathBuf]) -> Vec<String> {
    let stem = |p: &PathBuf| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    let stems: Vec<String> = paths.iter().map(stem).collect();
    stems
        .iter()
        .zip(paths)
        .map(|(s, p)| {
            if stems.iter().filter(|o| *o == s).count() > 1 {
                p.display().to_string()
            } else {
                s.clone()
            }
        })
        .collect()
}

/// The report at `path` in `format`, limited to the locks matching the glob `lock` if given.
/// `metric` picks the stacks of the stack formats: folded defaults to hold, pprof to both.
pub fn export(
    path: &Path,
    format: ExportFormat,
    lock: Option<&str>,
    metric: Option<Metric>,
) -> Result<Export, ReportsError> {
    if metric.is_some() && !format.has_metric() {
        return Err(ReportsError::MetricWithoutStacks);
    }
    if format.reads_events() {
        return perfetto(path, lock);
    }
    let mut report = Report::read(path)?;
    if let Some(pattern) = lock {
        report.locks.retain(|l| l.key.matches(pattern));
        if report.locks.is_empty() {
            return Err(ReportsError::NoLockMatches {
                path: path.to_owned(),
                pattern: pattern.to_owned(),
            });
        }
    }
    if format.has_metric() && !export::has_stacks(&report) {
        return Err(ReportsError::NoStacks {
            path: path.to_owned(),
        });
    }
    let mut notes = Vec::new();
    if format.has_metric() {
        // Neither format has a place for a note; the lock frame would pass for a single file.
        for named in merge::by_name(&report.locks)?.values() {
            if named.files > 1 {
                notes.push(format!(
                    "note: {} merged into one lock frame",
                    named.label()
                ));
            }
        }
    }
    let bytes = match format {
        ExportFormat::Bmf => {
            // BMF has no place for a note; without one, a merged benchmark would pass for a
            // single lock file.
            for named in merge::by_name(&report.locks)?.values() {
                if named.files > 1 {
                    notes.push(format!("note: {} merged into one benchmark", named.label()));
                }
            }
            (export::bmf(&report)? + "\n").into_bytes()
        }
        ExportFormat::Hdr => export::hdr_text(&report)?.into_bytes(),
        ExportFormat::Folded => {
            let metric = metric.unwrap_or(Metric::Hold);
            let text = export::folded(&report, metric)?;
            if text.is_empty() {
                notes.push(format!("note: no {metric} stacks, so no lines"));
            }
            text.into_bytes()
        }
        ExportFormat::Pprof => export::pprof(&report, metric)?,
        ExportFormat::Perfetto => return perfetto(path, lock),
    };
    Ok(Export { bytes, notes })
}

/// The timeline of the event stream at `path` (the trace is built in memory: an export's size).
fn perfetto(path: &Path, lock: Option<&str>) -> Result<Export, ReportsError> {
    let events = |error| ReportsError::Events {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(|e| events(EventsError::Read(e)))?;
    let (bytes, stats) =
        timeline::from_ndjson(std::io::BufReader::new(file), Vec::new(), lock).map_err(events)?;
    let mut notes = Vec::new();
    if stats.slices == 0 {
        notes.push(format!(
            "note: {} has no completed wait or hold{}",
            path.display(),
            lock.map(|l| format!(" of a lock matching {l:?}"))
                .unwrap_or_default()
        ));
    }
    if stats.flows_lost > 0 {
        notes.push(format!(
            "note: {} flows not drawn (their holders were forgotten)",
            stats.flows_lost
        ));
    }
    Ok(Export { bytes, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_use_stems_unless_they_collide() {
        let paths = [
            PathBuf::from("runs/locked.json"),
            PathBuf::from("runs/staged.json"),
        ];
        assert_eq!(labels(&paths), ["locked", "staged"]);
        let paths = [PathBuf::from("a/r.json"), PathBuf::from("b/r.json")];
        assert_eq!(labels(&paths), ["a/r.json", "b/r.json"]);
    }
}
