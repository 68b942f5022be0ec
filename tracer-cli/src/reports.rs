//! Saved reports, for the commands that need no tracing (gate, compare, merge, export, plot,
//! report): reading several at once, naming them in tables and legends, and exporting a selection
//! of their locks. The figures themselves come from `locktrace_report`.

use std::path::{Path, PathBuf};

use locktrace_report::{Report, ReportError, export, merge};

#[derive(Debug, thiserror::Error)]
pub enum ReportsError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{}: no lock matches {pattern:?}", path.display())]
    NoLockMatches { path: PathBuf, pattern: String },
}

/// What `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Bencher Metric Format JSON.
    Bmf,
    /// HdrHistogram percentile distribution text.
    Hdr,
}

/// An export's text, and what the user should know about it.
pub struct Export {
    pub text: String,
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
pub fn export(
    path: &Path,
    format: ExportFormat,
    lock: Option<&str>,
) -> Result<Export, ReportsError> {
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
    let mut notes = Vec::new();
    let text = match format {
        ExportFormat::Bmf => {
            // BMF has no place for a note; without one, a merged benchmark would pass for a
            // single lock file.
            for named in merge::by_name(&report.locks)?.values() {
                if named.files > 1 {
                    notes.push(format!("note: {} merged into one benchmark", named.label()));
                }
            }
            export::bmf(&report)? + "\n"
        }
        ExportFormat::Hdr => export::hdr_text(&report)?,
    };
    Ok(Export { text, notes })
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
