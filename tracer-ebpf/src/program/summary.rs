//! Summary mode (`record --summary`): each wait and hold is added to per-CPU maps (totals, a
//! log-linear histogram with per-bucket sums, per-process shares) instead of being sent as an
//! event. Only a new file's path crosses the ring buffer. What a lock attempt means is decided in
//! `filelock`, which calls in here.
//!
//! Updates are plain read-modify-writes of this CPU's slot, as the drop counters are: the programs
//! run from tracepoints, with preemption off, and do not nest on one CPU (and the BPF target has no
//! 64-bit atomic add for per-CPU memory anyway).

use aya_ebpf::{helpers::bpf_get_current_comm, maps::PerCpuHashMap};
use tracer_common::{
    COMM_LEN, HeldInfo, interrupted,
    summary::{
        ActorTotals, BucketTotals, HOLD, LockKey, LockTotals, MetricKey, Totals, WAIT, bucket_of,
    },
};

use super::{
    BPF_NOEXIST, Miss, Outcome,
    maps::{SUMMARY_ACTORS, SUMMARY_BUCKETS, SUMMARY_LOCKS},
};

const EAGAIN: i32 = 11;
const EACCES: i32 = 13;
const EDEADLK: i32 = 35;

const NO_TOTALS: Totals = Totals {
    count: 0,
    total_ns: 0,
    min_ns: 0,
    max_ns: 0,
};
static EMPTY_LOCK: LockTotals = LockTotals {
    wait: NO_TOTALS,
    hold: NO_TOTALS,
    acquired: 0,
    refused: 0,
    errors: 0,
    interrupted: 0,
    edeadlk: 0,
};
static EMPTY_BUCKET: BucketTotals = BucketTotals {
    count: 0,
    total_ns: 0,
};

/// A lock request on `key` by process `tgid` ended with `ret`; a request that may wait (`blocking`)
/// waited `waited` ns. (Not an `Option`: LLVM leaves a `None`'s payload register unset, and the
/// verifier refuses the callee's copy of it.) Returns whether these are the first totals of this
/// lock file and mode. Inlined: as a BPF call, its result would need a sixth argument register.
#[inline(always)]
pub(super) fn lock_result(
    key: &LockKey,
    blocking: bool,
    waited: u64,
    ret: i32,
    tgid: u32,
) -> Result<bool, Miss> {
    let (totals, new) = slot(&SUMMARY_LOCKS, key, &EMPTY_LOCK)?;
    // SAFETY: `slot` returned this CPU's value of a live entry; entries are never deleted while
    // tracing, and programs on one CPU do not interleave.
    unsafe {
        let tries = match -ret {
            0 => &raw mut (*totals).acquired,
            EAGAIN | EACCES if !blocking => &raw mut (*totals).refused,
            _ if interrupted(ret) => &raw mut (*totals).interrupted,
            errno => {
                if errno == EDEADLK {
                    add(&raw mut (*totals).edeadlk, 1);
                }
                &raw mut (*totals).errors
            }
        };
        add(tries, 1);
        if blocking {
            sample(&raw mut (*totals).wait, waited);
            // A full map costs the share, not the news that the lock is new (its path).
            if let Err(miss) = shares(key, WAIT, tgid, waited) {
                miss.counted();
            }
        }
    }
    Ok(new)
}

/// A hold of `key` by process `tgid`, taken as `info` says, ended at `now`.
pub(super) fn hold(dev: u64, ino: u64, info: &HeldInfo, tgid: u32, now: u64) -> Outcome {
    let key = LockKey {
        dev,
        ino,
        lock_type: info.lock_type,
        _reserved: 0,
    };
    let (totals, _) = slot(&SUMMARY_LOCKS, &key, &EMPTY_LOCK)?;
    let held = now.saturating_sub(info.since_ns);
    // SAFETY: as in `lock_result`.
    unsafe { sample(&raw mut (*totals).hold, held) };
    shares(&key, HOLD, tgid, held)
}

/// The bucket and the process share of one sample. A sample is taken in its own process (the
/// waiter's call, the holder's release), so a new share is named after the current task.
fn shares(key: &LockKey, metric: u32, tgid: u32, ns: u64) -> Outcome {
    let bucket = MetricKey {
        lock: *key,
        metric,
        which: bucket_of(ns),
    };
    let (b, _) = slot(&SUMMARY_BUCKETS, &bucket, &EMPTY_BUCKET)?;
    // SAFETY: as in `lock_result`.
    unsafe {
        add(&raw mut (*b).count, 1);
        add(&raw mut (*b).total_ns, ns);
    }
    let actor = MetricKey {
        lock: *key,
        metric,
        which: tgid,
    };
    let a = match SUMMARY_ACTORS.get_ptr_mut(&actor) {
        Some(a) => a,
        None => {
            let first = ActorTotals {
                count: 0,
                total_ns: 0,
                comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
            };
            // Another program on this CPU may have inserted it meanwhile: then it is there.
            let _ = SUMMARY_ACTORS.insert(&actor, &first, BPF_NOEXIST);
            SUMMARY_ACTORS.get_ptr_mut(&actor).ok_or(Miss::MapFull)?
        }
    };
    // SAFETY: as in `lock_result`.
    unsafe {
        add(&raw mut (*a).count, 1);
        add(&raw mut (*a).total_ns, ns);
    }
    Ok(())
}

/// This CPU's value for `key`, inserted as `empty` if missing (then also `true`: a per-CPU map's
/// keys are shared, so that happens once per key, on whichever CPU comes first); a full map is a
/// counted miss.
fn slot<K, V>(map: &PerCpuHashMap<K, V>, key: &K, empty: &V) -> Result<(*mut V, bool), Miss> {
    if let Some(v) = map.get_ptr_mut(key) {
        return Ok((v, false));
    }
    let new = map.insert(key, empty, BPF_NOEXIST).is_ok();
    let v = map.get_ptr_mut(key).ok_or(Miss::MapFull)?;
    Ok((v, new))
}

/// Adds one sample to a metric's totals.
///
/// # Safety
/// `t` points at this CPU's value of a live map entry.
unsafe fn sample(t: *mut Totals, ns: u64) {
    // SAFETY: the caller's promise; the reads race only with the same CPU's programs.
    unsafe {
        let first = (*t).count == 0;
        add(&raw mut (*t).count, 1);
        add(&raw mut (*t).total_ns, ns);
        if first || ns < (*t).min_ns {
            (*t).min_ns = ns;
        }
        if ns > (*t).max_ns {
            (*t).max_ns = ns;
        }
    }
}

/// # Safety
/// `at` points at an aligned u64 in this CPU's value of a live map entry.
unsafe fn add(at: *mut u64, n: u64) {
    // SAFETY: the caller's promise; map values are 8-byte aligned and outlive the program run.
    unsafe { *at = (*at).wrapping_add(n) };
}
