//! The ABI between locktrace's eBPF programs and its userspace loader.
//!
//! Everything here is `#[repr(C)]`, uses fixed-width integers (no `bool`) and has no padding, so the
//! kernel side and userspace agree on the layout byte for byte.
#![no_std]

/// Bytes of a lock file's basename carried in an event (NUL padded, truncated beyond this).
pub const NAME_LEN: usize = 64;
/// Bytes of a task's comm.
pub const COMM_LEN: usize = 16;
/// Path components a [`PathRecord`] carries (leaf first), and the bytes of each.
pub const PATH_DEPTH: usize = 12;
pub const COMPONENT_LEN: usize = 32;

/// fcntl commands (x86_64 / generic Linux values).
pub const F_SETLK: u32 = 6;
pub const F_SETLKW: u32 = 7;
pub const F_OFD_SETLK: u32 = 37;
pub const F_OFD_SETLKW: u32 = 38;

/// `struct flock.l_type` values.
pub const F_RDLCK: u32 = 0;
pub const F_WRLCK: u32 = 1;
pub const F_UNLCK: u32 = 2;

/// `struct file_lock` flag of the unlock request `close()` (and exit) makes.
pub const FL_CLOSE: u32 = 64;
/// `struct file_lock` flag of a request that may wait (`F_SETLKW`, `F_OFD_SETLKW`).
pub const FL_SLEEP: u32 = 128;
/// What `posix_lock_inode` returns when a request that may wait has to: it is queued behind the
/// holder and tried again when woken.
pub const FILE_LOCK_DEFERRED: i32 = 1;

/// Whether a lock call's return value `ret` means a signal interrupted it. The hooks run before the
/// syscall returns, so they see the kernel's restart codes, which the way out turns into EINTR (or
/// a restart of the call, a new try).
pub fn interrupted(ret: i32) -> bool {
    const EINTR: i32 = 4;
    const ERESTARTSYS: i32 = 512;
    const ERESTARTNOINTR: i32 = 513;
    const ERESTARTNOHAND: i32 = 514;
    matches!(-ret, EINTR | ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND)
}

/// What an [`Event`] reports.
pub mod kind {
    /// A lock request returned (`F_SETLK[W]`, `F_OFD_SETLK[W]`; an `F_UNLCK` request is seen as the
    /// release it makes).
    pub const LOCK: u32 = 1;
    /// A held lock was released by an explicit `F_UNLCK`.
    pub const RELEASE_UNLOCK: u32 = 2;
    /// A held lock was released by `close()` (POSIX: any fd of the file; OFD: the last one).
    pub const RELEASE_CLOSE: u32 = 3;
    /// A held lock was released because its process exited.
    pub const RELEASE_EXIT: u32 = 4;
}

/// Bits of [`Event::flags`].
pub mod event_flag {
    /// The basename could not be read; the event is still counted.
    pub const NAME_MISSING: u32 = 1 << 0;
}

/// Bits of [`Config::options`]: what to capture beyond the event itself.
pub mod option {
    /// Capture the user stack of each lock call into the `STACKS` map (`--stacks`).
    pub const USER_STACKS: u32 = 1 << 0;
    /// Aggregate waits and holds in kernel maps (`--summary`); only [`super::PathRecord`]s cross
    /// the ring buffer.
    pub const SUMMARY: u32 = 1 << 1;
}

/// [`Event::stack_id`] when no stack was asked for (or the event is a release).
pub const NO_STACK: i32 = -1;

/// Frames a captured stack holds at most (the kernel's `PERF_MAX_STACK_DEPTH`).
pub const STACK_DEPTH: usize = 127;

/// Bits of [`Config::flags`].
pub mod filter {
    /// Trace every lock file, ignore the name and inode tables.
    pub const ALL_LOCKS: u32 = 1 << 0;
    /// Match the basename against the `NAMES` map.
    pub const BY_NAME: u32 = 1 << 1;
    /// Match `(dev, ino)` against the `INODES` map.
    pub const BY_INODE: u32 = 1 << 2;
    /// Only processes in the `PIDS` map (and their descendants, added at fork).
    pub const BY_PID: u32 = 1 << 3;
    /// Only tasks in the cgroup [`super::Config::cgroup_id`].
    pub const BY_CGROUP: u32 = 1 << 4;
}

/// One ring-buffer record. 160 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the call started (lock) or happened (close, exit).
    pub start_ns: u64,
    /// When the lock call returned; equal to `start_ns` for close and exit.
    pub end_ns: u64,
    /// Kernel-internal `s_dev` of the file's superblock (major << 20 | minor).
    pub dev: u64,
    pub ino: u64,
    /// The lock owner as the kernel sees it: the `files_struct *` for POSIX locks, the `struct file *`
    /// for OFD locks. Acquire and release are matched on `(dev, ino, owner)`.
    pub owner: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Syscall return value (0 or -errno) for lock events.
    pub ret: i32,
    /// One of [`kind`].
    pub kind: u32,
    /// fcntl command for lock events.
    pub cmd: u32,
    /// `l_type` for lock events.
    pub lock_type: u32,
    /// Bits of [`event_flag`].
    pub flags: u32,
    /// The lock call's user stack in the `STACKS` map: an ID (>= 0), [`NO_STACK`], or the
    /// negative errno of a capture that failed (counted as [`counter::STACK_LOST`]).
    pub stack_id: i32,
    pub _reserved: u32,
    pub comm: [u8; COMM_LEN],
    pub name: [u8; NAME_LEN],
}

/// Sent once per traced inode, before its first lock event: the file's path inside its filesystem,
/// walked up `d_parent` in the kernel, so the path is known even when the process closes the fd before
/// userspace could look at `/proc`. Told apart from [`Event`] by its size.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathRecord {
    pub dev: u64,
    pub ino: u64,
    /// Components filled, leaf first; the filesystem root ("/") is not included.
    pub depth: u32,
    /// Non-zero when the walk stopped before the filesystem root or a component was truncated.
    pub incomplete: u32,
    pub components: [[u8; COMPONENT_LEN]; PATH_DEPTH],
    /// The basename as a lock event carries it (whole up to [`NAME_LEN`], unlike a component);
    /// summary mode has no lock events to name the file.
    pub name: [u8; NAME_LEN],
    /// Bits of [`event_flag`] (the name's).
    pub flags: u32,
    pub _reserved: u32,
}

/// Counters the programs keep in a per-CPU array; userspace sums them and always reports them.
pub mod counter {
    /// `bpf_ringbuf_reserve` failed: an event was lost.
    pub const RINGBUF_FULL: u32 = 0;
    /// A map insert failed (pending calls, held locks, traced pids): an event may be missing.
    pub const MAP_FULL: u32 = 1;
    /// Reading the task's fd table or the file's name failed for a traced call.
    pub const READ_FAILED: u32 = 2;
    /// A user stack asked for could not be stored (stack map bucket taken by another stack, no
    /// user memory): the event is kept without its stack.
    pub const STACK_LOST: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Kernel struct offsets read from the running kernel's BTF at load time, and tracepoint field offsets
/// read from tracefs `format` files. Nothing is baked in from the build kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub task_flags: u64,
    /// `file.f_path.dentry`.
    pub file_dentry: u64,
    /// `dentry.d_name.name`.
    pub dentry_name: u64,
    pub dentry_parent: u64,
    pub inode_ino: u64,
    pub inode_sb: u64,
    pub sb_dev: u64,
    /// `filelock:posix_lock_inode` fields (`pl_request`: the `struct file_lock *`).
    pub pl_request: u64,
    pub pl_ino: u64,
    pub pl_dev: u64,
    pub pl_owner: u64,
    pub pl_flags: u64,
    pub pl_type: u64,
    pub pl_ret: u64,
    /// `struct file_lock` members (inside `struct file_lock_core` since 6.9): the file, the owner,
    /// the `FL_*` flags and the lock type.
    pub flock_file: u64,
    pub flock_owner: u64,
    pub flock_flags: u64,
    pub flock_type: u64,
    /// `sched:sched_process_fork` `child_pid`.
    pub fork_child_pid: u64,
    /// `task_struct.signal`.
    pub task_signal: u64,
    /// `signal_struct.live`: threads of the group not yet exiting.
    pub signal_live: u64,
    /// `sched:sched_process_exec` `old_pid`.
    pub exec_old_pid: u64,
}

/// Tracing configuration, written once into the program's `.rodata` before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Bits of [`filter`].
    pub flags: u32,
    /// Bits of [`option`].
    pub options: u32,
    pub cgroup_id: u64,
    pub offsets: Offsets,
}

/// Value of the `HELD` map: when and how the lock was taken (summary mode times holds with it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldInfo {
    pub since_ns: u64,
    /// `F_RDLCK` or `F_WRLCK`.
    pub lock_type: u32,
    pub _reserved: u32,
}

/// Summary mode: what is aggregated, per lock file and mode, in per-CPU maps. Userspace sums the
/// CPUs' counts and totals and takes the largest maximum and smallest minimum.
pub mod summary {
    /// [`MetricKey::metric`] values.
    pub const WAIT: u32 = 0;
    pub const HOLD: u32 = 1;

    /// Log-linear buckets: values below `2^SUB_BITS` ns each have their own bucket; above, each
    /// power of two is split into `2^SUB_BITS` equal buckets, so a bucket is at most 1/64 (1.6 %)
    /// of its values wide, and its samples' mean (kept per bucket) is closer still. Every `u64`
    /// has a bucket: there is no overflow.
    pub const SUB_BITS: u32 = 6;
    pub const SUB_BUCKETS: u64 = 1 << SUB_BITS;
    /// Buckets there are: `bucket_of(u64::MAX) + 1`.
    pub const BUCKETS: u32 = (64 - SUB_BITS + 1) * SUB_BUCKETS as u32;

    /// The bucket of a duration in nanoseconds. A binary search for the top bit, not
    /// `leading_zeros`, which the BPF target has no instruction for.
    #[inline(always)]
    pub fn bucket_of(ns: u64) -> u32 {
        if ns < SUB_BUCKETS {
            return ns as u32;
        }
        let mut top = 0u32;
        let mut v = ns;
        for shift in [32u32, 16, 8, 4, 2, 1] {
            if v >> shift != 0 {
                v >>= shift;
                top += shift;
            }
        }
        let sub = ((ns >> (top - SUB_BITS)) & (SUB_BUCKETS - 1)) as u32;
        (top - SUB_BITS + 1) * SUB_BUCKETS as u32 + sub
    }

    /// The lowest and highest duration of a bucket.
    pub fn bucket_bounds(bucket: u32) -> (u64, u64) {
        let sub = u64::from(bucket) % SUB_BUCKETS;
        let octave = bucket / SUB_BUCKETS as u32;
        if octave == 0 {
            return (sub, sub);
        }
        let shift = octave - 1;
        let low = (SUB_BUCKETS + sub) << shift;
        (low, low + ((1u64 << shift) - 1))
    }

    /// A lock file in one mode.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct LockKey {
        pub dev: u64,
        pub ino: u64,
        /// `F_RDLCK` or `F_WRLCK`.
        pub lock_type: u32,
        pub _reserved: u32,
    }

    /// Count, exact total and extremes of one metric.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Totals {
        pub count: u64,
        pub total_ns: u64,
        /// Meaningful only when `count` is not 0.
        pub min_ns: u64,
        pub max_ns: u64,
    }

    /// Everything kept per lock file and mode.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct LockTotals {
        pub wait: Totals,
        pub hold: Totals,
        pub acquired: u64,
        pub refused: u64,
        pub errors: u64,
        pub interrupted: u64,
        pub edeadlk: u64,
    }

    /// One metric of a lock file in one mode, and a bucket or a process of it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct MetricKey {
        pub lock: LockKey,
        /// [`WAIT`] or [`HOLD`].
        pub metric: u32,
        /// The bucket (`BUCKETS` map) or the process (`ACTORS` map).
        pub which: u32,
    }

    /// The samples of one bucket: how many and their exact sum.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct BucketTotals {
        pub count: u64,
        pub total_ns: u64,
    }

    /// One process's share of a metric (for the top waiters and holders).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ActorTotals {
        pub count: u64,
        pub total_ns: u64,
        pub comm: [u8; super::COMM_LEN],
    }
}

/// Key of the `HELD` map: an owner holding a lock on an inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldKey {
    pub dev: u64,
    pub ino: u64,
    pub owner: u64,
}

/// Key of the `INODES` filter map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeKey {
    pub dev: u64,
    pub ino: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (each impl): the type is repr(C), made only of integers and byte arrays (any bit
    // pattern is valid), with no padding (the size assertions below add up its fields).
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::PathRecord {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::HeldKey {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::HeldInfo {}
    unsafe impl aya::Pod for super::summary::LockKey {}
    unsafe impl aya::Pod for super::summary::LockTotals {}
    unsafe impl aya::Pod for super::summary::MetricKey {}
    unsafe impl aya::Pod for super::summary::BucketTotals {}
    unsafe impl aya::Pod for super::summary::ActorTotals {}
}

const _: () = assert!(core::mem::size_of::<Event>() == 8 * 5 + 4 * 10 + COMM_LEN + NAME_LEN);
const _: () = assert!(core::mem::size_of::<Config>() == 16 + 22 * 8);
const _: () = assert!(core::mem::size_of::<PathRecord>() != core::mem::size_of::<Event>());
const _: () = assert!(
    core::mem::size_of::<PathRecord>() == 8 * 2 + 4 * 4 + COMPONENT_LEN * PATH_DEPTH + NAME_LEN
);
const _: () = assert!(core::mem::size_of::<HeldInfo>() == 16);
const _: () = assert!(core::mem::size_of::<summary::LockKey>() == 24);
const _: () = assert!(core::mem::size_of::<summary::LockTotals>() == 2 * 32 + 5 * 8);
const _: () = assert!(core::mem::size_of::<summary::MetricKey>() == 32);
const _: () = assert!(core::mem::size_of::<summary::BucketTotals>() == 16);
const _: () = assert!(core::mem::size_of::<summary::ActorTotals>() == 16 + COMM_LEN);
const _: () = assert!(core::mem::size_of::<HeldKey>() == 8 * 3);
const _: () = assert!(core::mem::size_of::<InodeKey>() == 8 * 2);

#[cfg(test)]
mod tests {
    use super::summary::{BUCKETS, SUB_BUCKETS, bucket_bounds, bucket_of};

    #[test]
    fn every_value_falls_in_its_buckets_bounds() {
        let mut values: [u64; 12] = [
            0,
            1,
            63,
            64,
            65,
            127,
            128,
            1000,
            999_999,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ];
        values.sort();
        for v in values {
            let (lo, hi) = bucket_bounds(bucket_of(v));
            assert!(lo <= v && v <= hi, "{v} outside {lo}..={hi}");
        }
        assert_eq!(bucket_of(u64::MAX) + 1, BUCKETS);
    }

    #[test]
    fn buckets_tile_the_line_and_are_at_most_a_64th_of_their_values() {
        let mut next = 0u64;
        for b in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(b);
            assert_eq!(
                lo,
                next,
                "bucket {b} starts where {} ended",
                b.wrapping_sub(1)
            );
            assert_eq!(bucket_of(lo), b);
            assert_eq!(bucket_of(hi), b);
            assert!((hi - lo) as u128 * SUB_BUCKETS as u128 <= lo as u128 || lo < SUB_BUCKETS);
            next = hi.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
    }
}
