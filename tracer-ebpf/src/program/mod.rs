//! Hooks:
//! - lock calls: `syscalls:sys_{enter,exit}_fcntl` (tracepoint mode) or fentry/fexit on `fcntl_setlk`
//!   (fentry mode). Entry parks a half-built event per thread (time, fd, command, process); the
//!   kernel's lock code fills in the file and applies the file filters (below); exit completes it
//!   with the return value and, on success, marks the lock as held.
//! - the kernel's lock code: `filelock:posix_lock_inode` (its BTF form, or the classic one where that
//!   is refused) ends every attempt to take or release a lock. A lock request's first attempt
//!   describes the parked call; an `F_UNLCK` request is a release. The kernel runs one for an explicit
//!   unlock, for `close()` of any fd of a POSIX-locked file (`locks_remove_posix`), for the last close
//!   of an OFD-locked file, and when an exiting process closes its files, so one hook sees every
//!   release at the moment it happens, keyed by the same owner the acquire used.
//! - summary mode (`--summary`) attaches no lock-call hook: `filelock:posix_lock_inode` and
//!   `filelock:fcntl_setlk` (BTF) see every attempt, grant, wait and release.
//! - `sched:sched_process_{fork,exit,exec}`: extend the pid filter to children and forget thread and
//!   process IDs that are gone, so a recycled PID is not traced.
//!
//! Struct and tracepoint field offsets come from userspace (`CONFIG`), read from the running kernel.
//!
//! Modules: `maps` (every map) and this file (configuration, outcomes, counters) at the bottom;
//! `file` (filters, names, paths) and `summary` (summary mode's in-kernel aggregation) on them;
//! `lock` (lock calls) on `file`; `release` (releases, and the classic lock-code hook) on `lock`;
//! `filelock` (the BTF hooks on the kernel's lock code) on `release`, `lock`, `file` and
//! `summary`; `pids` (the pid filter's upkeep) stands alone.

mod file;
mod filelock;
mod lock;
mod maps;
mod pids;
mod release;
mod summary;

use tracer_common::{Config, counter};

use maps::{COUNTERS, EVENTS, SUBMITTED};

// SAFETY: no other symbol in the object is named CONFIG; the loader finds the global by this
// unmangled name to fill it in.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    flags: 0,
    options: 0,
    cgroup_id: 0,
    offsets: tracer_common::Offsets {
        task_flags: 0,
        file_dentry: 0,
        dentry_name: 0,
        dentry_parent: 0,
        inode_ino: 0,
        inode_sb: 0,
        sb_dev: 0,
        pl_request: 0,
        pl_ino: 0,
        pl_dev: 0,
        pl_owner: 0,
        pl_flags: 0,
        pl_type: 0,
        pl_ret: 0,
        flock_file: 0,
        flock_owner: 0,
        flock_flags: 0,
        flock_type: 0,
        fork_child_pid: 0,
        task_signal: 0,
        signal_live: 0,
        exec_old_pid: 0,
    },
};

const BPF_NOEXIST: u64 = 1;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Wake the reader only once this much is queued; it polls on a short timeout anyway. Waking it per
/// event would schedule locktrace onto the CPU of the very process whose hold is being timed.
const WAKEUP_BYTES: u64 = 2 << 20;
const WAKEUP_CHECK: u64 = 32;
/// What every program returns, traced call or not: fentry/fexit programs must return 0 (the
/// verifier enforces it), a tracepoint program's 0 means "do not also pass this event to perf"
/// (nobody reads that buffer), and a BTF tracepoint's return value is ignored.
const DONE: u32 = 0;

/// Why a program stopped early.
#[derive(Clone, Copy)]
enum Miss {
    /// Nothing (more) to do: not a call, process or file we trace, or already done. Not counted.
    Ignored,
    /// Reading kernel memory failed: the event is lost and counted.
    ReadFailed,
    /// A map was full.
    MapFull,
    /// The ring buffer was full.
    RingbufFull,
}

impl Miss {
    /// Counts the miss where userspace reads the drop counters; returns the program's result.
    fn counted(self) -> u32 {
        match self {
            Miss::Ignored => {}
            Miss::ReadFailed => bump(counter::READ_FAILED),
            Miss::MapFull => bump(counter::MAP_FULL),
            Miss::RingbufFull => bump(counter::RINGBUF_FULL),
        }
        DONE
    }
}

type Outcome = Result<(), Miss>;

/// Goes on only when `cond` holds: the `?` form of "not ours, stop here".
fn require(cond: bool) -> Outcome {
    if cond { Ok(()) } else { Err(Miss::Ignored) }
}

/// Wakes the reader only once [`WAKEUP_BYTES`] are queued. The backlog is a helper call, so each
/// CPU asks for it on every [`WAKEUP_CHECK`]th event only: the reader sees at most that many
/// events' worth more before it is woken, and its poll timeout comes first anyway.
fn submit_flags() -> u64 {
    let Some(sent) = SUBMITTED.get_ptr_mut(0) else {
        return BPF_RB_NO_WAKEUP;
    };
    // SAFETY: the lookup succeeded, so this is this CPU's slot; programs do not nest on a CPU.
    let sent = unsafe {
        *sent += 1;
        *sent
    };
    if sent % WAKEUP_CHECK == 0 && EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// The loader's configuration, read in place. By reference, because a copy of its ~250 bytes in
/// each program's frame pushed the combined stack of a program and its calls over the verifier's
/// 512 bytes on kernels without private BPF stacks (before 6.13).
fn config() -> &'static Config {
    let at: *const Config = &raw const CONFIG;
    // SAFETY: CONFIG is a valid, aligned static the loader fills in (.rodata) before the program is
    // loaded and nothing writes afterwards. The pointer is read back volatile so the compiler cannot
    // see that it points at a zero initialiser and fold the fields into the code.
    unsafe { &*core::ptr::read_volatile(&at) }
}

fn bump(which: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(which) {
        // SAFETY: the lookup succeeded, so the pointer is this CPU's slot; programs run with
        // migration disabled and do not nest on one CPU, so nothing else touches it meanwhile.
        unsafe { *slot += 1 };
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: nothing in these programs panics (no unwrap or expect, arrays indexed only by loop
    // counters below their length, no overflow checks in the release build), so this is never
    // called; telling LLVM so drops the dead panic branches the verifier would otherwise walk.
    unsafe { core::hint::unreachable_unchecked() }
}

// SAFETY: the kernel reads the program licence from the section named "license"; nothing else
// is placed there and the string is NUL-terminated as it expects.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
