//! Every completed wait and hold as an interval, for consumers that need each one rather than the
//! histograms (the timeline): off unless asked for ([`super::Ledger::with_intervals`]), and then
//! collected until taken ([`super::Ledger::take_intervals`]), so a caller that takes them after
//! every record keeps none in memory.
//!
//! The intervals are exactly the samples the recorder gets: same start, same end (a hold's length
//! is `end_ns - start_ns`, saturating, as recorded), one per sample.

use locktrace_report::{LockKey, Metric, Mode};

use crate::holders::FileId;

/// One wait or hold that ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    pub metric: Metric,
    /// The lock file by kernel (dev, ino).
    pub file: FileId,
    pub lock: LockKey,
    pub mode: Mode,
    /// The kernel's lock owner: a hold is `(file, owner, start_ns)`.
    pub owner: u64,
    pub pid: u32,
    /// The thread whose lock call took or waited for it.
    pub tid: u32,
    pub comm: String,
    pub start_ns: u64,
    /// Never before `start_ns` (clamped, as the recorded length is).
    pub end_ns: u64,
    /// Waits: the lock was granted at `end_ns`, where the hold it starts begins.
    pub acquired: bool,
    /// Waits: the traced holds that blocked it (see [`crate::holders`]).
    pub blocked_by: Vec<BlockingHold>,
}

/// A hold that blocked a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockingHold {
    pub owner: u64,
    pub pid: u32,
    /// When it was taken: with the file and owner, the hold's identity.
    pub since_ns: u64,
    /// When it was released, if it was by the time the wait ended.
    pub until_ns: Option<u64>,
}
