//! Every map the programs share, with its size and what it holds.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use tracer_common::{
    Event, HeldInfo, HeldKey, InodeKey, NAME_LEN, PathRecord, counter,
    summary::{ActorTotals, BucketTotals, LockKey, LockTotals, MetricKey},
};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Lock calls in flight, by `pid_tgid`. Sized by the loader (one entry in summary mode).
#[map]
pub static PENDING: HashMap<u64, Event> = HashMap::with_max_entries(1, 0);

/// Summary mode: the lock request each thread is waiting for, by `pid_tgid`, from its first
/// deferral. Sized by the loader (one entry in event mode).
#[map]
pub static WAITING: HashMap<u64, Waiting> = HashMap::with_max_entries(1, 0);

/// A value of [`WAITING`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Waiting {
    pub since_ns: u64,
    /// The `struct file_lock *` of the request (the same one through all its attempts).
    pub request: u64,
}

/// Locks currently held by a traced owner; releases of anything else are ignored.
#[map]
pub static HELD: HashMap<HeldKey, HeldInfo> = HashMap::with_max_entries(65536, 0);

// Summary mode's aggregates, sized by the loader: one entry each unless `--summary`. Preallocated:
// an entry allocated on first use (a per-CPU allocation) took over a millisecond on an emulated
// 6.1 guest, inside the very hold being timed.

/// Totals per lock file and mode.
#[map]
pub static SUMMARY_LOCKS: PerCpuHashMap<LockKey, LockTotals> =
    PerCpuHashMap::with_max_entries(1, 0);

/// Histogram buckets (count and sum) per lock file, mode and metric.
#[map]
pub static SUMMARY_BUCKETS: PerCpuHashMap<MetricKey, BucketTotals> =
    PerCpuHashMap::with_max_entries(1, 0);

/// Per-process shares per lock file, mode and metric.
#[map]
pub static SUMMARY_ACTORS: PerCpuHashMap<MetricKey, ActorTotals> =
    PerCpuHashMap::with_max_entries(1, 0);

#[map]
pub static NAMES: HashMap<[u8; NAME_LEN], u8> = HashMap::with_max_entries(256, 0);

#[map]
pub static INODES: HashMap<InodeKey, u8> = HashMap::with_max_entries(256, 0);

/// Traced processes (tgid) when filtering by pid or process tree.
#[map]
pub static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// User stacks of lock calls (`--stacks`), deduplicated by the kernel. Sized by the loader: one
/// entry unless stacks are asked for. Without `BPF_F_REUSE_STACKID` a stack never replaces another
/// under its ID, so an ID userspace reads later still names the stack the event was taken with.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(1, 0);

/// Inodes whose path was already sent.
#[map]
pub static SEEN: LruHashMap<InodeKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// Records each CPU has sent, to space out the ring buffer's backlog checks.
#[map]
pub static SUBMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static PATH_SCRATCH: PerCpuArray<PathRecord> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space: an `Event` is too big to build on the 512-byte BPF stack next to everything else.
#[map]
pub static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);
