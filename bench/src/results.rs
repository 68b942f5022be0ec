//! What a run measured: per-mode figures, the per-mode lock reports, the targets, report.json.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use locktrace_report::write_atomic;
use locktrace_report::{Histogram, Metric, Mode, Report, human_duration};
use serde::{Deserialize, Serialize};
use store_core::ExtractMode;

use crate::protocol::ReaderOp;
use crate::scenario::BenchMode;

pub const SCHEMA: &str = "lockbench/1";
/// The lock whose hold time the staged mode is about.
pub const LAYERS_LOCK: &str = "layers.lock";

/// report.json.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub schema: String,
    pub version: String,
    pub command: Vec<String>,
    pub kernel: Option<String>,
    pub cpus: usize,
    pub params: Params,
    pub images: Vec<ImageFigures>,
    pub modes: Vec<ModeResult>,
    pub targets: Vec<Target>,
    pub failed: bool,
    pub failures: Vec<String>,
    /// Where each figure comes from.
    pub sources: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub pulls: usize,
    pub readers: usize,
    pub layers: usize,
    pub image_size: u64,
    pub compression: String,
    pub seed: u64,
    pub repeat: usize,
    pub trace: String,
    /// Nice increment of the pull workers' extraction threads.
    #[serde(default)]
    pub extract_nice: u8,
    /// Whether the stores fsynced layer contents and metadata.
    #[serde(default)]
    pub durable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageFigures {
    pub name: String,
    pub reference: String,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullResult {
    pub worker: String,
    pub image: String,
    pub repeat: usize,
    pub pid: u32,
    /// None when the pull failed.
    pub duration_ns: Option<u64>,
    pub bytes: u64,
    pub error: Option<String>,
}

/// Exact nearest-rank percentiles of a sample set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Latency {
    pub fn of(samples: &[u64]) -> Latency {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Latency {
            count: sorted.len() as u64,
            p50_ns: percentile(&sorted, 50.0),
            p99_ns: percentile(&sorted, 99.0),
            max_ns: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// Nearest-rank percentile of sorted samples; 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReaderFigures {
    pub all: Latency,
    pub errors: u64,
    pub per_op: BTreeMap<ReaderOp, Latency>,
}

/// A step of layer creation that store-core times (store clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Unpacking the tar stream (under layers.lock in locked mode, outside it in staged mode).
    Extract,
    /// Making the layer visible under layers.lock (record; staged: re-check and rename too).
    Commit,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ModeResult {
    pub mode: BenchMode,
    pub extract_mode: ExtractMode,
    /// Go signal to last pull finished, per repetition (parent's CLOCK_MONOTONIC).
    pub makespan_ns: Vec<u64>,
    pub makespan_median_ns: u64,
    pub pulls: Vec<PullResult>,
    pub pull_time: Latency,
    /// Uncompressed layer bytes over makespan, all repetitions together.
    pub throughput_mb_s: f64,
    pub reader: ReaderFigures,
    /// store-core's own timings of layer extraction and commit, per layer.
    pub phases: BTreeMap<Phase, Latency>,
    /// store-core's own lock timings (Source::Store).
    pub store_report: Report,
    /// `locktrace record` around the workers (Source::Kernel), when traced.
    pub kernel_report: Option<Report>,
    pub kernel_note: Option<String>,
    pub failures: Vec<String>,
}

impl ModeResult {
    /// layers.lock figures from the store clock or the kernel trace.
    pub fn layers_lock(&self, source: Source, mode: Mode, metric: Metric) -> Option<LockStats> {
        let report = match source {
            Source::Store => Some(&self.store_report),
            Source::Kernel => self.kernel_report.as_ref(),
        }?;
        lock_stats(report, LAYERS_LOCK, mode, metric)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Store,
    Kernel,
}

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

/// One of the targets, checked against this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

pub fn targets(modes: &[ModeResult]) -> Vec<Target> {
    let get = |m: BenchMode| modes.iter().find(|r| r.mode == m);
    let mut out = Vec::new();
    let ratio = |a: u64, b: u64| a as f64 / (b as f64).max(1.0);
    if let (Some(locked), Some(staged)) = (get(BenchMode::Locked), get(BenchMode::Staged)) {
        if let (Some(l), Some(s)) = (
            locked.layers_lock(Source::Store, Mode::Write, Metric::Hold),
            staged.layers_lock(Source::Store, Mode::Write, Metric::Hold),
        ) {
            let (l, s) = (l.p99, s.p99);
            let r = ratio(s, l);
            out.push(Target {
                name: "layers.lock hold".into(),
                goal: "staged p99 write hold <= 1% of locked".into(),
                measured: format!(
                    "{:.3}% ({} vs {})",
                    r * 100.0,
                    human_duration(s),
                    human_duration(l)
                ),
                met: r <= 0.01,
            });
        }
        let (l, s) = (locked.reader.all.p99_ns, staged.reader.all.p99_ns);
        if l > 0 && s > 0 {
            let r = ratio(s, l);
            out.push(Target {
                name: "reader latency".into(),
                goal: "staged reader p99 <= 5% of locked".into(),
                measured: format!(
                    "{:.2}% ({} vs {})",
                    r * 100.0,
                    human_duration(s),
                    human_duration(l)
                ),
                met: r <= 0.05,
            });
        }
        let (l, s) = (locked.makespan_median_ns, staged.makespan_median_ns);
        if l > 0 && s > 0 {
            out.push(Target {
                name: "locked visibly worse".into(),
                goal: "locked makespan >= 1.2x staged, or locked reader p99 >= 10x staged".into(),
                measured: format!(
                    "makespan {:.2}x, reader p99 {:.1}x",
                    ratio(l, s),
                    ratio(locked.reader.all.p99_ns, staged.reader.all.p99_ns)
                ),
                met: ratio(l, s) >= 1.2
                    || ratio(locked.reader.all.p99_ns, staged.reader.all.p99_ns) >= 10.0,
            });
        }
    }
    if let (Some(staged), Some(iso)) = (get(BenchMode::Staged), get(BenchMode::Isolated)) {
        let (s, i) = (staged.makespan_median_ns, iso.makespan_median_ns);
        if s > 0 && i > 0 {
            let r = ratio(s, i);
            out.push(Target {
                name: "staged vs isolated".into(),
                goal: "staged makespan within 15% of isolated".into(),
                measured: format!(
                    "{:+.1}% ({} vs {})",
                    (r - 1.0) * 100.0,
                    human_duration(s),
                    human_duration(i)
                ),
                met: r <= 1.15,
            });
        }
    }
    out
}

impl BenchReport {
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).context("serializing report")?;
        write_atomic(path, &text).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locktrace_report::{Actor, LockKey, Recorder, ReportMeta};

    fn mode(mode: BenchMode, hold_ns: u64, reader_p99_ns: u64, makespan_ns: u64) -> ModeResult {
        let mut rec = Recorder::new();
        let actor = Actor {
            pid: 1,
            comm: "pull-0".into(),
        };
        let key = LockKey::named("overlay-layers/layers.lock");
        for _ in 0..10 {
            rec.record(&key, Mode::Write, Metric::Hold, hold_ns, &actor);
        }
        ModeResult {
            mode,
            extract_mode: mode.extract_mode(),
            makespan_ns: vec![makespan_ns],
            makespan_median_ns: makespan_ns,
            pulls: Vec::new(),
            pull_time: Latency::default(),
            throughput_mb_s: 0.0,
            reader: ReaderFigures {
                all: Latency {
                    count: 100,
                    p50_ns: reader_p99_ns / 2,
                    p99_ns: reader_p99_ns,
                    max_ns: reader_p99_ns,
                },
                errors: 0,
                per_op: BTreeMap::new(),
            },
            phases: BTreeMap::new(),
            store_report: rec.finish(ReportMeta::new(
                "lockbench",
                locktrace_report::Source::Store,
            )),
            kernel_report: None,
            kernel_note: None,
            failures: Vec::new(),
        }
    }

    fn met(targets: &[Target], name: &str) -> bool {
        targets.iter().find(|t| t.name == name).unwrap().met
    }

    #[test]
    fn targets_are_met_and_missed_by_the_numbers() {
        let good = targets(&[
            mode(BenchMode::Locked, 500_000_000, 1_000_000_000, 4_000_000_000),
            mode(BenchMode::Staged, 1_000_000, 10_000_000, 2_000_000_000),
            mode(BenchMode::Isolated, 400_000_000, 5_000_000, 1_900_000_000),
        ]);
        assert_eq!(good.len(), 4);
        assert!(good.iter().all(|t| t.met), "{good:?}");

        let bad = targets(&[
            mode(BenchMode::Locked, 500_000_000, 20_000_000, 2_000_000_000),
            mode(BenchMode::Staged, 10_000_000, 10_000_000, 2_000_000_000),
            mode(BenchMode::Isolated, 400_000_000, 5_000_000, 1_500_000_000),
        ]);
        for name in [
            "layers.lock hold",
            "reader latency",
            "locked visibly worse",
            "staged vs isolated",
        ] {
            assert!(!met(&bad, name), "{name} should be missed: {bad:?}");
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::of(&samples);
        assert_eq!((l.count, l.p50_ns, l.p99_ns, l.max_ns), (100, 50, 99, 100));
        assert_eq!(Latency::of(&[]), Latency::default());
        assert_eq!(percentile(&[7], 99.0), 7);
    }
}
