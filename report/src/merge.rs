//! Lossless merge of reports: histograms, counts, totals, try outcomes and drops add up. Locks are
//! matched by name (paths differ between runs). Top lists are rebuilt from the merged per-report top
//! lists, so an actor just outside every report's top 5 can be missed.

use std::collections::BTreeMap;

use crate::error::ReportError;
use crate::model::{LockKey, LockReport, Mode, Report, ReportMeta, SCHEMA_VERSION};
use crate::recorder::ModeAcc;

/// Merges `reports` into one. All must come from the same clock source.
pub fn merge(reports: &[Report]) -> Result<Report, ReportError> {
    let (first, rest) = reports
        .split_first()
        .ok_or_else(|| ReportError::Merge("no reports given".into()))?;
    if let Some(other) = rest.iter().find(|r| r.meta.source != first.meta.source) {
        return Err(ReportError::Merge(format!(
            "reports mix {} and {} timings, which measure different things",
            first.meta.source, other.meta.source
        )));
    }

    let mut meta = ReportMeta {
        duration_ns: 0,
        drops: Default::default(),
        ..first.meta.clone()
    };
    for r in reports {
        meta.duration_ns = meta.duration_ns.saturating_add(r.meta.duration_ns);
        meta.drops.add(&r.meta.drops);
        if meta.attach != r.meta.attach {
            meta.attach = None;
        }
        if meta.kernel != r.meta.kernel {
            meta.kernel = None;
        }
        if meta.command != r.meta.command {
            meta.command.clear();
        }
        meta.labels
            .retain(|k, v| r.meta.labels.get(k).is_some_and(|other| other == v));
    }

    let mut locks: BTreeMap<String, (LockKey, BTreeMap<Mode, ModeAcc>)> = BTreeMap::new();
    for r in reports {
        for lock in &r.locks {
            let (key, modes) = locks
                .entry(lock.key.name.clone())
                .or_insert_with(|| (lock.key.clone(), BTreeMap::new()));
            // Keep only the location facts every report agrees on.
            if key.path != lock.key.path {
                key.path = None;
            }
            if key.dev != lock.key.dev || key.ino != lock.key.ino {
                key.dev = None;
                key.ino = None;
            }
            for (mode, mode_report) in &lock.modes {
                modes
                    .entry(*mode)
                    .or_default()
                    .absorb(lock, *mode, mode_report)?;
            }
        }
    }

    Ok(Report {
        schema_version: SCHEMA_VERSION,
        meta,
        locks: locks
            .into_values()
            .map(|(key, modes)| LockReport {
                key,
                modes: modes.iter().map(|(m, acc)| (*m, acc.report())).collect(),
            })
            .collect(),
    })
}
