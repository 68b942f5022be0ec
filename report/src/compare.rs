//! Side-by-side view of the same locks in several reports, with ratios against the first report.
//! Locks are matched by name, each report's same-named lock files merged into one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

use crate::error::ReportError;
use crate::merge::{NamedLock, by_name};
use crate::model::{Metric, Mode, Report, Statistic, Summary};

/// Statistics shown in the text table.
const SHOWN: [Statistic; 7] = [
    Statistic::Count,
    Statistic::P50,
    Statistic::P90,
    Statistic::P99,
    Statistic::P999,
    Statistic::Max,
    Statistic::Total,
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// One label per report, in the order given.
    pub labels: Vec<String>,
    pub rows: Vec<ComparisonRow>,
}

/// One lock (by name), mode and metric across all reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    pub lock: String,
    pub mode: Mode,
    pub metric: Metric,
    /// Per report, how many lock files have this name (0 where none): above one, that report's
    /// statistics are over all of them together.
    pub files: Vec<usize>,
    /// Per report; `None` where that report has no such lock mode.
    pub summaries: Vec<Option<Summary>>,
    /// For each report after the first, its statistics divided by the first report's.
    pub ratios: Vec<Ratios>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratios {
    /// e.g. `B/A`.
    pub label: String,
    /// `None` when either side is missing or the first report's value is zero.
    pub count: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub total: Option<f64>,
}

impl Ratios {
    fn get(&self, stat: Statistic) -> Option<f64> {
        match stat {
            Statistic::Count => self.count,
            Statistic::P50 => self.p50,
            Statistic::P90 => self.p90,
            Statistic::P99 => self.p99,
            Statistic::P999 => self.p999,
            Statistic::Max => self.max,
            Statistic::Mean => self.mean,
            Statistic::Total => self.total,
        }
    }
}

/// What side-by-side views (tables, plots) line up.
pub(crate) struct Lineup<'a> {
    /// Per report, its locks by name, same-named lock files merged.
    pub(crate) reports: Vec<BTreeMap<&'a str, NamedLock<'a>>>,
    /// Every (lock name, mode, metric) with samples in any report, in order.
    pub(crate) keys: BTreeSet<(&'a str, Mode, Metric)>,
}

impl<'a> Lineup<'a> {
    pub(crate) fn new(reports: &[(&str, &'a Report)]) -> Result<Self, ReportError> {
        let reports = reports
            .iter()
            .map(|(_, r)| by_name(&r.locks))
            .collect::<Result<Vec<_>, _>>()?;
        let mut keys = BTreeSet::new();
        for (name, named) in reports.iter().flatten() {
            for (mode, m) in &named.lock.modes {
                for metric in Metric::ALL {
                    if m.metric(metric).summary.count > 0 {
                        keys.insert((*name, *mode, metric));
                    }
                }
            }
        }
        Ok(Lineup { reports, keys })
    }
}

/// Lines up every lock mode and metric with samples in any of `reports` (label, report). Locks are
/// matched by name; a report's same-named lock files count as one lock with all their samples.
pub fn compare(reports: &[(&str, &Report)]) -> Result<Comparison, ReportError> {
    let lineup = Lineup::new(reports)?;
    let rows = lineup
        .keys
        .iter()
        .map(|&(lock, mode, metric)| {
            let found: Vec<Option<&NamedLock>> =
                lineup.reports.iter().map(|r| r.get(lock)).collect();
            let files = found.iter().map(|n| n.map_or(0, |n| n.files)).collect();
            let summaries: Vec<Option<Summary>> = found
                .iter()
                .map(|n| {
                    n.and_then(|n| n.lock.modes.get(&mode))
                        .map(|m| m.metric(metric).summary)
                })
                .collect();
            let ratios = summaries
                .iter()
                .zip(reports)
                .skip(1)
                .map(|(s, (label, _))| {
                    ratios(label, reports[0].0, summaries[0].as_ref(), s.as_ref())
                })
                .collect();
            ComparisonRow {
                lock: lock.to_string(),
                mode,
                metric,
                files,
                summaries,
                ratios,
            }
        })
        .collect();
    Ok(Comparison {
        labels: reports.iter().map(|(l, _)| l.to_string()).collect(),
        rows,
    })
}

fn ratios(label: &str, base_label: &str, base: Option<&Summary>, cur: Option<&Summary>) -> Ratios {
    let r = |stat: Statistic| {
        let (b, c) = (stat.of(base?), stat.of(cur?));
        (b > 0).then(|| c as f64 / b as f64)
    };
    Ratios {
        label: format!("{label}/{base_label}"),
        count: r(Statistic::Count),
        p50: r(Statistic::P50),
        p90: r(Statistic::P90),
        p99: r(Statistic::P99),
        p999: r(Statistic::P999),
        max: r(Statistic::Max),
        mean: r(Statistic::Mean),
        total: r(Statistic::Total),
    }
}

impl Comparison {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("comparison serializes to JSON")
    }

    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if self.rows.is_empty() {
            out.push_str("no lock activity in any report\n");
            return out;
        }
        let width = self
            .labels
            .iter()
            .map(|l| l.chars().count())
            .chain(
                self.rows
                    .first()
                    .into_iter()
                    .flat_map(|r| r.ratios.iter().map(|x| x.label.chars().count())),
            )
            .max()
            .unwrap_or(0)
            .max(9);
        for row in &self.rows {
            let _ = write!(out, "{} {} {}", row.lock, row.mode, row.metric);
            if row.files.iter().any(|&n| n > 1) {
                let merged: Vec<String> = self
                    .labels
                    .iter()
                    .zip(&row.files)
                    .filter(|(_, n)| **n > 0)
                    .map(|(label, n)| format!("{label} {n}"))
                    .collect();
                let _ = write!(
                    out,
                    " (same-named lock files merged: {})",
                    merged.join(", ")
                );
            }
            out.push('\n');
            let _ = write!(out, "  {:<6}", "");
            for label in &self.labels {
                let _ = write!(out, " {label:>width$}");
            }
            for ratio in &row.ratios {
                let _ = write!(out, " {:>width$}", ratio.label);
            }
            out.push('\n');
            for stat in SHOWN {
                let _ = write!(out, "  {:<6}", stat.as_str());
                for s in &row.summaries {
                    let cell = s
                        .as_ref()
                        .map_or_else(|| "-".to_string(), |s| stat.format(stat.of(s)));
                    let _ = write!(out, " {cell:>width$}");
                }
                for ratio in &row.ratios {
                    let cell = ratio
                        .get(stat)
                        .map_or_else(|| "-".to_string(), |x| format!("{x:.2}x"));
                    let _ = write!(out, " {cell:>width$}");
                }
                out.push('\n');
            }
            out.push('\n');
        }
        out
    }
}
