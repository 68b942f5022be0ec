//! Raw per-event samples of one repetition, kept for the time-based plots.

use locktrace_report::Metric;

use crate::model::mode::BenchMode;
use crate::protocol::ReaderOp;

/// A lock hold or wait seen by a worker, for the timeline plot.
#[derive(Debug, Clone)]
pub struct LockSpan {
    pub worker: String,
    pub pid: u32,
    pub lock: String,
    pub write: bool,
    pub metric: Metric,
    /// Relative to the go signal.
    pub start_ns: i64,
    pub duration_ns: u64,
}

/// A reader operation, for the latency-over-time plot.
#[derive(Debug, Clone)]
pub struct OpSample {
    pub op: ReaderOp,
    pub failed: bool,
    pub start_ns: i64,
    pub duration_ns: u64,
}

/// Per-mode raw samples for the time-based plots (first repetition).
pub struct ModeSamples {
    pub mode: BenchMode,
    pub spans: Vec<LockSpan>,
    pub ops: Vec<OpSample>,
}
