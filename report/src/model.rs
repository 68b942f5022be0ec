use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::blockers::{Blocker, BlockerOthers};
use crate::duration::human_duration;
use crate::error::ReportError;
use crate::histogram;
use crate::lock_order::LockOrder;
pub use crate::mode::Mode;
use crate::pattern::glob_match;
use crate::stacks::{MetricStacks, Stacks};

/// Version of the JSON layout written by [`Report::write`]. Readers accept any version up to this one
/// and reject newer ones, so a report never gets silently misread by an older tool.
pub const SCHEMA_VERSION: u32 = 1;

/// Time spent blocked before getting the lock (`Wait`) or holding it (`Hold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Wait,
    Hold,
}

impl Metric {
    pub const ALL: [Metric; 2] = [Metric::Wait, Metric::Hold];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Wait => "wait",
            Metric::Hold => "hold",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "wait" => Ok(Metric::Wait),
            "hold" => Ok(Metric::Hold),
            _ => Err(ReportError::Invalid(format!(
                "unknown metric {s:?} (expected wait or hold)"
            ))),
        }
    }
}

/// Which clock produced the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The eBPF tracer.
    Kernel,
    /// store-core's own userspace clock.
    Store,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Kernel => "kernel",
            Source::Store => "store",
        })
    }
}

/// Identity of one lock file. `name` is the stable, run-independent identity (used to line locks up
/// across reports); `path`, `dev` and `ino` are what this run saw.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LockKey {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
}

impl LockKey {
    pub fn named(name: impl Into<String>) -> Self {
        LockKey {
            name: name.into(),
            path: None,
            dev: None,
            ino: None,
        }
    }

    /// Glob match on the name, the full path, or (for patterns without `/`) the file name of either,
    /// so `layers.lock`, `*.lock` and `/var/lib/containers/storage/*/layers.lock` all work.
    pub fn matches(&self, pattern: &str) -> bool {
        let candidates = std::iter::once(self.name.as_str()).chain(self.path.as_deref());
        for text in candidates {
            if glob_match(pattern, text) {
                return true;
            }
            if !pattern.contains('/')
                && let Some((_, base)) = text.rsplit_once('/')
                && glob_match(pattern, base)
            {
                return true;
            }
        }
        false
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path.as_deref().unwrap_or(&self.name))
    }
}

/// The process that waited for or held a lock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub pid: u32,
    pub comm: String,
}

/// Result of a non-blocking lock attempt (`F_SETLK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TryOutcome {
    Acquired,
    Refused,
    Error,
    Interrupted,
}

/// Events the tracer knows it missed or could not pair; any non-zero count means the histograms are
/// incomplete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Drops {
    pub ringbuf_lost: u64,
    pub map_full: u64,
    pub unmatched_releases: u64,
    pub still_held_at_end: u64,
    pub unresolved_names: u64,
    /// User stacks asked for (`--stacks`) and not captured: their samples are counted under
    /// `[stack lost]`. Not in [`Drops::total`]: the histograms are still complete.
    #[serde(skip_serializing_if = "is_zero")]
    pub stacks_lost: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.ringbuf_lost
            .saturating_add(self.map_full)
            .saturating_add(self.unmatched_releases)
            .saturating_add(self.still_held_at_end)
            .saturating_add(self.unresolved_names)
    }

    pub fn add(&mut self, other: &Drops) {
        self.ringbuf_lost = self.ringbuf_lost.saturating_add(other.ringbuf_lost);
        self.map_full = self.map_full.saturating_add(other.map_full);
        self.unmatched_releases = self
            .unmatched_releases
            .saturating_add(other.unmatched_releases);
        self.still_held_at_end = self
            .still_held_at_end
            .saturating_add(other.still_held_at_end);
        self.unresolved_names = self.unresolved_names.saturating_add(other.unresolved_names);
        self.stacks_lost = self.stacks_lost.saturating_add(other.stacks_lost);
    }
}

/// How a kernel trace was collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Collection {
    /// Every lock call and release sent to userspace and paired there.
    Events,
    /// Aggregated in kernel maps; no per-event data (blockers, lock order, stacks).
    Summary,
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Collection::Events => "events",
            Collection::Summary => "summary",
        })
    }
}

/// How and where a report was produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportMeta {
    pub tool: String,
    pub source: Source,
    /// How the tracer attached (e.g. `fentry`, `kprobe`); `None` for store timings.
    #[serde(default)]
    pub attach: Option<String>,
    /// Kernel release the trace ran on.
    #[serde(default)]
    pub kernel: Option<String>,
    /// How the kernel tracer collected: an event per lock call, or in-kernel summaries
    /// (`record --summary`, whose percentiles are within its buckets' 1.6 %). `None` for store
    /// timings and reports from before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<Collection>,
    /// The traced command line, if any.
    #[serde(default)]
    pub command: Vec<String>,
    pub duration_ns: u64,
    #[serde(default)]
    pub drops: Drops,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl ReportMeta {
    /// Metadata with everything optional left empty.
    pub fn new(tool: impl Into<String>, source: Source) -> Self {
        ReportMeta {
            tool: tool.into(),
            source,
            attach: None,
            kernel: None,
            collection: None,
            command: Vec::new(),
            duration_ns: 0,
            drops: Drops::default(),
            labels: BTreeMap::new(),
        }
    }
}

/// Statistics of one histogram, all in nanoseconds. Percentiles come from the histogram (3 significant
/// digits, clamped into `[min, max]`); `min`, `max` and `total` are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: u64,
    pub total: u64,
}

impl Summary {
    /// Summary of `hist`; `min`, `max` and `total` are the exact values tracked next to it.
    pub fn from_histogram(hist: &Histogram<u64>, total: u64, min: u64, max: u64) -> Summary {
        let count = hist.len();
        if count == 0 {
            return Summary::default();
        }
        // Histogram percentiles report the top of a bucket; never claim more than the exact range.
        // `max(min)` keeps the bounds ordered, so a corrupt summary cannot make `clamp` panic.
        let q = |quantile: f64| hist.value_at_quantile(quantile).clamp(min, max.max(min));
        Summary {
            count,
            min,
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max,
            mean: total / count,
            total,
        }
    }
}

/// A statistic of a [`Summary`], as named in budgets and comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Statistic {
    Count,
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
    Total,
}

impl Statistic {
    pub const ALL: [Statistic; 8] = [
        Statistic::Count,
        Statistic::P50,
        Statistic::P90,
        Statistic::P99,
        Statistic::P999,
        Statistic::Max,
        Statistic::Mean,
        Statistic::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::Count => "count",
            Statistic::P50 => "p50",
            Statistic::P90 => "p90",
            Statistic::P99 => "p99",
            Statistic::P999 => "p999",
            Statistic::Max => "max",
            Statistic::Mean => "mean",
            Statistic::Total => "total",
        }
    }

    pub fn of(self, s: &Summary) -> u64 {
        match self {
            Statistic::Count => s.count,
            Statistic::P50 => s.p50,
            Statistic::P90 => s.p90,
            Statistic::P99 => s.p99,
            Statistic::P999 => s.p999,
            Statistic::Max => s.max,
            Statistic::Mean => s.mean,
            Statistic::Total => s.total,
        }
    }

    /// Everything but `count` is a duration in nanoseconds.
    pub fn is_duration(self) -> bool {
        self != Statistic::Count
    }

    /// The value formatted in the statistic's unit.
    pub fn format(self, value: u64) -> String {
        if self.is_duration() {
            human_duration(value)
        } else {
            value.to_string()
        }
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Statistic {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "count" => Statistic::Count,
            "p50" | "median" => Statistic::P50,
            "p90" => Statistic::P90,
            "p99" => Statistic::P99,
            "p999" | "p99.9" => Statistic::P999,
            "max" => Statistic::Max,
            "mean" | "avg" => Statistic::Mean,
            "total" | "sum" => Statistic::Total,
            _ => {
                return Err(format!(
                    "unknown statistic {s:?} (expected count, p50, p90, p99, p999, max, mean or total)"
                ));
            }
        })
    }
}

/// One metric of one lock mode: its summary and the lossless histogram it was derived from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricReport {
    pub summary: Summary,
    /// HdrHistogram V2 + deflate encoding, base64 (standard alphabet, padded).
    pub histogram: String,
}

impl MetricReport {
    /// Builds the report of a histogram whose exact min, max and sum are known.
    pub fn from_histogram(
        hist: &Histogram<u64>,
        total: u64,
        min: u64,
        max: u64,
    ) -> Result<Self, ReportError> {
        Ok(MetricReport {
            summary: Summary::from_histogram(hist, total, min, max),
            histogram: histogram::encode(hist)?,
        })
    }
}

/// Outcomes of non-blocking attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TryCounts {
    pub acquired: u64,
    pub refused: u64,
    pub errors: u64,
    pub interrupted: u64,
    /// Of the `errors`, lock calls the kernel refused with EDEADLK: waiting would have deadlocked.
    #[serde(skip_serializing_if = "is_zero")]
    pub edeadlk: u64,
}

impl TryCounts {
    pub fn total(&self) -> u64 {
        self.acquired
            .saturating_add(self.refused)
            .saturating_add(self.errors)
            .saturating_add(self.interrupted)
    }

    /// Adds `other`, saturating; [`TryCounts::checked_add`] says when that would lose counts.
    pub fn add(&mut self, other: &TryCounts) {
        self.acquired = self.acquired.saturating_add(other.acquired);
        self.refused = self.refused.saturating_add(other.refused);
        self.errors = self.errors.saturating_add(other.errors);
        self.interrupted = self.interrupted.saturating_add(other.interrupted);
        self.edeadlk = self.edeadlk.saturating_add(other.edeadlk);
    }

    /// The sum, or `None` when a count would pass `u64::MAX`.
    pub fn checked_add(&self, other: &TryCounts) -> Option<TryCounts> {
        Some(TryCounts {
            acquired: self.acquired.checked_add(other.acquired)?,
            refused: self.refused.checked_add(other.refused)?,
            errors: self.errors.checked_add(other.errors)?,
            interrupted: self.interrupted.checked_add(other.interrupted)?,
            edeadlk: self.edeadlk.checked_add(other.edeadlk)?,
        })
    }

    pub(crate) fn count(&mut self, outcome: TryOutcome) {
        let one = |n: &mut u64| *n = n.saturating_add(1);
        match outcome {
            TryOutcome::Acquired => one(&mut self.acquired),
            TryOutcome::Refused => one(&mut self.refused),
            TryOutcome::Error => one(&mut self.errors),
            TryOutcome::Interrupted => one(&mut self.interrupted),
        }
    }
}

/// Time one process spent waiting for or holding a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorStat {
    pub pid: u32,
    pub comm: String,
    pub count: u64,
    /// Nanoseconds.
    pub total: u64,
}

/// How many actors a top list keeps.
pub const TOP_ACTORS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeReport {
    pub wait: MetricReport,
    pub hold: MetricReport,
    #[serde(default)]
    pub tries: TryCounts,
    /// Top [`TOP_ACTORS`] by total wait time.
    #[serde(default)]
    pub top_waiters: Vec<ActorStat>,
    /// Top [`TOP_ACTORS`] by total hold time.
    #[serde(default)]
    pub top_holders: Vec<ActorStat>,
    /// Processes holding a conflicting lock when a wait started: the top
    /// [`TOP_BLOCKERS`](crate::TOP_BLOCKERS) by total wait caused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<Blocker>,
    /// The blockers past the top ones, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blockers_others: Option<BlockerOthers>,
    /// Waits that must have been blocked (longer than the tracer's threshold) while no traced
    /// process held a conflicting lock.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub holder_not_traced: u64,
    /// The code paths that waited and held (`record --stacks`).
    #[serde(default, skip_serializing_if = "Stacks::is_empty")]
    pub stacks: Stacks,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ModeReport {
    pub fn metric(&self, metric: Metric) -> &MetricReport {
        match metric {
            Metric::Wait => &self.wait,
            Metric::Hold => &self.hold,
        }
    }

    pub fn stacks(&self, metric: Metric) -> &MetricStacks {
        match metric {
            Metric::Wait => &self.stacks.wait,
            Metric::Hold => &self.stacks.hold,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReport {
    pub key: LockKey,
    pub modes: BTreeMap<Mode, ModeReport>,
}

/// The whole result of one run: metadata plus per-lock, per-mode histograms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    #[serde(flatten)]
    pub meta: ReportMeta,
    pub locks: Vec<LockReport>,
    /// Which locks were held while others were taken, and the cycles of that order.
    #[serde(default, skip_serializing_if = "LockOrder::is_empty")]
    pub lock_order: LockOrder,
}

impl Report {
    pub fn to_json(&self) -> String {
        // Serializing plain structs with string keys cannot fail.
        serde_json::to_string_pretty(self).expect("report serializes to JSON")
    }

    /// Writes the report atomically: a crash or a concurrent reader never sees half a file.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let mut json = self.to_json();
        json.push('\n');
        crate::output::write_atomic(path, json.as_bytes()).map_err(|e| ReportError::io(path, e))
    }

    /// Locks whose name or path matches the glob `pattern`.
    pub fn find<'a>(&'a self, pattern: &'a str) -> impl Iterator<Item = &'a LockReport> + 'a {
        self.locks.iter().filter(move |l| l.key.matches(pattern))
    }

    /// Decodes the stored histogram of one lock, mode and metric.
    pub fn histogram(
        &self,
        lock: &LockReport,
        mode: Mode,
        metric: Metric,
    ) -> Result<Histogram<u64>, ReportError> {
        lock.histogram(mode, metric)
    }
}

impl LockReport {
    pub fn histogram(&self, mode: Mode, metric: Metric) -> Result<Histogram<u64>, ReportError> {
        let mode_report = self
            .modes
            .get(&mode)
            .ok_or_else(|| ReportError::NoSuchMode {
                lock: self.key.to_string(),
                mode: mode.to_string(),
            })?;
        histogram::decode(&mode_report.metric(metric).histogram).map_err(|reason| {
            ReportError::Histogram {
                at: format!("{} {mode} {metric}", self.key),
                reason,
            }
        })
    }
}
