//! Locks by name: how the store and kernel reports name a store's lock files, and one lock's
//! figures across stores.

use std::path::Path;

use locktrace_report::{Histogram, Metric, Mode, Report};

/// The lock whose hold time the staged mode is about.
pub use store_core::layout::LAYERS_LOCK;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockStats {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// What every store-core staging lock file is called in reports: their files are named at random
/// per layer, and under one name a mode's report lists the same locks whatever the run.
const STAGING_LOCKS: &str = "overlay/staging/*.lock";

/// A lock's name in the store and kernel reports: its path relative to its store root
/// (`overlay-layers/layers.lock`), so the shared store and per-worker stores aggregate under one
/// name.
pub fn lock_name(lock: &Path, root: &Path) -> String {
    let rel = lock.strip_prefix(root).unwrap_or(lock);
    if rel.starts_with("overlay/staging") {
        return STAGING_LOCKS.to_string();
    }
    rel.to_string_lossy().into_owned()
}

/// `metric` for `mode` over all locks matching `pattern` (isolated runs have one layers.lock per
/// store), from the lossless histograms; None when no such lock was taken.
pub fn lock_stats(report: &Report, pattern: &str, mode: Mode, metric: Metric) -> Option<LockStats> {
    let mut merged: Option<Histogram<u64>> = None;
    let mut max = 0;
    for lock in report.find(pattern) {
        let Some(m) = lock.modes.get(&mode) else {
            continue;
        };
        max = max.max(m.metric(metric).summary.max);
        let h = lock.histogram(mode, metric).ok()?;
        match merged.as_mut() {
            None => merged = Some(h),
            Some(acc) => acc.add(&h).ok()?,
        }
    }
    let h = merged.filter(|h| !h.is_empty())?;
    Some(LockStats {
        count: h.len(),
        // Histogram quantiles are bucket tops; keep them within the exact max like the report does.
        p50: h.value_at_quantile(0.5).min(max),
        p99: h.value_at_quantile(0.99).min(max),
        max,
    })
}
