//! Lossless merge of reports: histograms, counts, totals, try outcomes and drops add up. Locks are
//! matched by name (paths differ between runs). Top lists are rebuilt from the merged per-report top
//! lists, so an actor just outside every report's top 5 can be missed.
//!
//! The same machinery lines one report's locks up by name ([`by_name`]): a report can hold several
//! lock files with one name (a store per pull, or several stores in a system-wide trace), and views
//! that match locks across reports by name have to see all of them, not just the first.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::error::ReportError;
use crate::lock_order::OrderAcc;
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
        if meta.collection != r.meta.collection {
            meta.collection = None;
        }
        if meta.command != r.meta.command {
            meta.command.clear();
        }
        meta.labels
            .retain(|k, v| r.meta.labels.get(k).is_some_and(|other| other == v));
    }

    let locks = group_by_name(reports.iter().flat_map(|r| &r.locks))
        .into_iter()
        .map(|(name, group)| combine(name, &group))
        .collect::<Result<_, _>>()?;
    let mut order = OrderAcc::default();
    for r in reports {
        order.absorb(&r.lock_order).map_err(ReportError::Merge)?;
    }
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        meta,
        locks,
        lock_order: order.report(),
    })
}

/// All locks of one name from one report (or from a selection of its locks), as one lock.
#[derive(Debug, Clone)]
pub struct NamedLock<'a> {
    /// How many lock entries (lock files) share the name. Above one, `lock` is their merge and its
    /// statistics are over all of their samples together.
    pub files: usize,
    pub lock: Cow<'a, LockReport>,
}

impl NamedLock<'_> {
    /// The name, with the number of files when several were merged: `layers.lock (4 files)`.
    pub fn label(&self) -> String {
        if self.files > 1 {
            format!("{} ({} files)", self.lock.key.name, self.files)
        } else {
            self.lock.key.name.clone()
        }
    }
}

/// `locks` by name, same-named ones merged as [`merge`] merges reports. A name with a single lock
/// keeps that lock as stored.
pub fn by_name<'a>(
    locks: impl IntoIterator<Item = &'a LockReport>,
) -> Result<BTreeMap<&'a str, NamedLock<'a>>, ReportError> {
    group_by_name(locks)
        .into_iter()
        .map(|(name, group)| {
            let lock = match group.as_slice() {
                [only] => Cow::Borrowed(*only),
                _ => Cow::Owned(combine(name, &group)?),
            };
            let files = group.len();
            Ok((name, NamedLock { files, lock }))
        })
        .collect()
}

fn group_by_name<'a>(
    locks: impl IntoIterator<Item = &'a LockReport>,
) -> BTreeMap<&'a str, Vec<&'a LockReport>> {
    let mut groups: BTreeMap<&str, Vec<&LockReport>> = BTreeMap::new();
    for lock in locks {
        groups.entry(&lock.key.name).or_default().push(lock);
    }
    groups
}

/// Adds up `locks`, all named `name`.
fn combine(name: &str, locks: &[&LockReport]) -> Result<LockReport, ReportError> {
    let mut key = locks
        .first()
        .map_or_else(|| LockKey::named(name), |l| l.key.clone());
    let mut modes: BTreeMap<Mode, ModeAcc> = BTreeMap::new();
    for lock in locks {
        // Keep only the location facts every lock agrees on.
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
    Ok(LockReport {
        key,
        modes: modes.iter().map(|(m, acc)| (*m, acc.report())).collect(),
    })
}
