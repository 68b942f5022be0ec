//! What a run measured, as report.json holds it: per-mode figures, the per-mode lock reports, the
//! targets, and where each figure comes from.

use std::collections::BTreeMap;

use locktrace_report::{Metric, Mode, Report};
use serde::{Deserialize, Serialize};
use store_core::{ExtractMode, SyncLevel};

use crate::model::locks::{LAYERS_LOCK, LockStats, lock_stats};
use crate::model::mode::BenchMode;
use crate::protocol::ReaderOp;

pub const SCHEMA: &str = "lockbench/1";

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
    /// What the stores synced to disk (store-core's `sync` level).
    #[serde(default)]
    pub sync: SyncLevel,
    /// Whether the stores fsynced layer contents and metadata: `sync` is `filesystem` (`--durable`).
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

/// One of the targets, checked against this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

/// Where each figure in report.json comes from.
pub fn sources() -> BTreeMap<String, String> {
    [
        (
            "makespan",
            "parent process, CLOCK_MONOTONIC from go signal to last pull end",
        ),
        (
            "pull_time",
            "worker process, CLOCK_MONOTONIC around store_core::oci::pull",
        ),
        (
            "throughput",
            "uncompressed layer bytes (PullOutcome.bytes) / makespan",
        ),
        (
            "reader",
            "reader process, CLOCK_MONOTONIC around each store-core call",
        ),
        (
            "store_report",
            "store-core observer (userspace clock, kernel fcntl locks only)",
        ),
        ("kernel_report", "locktrace record (eBPF, kernel clock)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The running kernel's release, for the report's header.
pub fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::of(&samples);
        assert_eq!((l.count, l.p50_ns, l.p99_ns, l.max_ns), (100, 50, 99, 100));
        assert_eq!(Latency::of(&[]), Latency::default());
        assert_eq!(percentile(&[7], 99.0), 7);
    }
}
