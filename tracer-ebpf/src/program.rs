//! Hooks:
//! - lock calls: `syscalls:sys_{enter,exit}_fcntl` (tracepoint mode) or fentry/fexit on `fcntl_setlk`
//!   (fentry mode). Entry resolves the file from the fd, applies the filters and parks a half-built event
//!   per thread; exit completes it with the return value and, on success, marks the lock as held.
//! - releases: `filelock:posix_lock_inode` with `F_UNLCK`. The kernel runs it for an explicit unlock, for
//!   `close()` of any fd of a POSIX-locked file (`locks_remove_posix`), for the last close of an
//!   OFD-locked file, and when an exiting process closes its files, so one hook sees every release at the
//!   moment it happens, keyed by the same owner the acquire used.
//! - `sched:sched_process_{fork,exit,exec}`: extend the pid filter to children and forget thread and
//!   process IDs that are gone, so a recycled PID is not traced.
//!
//! Struct and tracepoint field offsets come from userspace (`CONFIG`), read from the running kernel.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{btf_tracepoint, fentry, fexit, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, TracePointContext,
        tracing::StackIdContext,
    },
};
use aya_log_ebpf::debug;
use tracer_common::{
    COMPONENT_LEN, Config, Event, F_OFD_SETLK, F_OFD_SETLKW, F_SETLK, F_SETLKW, F_UNLCK, HeldKey,
    InodeKey, NAME_LEN, NO_STACK, PATH_DEPTH, PathRecord, counter, event_flag, filter, kind,
    option,
};

use crate::kernel::{
    current_cgroup_id, current_task, now_ns, read_at, read_kernel, read_kernel_str, read_user,
    tp_field,
};

// SAFETY: no other symbol in the object is named CONFIG; the loader finds the global by this
// unmangled name to fill it in.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    flags: 0,
    options: 0,
    cgroup_id: 0,
    offsets: tracer_common::Offsets {
        task_files: 0,
        task_flags: 0,
        files_fdt: 0,
        fdtable_max_fds: 0,
        fdtable_fd: 0,
        file_dentry: 0,
        file_inode: 0,
        dentry_name: 0,
        dentry_parent: 0,
        inode_ino: 0,
        inode_sb: 0,
        sb_dev: 0,
        pl_ino: 0,
        pl_dev: 0,
        pl_owner: 0,
        pl_type: 0,
        pl_ret: 0,
        fork_child_pid: 0,
        task_signal: 0,
        signal_live: 0,
        exec_old_pid: 0,
    },
};

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Lock calls in flight, by `pid_tgid`.
#[map]
static PENDING: HashMap<u64, Event> = HashMap::with_max_entries(16384, 0);

/// Locks currently held by a traced owner; releases of anything else are ignored.
#[map]
static HELD: HashMap<HeldKey, u8> = HashMap::with_max_entries(65536, 0);

#[map]
static NAMES: HashMap<[u8; NAME_LEN], u8> = HashMap::with_max_entries(256, 0);

#[map]
static INODES: HashMap<InodeKey, u8> = HashMap::with_max_entries(256, 0);

/// Traced processes (tgid) when filtering by pid or process tree.
#[map]
static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// User stacks of lock calls (`--stacks`), deduplicated by the kernel. Sized by the loader: one
/// entry unless stacks are asked for. Without `BPF_F_REUSE_STACKID` a stack never replaces another
/// under its ID, so an ID userspace reads later still names the stack the event was taken with.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(1, 0);

/// Inodes whose path was already sent.
#[map]
static SEEN: LruHashMap<InodeKey, u8> = LruHashMap::with_max_entries(16384, 0);

#[map]
static PATH_SCRATCH: PerCpuArray<PathRecord> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space: an `Event` is too big to build on the 512-byte BPF stack next to everything else.
#[map]
static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

const PF_EXITING: u32 = 0x4;
const BPF_F_USER_STACK: u64 = 1 << 8;
const BPF_NOEXIST: u64 = 1;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Wake the reader only once this much is queued; it polls on a short timeout anyway. Waking it per
/// event would schedule locktrace onto the CPU of the very process whose hold is being timed.
const WAKEUP_BYTES: u64 = 2 << 20;
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

fn submit_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
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

fn is_lock_cmd(cmd: u32) -> bool {
    matches!(cmd, F_SETLK | F_SETLKW | F_OFD_SETLK | F_OFD_SETLKW)
}

fn is_ofd(cmd: u32) -> bool {
    matches!(cmd, F_OFD_SETLK | F_OFD_SETLKW)
}

/// Process filters that need no file: pid tree and cgroup.
fn process_wanted(cfg: &Config, tgid: u32) -> bool {
    if cfg.flags & filter::BY_PID != 0 && PIDS.get_ptr(&tgid).is_none() {
        return false;
    }
    if cfg.flags & filter::BY_CGROUP != 0 && current_cgroup_id() != cfg.cgroup_id {
        return false;
    }
    true
}

/// `current->files->fdt->fd[fd]`, bounds-checked against `max_fds`.
fn file_from_fd(cfg: &Config, fd: u32) -> Option<u64> {
    let o = &cfg.offsets;
    let files: u64 = read_at(current_task(), o.task_files)?;
    let fdt: u64 = read_at(files, o.files_fdt)?;
    let max_fds: u32 = read_at(fdt, o.fdtable_max_fds)?;
    if fd >= max_fds {
        return None;
    }
    let fds: u64 = read_at(fdt, o.fdtable_fd)?;
    let file: u64 = read_at(fds, (fd as u64) * 8)?;
    if file == 0 { None } else { Some(file) }
}

fn current_files(cfg: &Config) -> Option<u64> {
    read_at(current_task(), cfg.offsets.task_files)
}

/// Fills identity (dev, ino, name) from a `struct file *` and applies the file filters.
fn describe_file(cfg: &Config, file: u64, ev: &mut Event) -> Outcome {
    let o = &cfg.offsets;
    let inode = read_at::<u64>(file, o.file_inode).ok_or(Miss::ReadFailed)?;
    ev.ino = read_at::<u64>(inode, o.inode_ino).unwrap_or(0);
    ev.dev = read_at::<u64>(inode, o.inode_sb)
        .and_then(|sb| read_at::<u32>(sb, o.sb_dev))
        .unwrap_or(0) as u64;
    ev.name = [0; NAME_LEN];
    let named = read_at::<u64>(file, o.file_dentry)
        .and_then(|dentry| read_at::<u64>(dentry, o.dentry_name))
        .and_then(|p| read_kernel_str(p, &mut ev.name))
        .is_some();
    if !named {
        ev.flags |= event_flag::NAME_MISSING;
    }
    if cfg.flags & filter::ALL_LOCKS != 0 {
        return Ok(());
    }
    if cfg.flags & filter::BY_NAME != 0 && named && NAMES.get_ptr(&ev.name).is_some() {
        return Ok(());
    }
    let key = InodeKey {
        dev: ev.dev,
        ino: ev.ino,
    };
    require(cfg.flags & filter::BY_INODE != 0 && INODES.get_ptr(&key).is_some())
}

/// Sends the path of a traced inode the first time it is seen.
fn send_path_once(cfg: &Config, file: u64, dev: u64, ino: u64) -> Outcome {
    let key = InodeKey { dev, ino };
    // One insert both checks and claims: two CPUs cannot both send the path.
    SEEN.insert(&key, &1, BPF_NOEXIST)
        .map_err(|_| Miss::Ignored)?;
    let rec = PATH_SCRATCH.get_ptr_mut(0).ok_or(Miss::Ignored)?;
    // SAFETY: the lookup succeeded, so this is this CPU's scratch slot; programs do not nest on a
    // CPU, so this is the only reference to it while the program runs.
    let rec = unsafe { &mut *rec };
    let o = &cfg.offsets;
    rec.dev = dev;
    rec.ino = ino;
    rec.depth = 0;
    rec.incomplete = 1;
    let mut dentry = read_at::<u64>(file, o.file_dentry).ok_or(Miss::Ignored)?;
    for i in 0..PATH_DEPTH {
        let Some(parent) = read_at::<u64>(dentry, o.dentry_parent) else {
            break;
        };
        if parent == dentry {
            // The filesystem root: its "/" is implied.
            rec.incomplete = 0;
            break;
        }
        let slot = &mut rec.components[i];
        *slot = [0; COMPONENT_LEN];
        let read = read_at::<u64>(dentry, o.dentry_name).and_then(|p| read_kernel_str(p, slot));
        match read {
            // A full slot means the name may have been cut.
            Some(len) if len < COMPONENT_LEN - 1 => rec.depth = i as u32 + 1,
            _ => break,
        }
        dentry = parent;
    }
    EVENTS
        .output::<PathRecord>(&*rec, submit_flags())
        .map_err(|_| Miss::RingbufFull)
}

/// The user stack of the current lock call, when asked for; a failed capture is counted and the
/// event goes out without it.
fn user_stack<C: StackIdContext>(ctx: &C, cfg: &Config) -> i32 {
    if cfg.options & option::USER_STACKS == 0 {
        return NO_STACK;
    }
    match ctx.get_stackid(&STACKS, BPF_F_USER_STACK) {
        Ok(id) => id as i32,
        Err(errno) => {
            bump(counter::STACK_LOST);
            errno.min(-1)
        }
    }
}

/// Common entry half: `file` is the locked file, `l_type` the requested lock type.
fn lock_enter<C: StackIdContext>(
    ctx: &C,
    cfg: &Config,
    fd: i32,
    cmd: u32,
    file: u64,
    l_type: u32,
) -> Outcome {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    require(process_wanted(cfg, tgid))?;
    let ev = SCRATCH.get_ptr_mut(0).ok_or(Miss::Ignored)?;
    // SAFETY: the lookup succeeded, so this is this CPU's scratch slot; programs do not nest on a
    // CPU, so this is the only reference to it while the program runs.
    let ev = unsafe { &mut *ev };
    ev.flags = 0;
    if l_type == F_UNLCK {
        // An unlock only needs to mark the thread as inside one, so the release it causes is
        // labelled as such; the release event carries the rest. No file walk, no event of its own.
        ev.lock_type = F_UNLCK;
        return PENDING
            .insert(&pid_tgid, &*ev, 0)
            .map_err(|_| Miss::MapFull);
    }
    describe_file(cfg, file, ev)?;
    let owner = if is_ofd(cmd) {
        Some(file)
    } else {
        current_files(cfg)
    };
    let owner = owner.ok_or(Miss::ReadFailed)?;
    // A path that cannot be sent costs the path, not the lock event.
    if let Err(miss) = send_path_once(cfg, file, ev.dev, ev.ino) {
        miss.counted();
    }
    ev.owner = owner;
    ev.start_ns = now_ns();
    ev.end_ns = 0;
    ev.pid = tgid;
    ev.tid = pid_tgid as u32;
    ev.fd = fd;
    ev.ret = 0;
    ev.kind = kind::LOCK;
    ev.cmd = cmd;
    ev.lock_type = l_type;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // Last, so untraced files and unlocks pay nothing for it.
    ev.stack_id = user_stack(ctx, cfg);
    PENDING
        .insert(&pid_tgid, &*ev, 0)
        .map_err(|_| Miss::MapFull)
}

/// Common exit half: emits the lock event and records a successful acquisition as held.
fn lock_exit(ret: i32) -> Outcome {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pending = PENDING.get_ptr(&pid_tgid).ok_or(Miss::Ignored)?;
    let now = now_ns();
    // SAFETY: the lookup succeeded; the entry is keyed by the current thread, so only this thread's
    // programs write it, and it is read before the delete below.
    let pending = unsafe { &*pending };
    let sent = if pending.lock_type == F_UNLCK {
        Ok(())
    } else {
        complete(pending, now, ret)
    };
    let _ = PENDING.remove(&pid_tgid);
    sent
}

/// Marks a successful lock as held and sends the finished event.
fn complete(pending: &Event, now: u64, ret: i32) -> Outcome {
    if ret == 0 {
        let key = HeldKey {
            dev: pending.dev,
            ino: pending.ino,
            owner: pending.owner,
        };
        // The event still goes out; only its release will be unmatched.
        if HELD.insert(&key, &1, 0).is_err() {
            bump(counter::MAP_FULL);
        }
    }
    let mut slot = EVENTS.reserve::<Event>(0).ok_or(Miss::RingbufFull)?;
    let mut ev = *pending;
    ev.end_ns = now;
    ev.ret = ret;
    slot.write(ev);
    slot.submit(submit_flags());
    Ok(())
}

#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    match try_sys_enter_fcntl(&ctx) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

fn try_sys_enter_fcntl(ctx: &TracePointContext) -> Outcome {
    // Syscall tracepoint args are 8-byte slots after the 16-byte header (fd, cmd, arg); this layout
    // is the syscall ABI, identical on every kernel.
    let cmd = tp_field::<u64>(ctx, 24).ok_or(Miss::Ignored)? as u32;
    require(is_lock_cmd(cmd))?;
    // Untraced processes stop here, before the user read and the fd-table walk.
    let cfg = config();
    require(process_wanted(
        cfg,
        (bpf_get_current_pid_tgid() >> 32) as u32,
    ))?;
    let fd = tp_field::<u64>(ctx, 16).unwrap_or(u64::MAX) as u32;
    let arg = tp_field::<u64>(ctx, 32).unwrap_or(0);
    // struct flock starts with `short l_type` on every Linux ABI.
    let l_type = read_user::<i16>(arg).ok_or(Miss::Ignored)? as u32;
    let file = if l_type == F_UNLCK {
        0
    } else {
        file_from_fd(cfg, fd).ok_or(Miss::Ignored)?
    };
    lock_enter(ctx, cfg, fd as i32, cmd, file, l_type)
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    match lock_exit(tp_field::<i64>(&ctx, 16).unwrap_or(0) as i32) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

/// fentry mode: `int fcntl_setlk(unsigned int fd, struct file *filp, unsigned int cmd, struct flock *flock)`.
#[fentry(function = "fcntl_setlk")]
pub fn fcntl_setlk_entry(ctx: FEntryContext) -> u32 {
    match try_fcntl_setlk_entry(&ctx) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

fn try_fcntl_setlk_entry(ctx: &FEntryContext) -> Outcome {
    let fd: u32 = ctx.arg(0);
    let file: u64 = ctx.arg(1);
    let cmd: u32 = ctx.arg(2);
    let flock: u64 = ctx.arg(3);
    let l_type = read_kernel::<i16>(flock).ok_or(Miss::Ignored)?;
    lock_enter(ctx, config(), fd as i32, cmd, file, l_type as u32)
}

#[fexit(function = "fcntl_setlk")]
pub fn fcntl_setlk_exit(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.arg(4);
    match lock_exit(ret as i32) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

#[tracepoint]
pub fn posix_lock_inode(ctx: TracePointContext) -> u32 {
    match try_posix_lock_inode(&ctx) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

fn try_posix_lock_inode(ctx: &TracePointContext) -> Outcome {
    let cfg = config();
    let o = &cfg.offsets;
    let l_type = tp_field::<u8>(ctx, o.pl_type).unwrap_or(0) as u32;
    let ret = tp_field::<i32>(ctx, o.pl_ret).unwrap_or(-1);
    require(l_type == F_UNLCK && ret == 0)?;
    let key = HeldKey {
        dev: tp_field::<u32>(ctx, o.pl_dev).unwrap_or(0) as u64,
        ino: tp_field::<u64>(ctx, o.pl_ino).unwrap_or(0),
        owner: tp_field::<u64>(ctx, o.pl_owner).unwrap_or(0),
    };
    // Only locks seen being taken are released.
    HELD.remove(&key).map_err(|_| Miss::Ignored)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let exiting = read_at::<u32>(current_task(), o.task_flags).is_some_and(|f| f & PF_EXITING != 0);
    // An explicit unlock arrives inside our own pending fcntl call; anything else is a close.
    let release = if exiting {
        kind::RELEASE_EXIT
    } else if in_unlock_call(pid_tgid) {
        kind::RELEASE_UNLOCK
    } else {
        kind::RELEASE_CLOSE
    };
    let mut slot = EVENTS.reserve::<Event>(0).ok_or(Miss::RingbufFull)?;
    let now = now_ns();
    slot.write(Event {
        start_ns: now,
        end_ns: now,
        dev: key.dev,
        ino: key.ino,
        owner: key.owner,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd: -1,
        ret: 0,
        kind: release,
        cmd: 0,
        lock_type: F_UNLCK,
        flags: event_flag::NAME_MISSING,
        stack_id: NO_STACK,
        _reserved: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        name: [0; NAME_LEN],
    });
    slot.submit(submit_flags());
    Ok(())
}

/// Whether the thread `pid_tgid` (the current one) is inside an `F_UNLCK` fcntl call.
fn in_unlock_call(pid_tgid: u64) -> bool {
    PENDING.get_ptr(&pid_tgid).is_some_and(|p| {
        // SAFETY: the lookup succeeded; the entry is keyed by the current thread, which is busy
        // running this program, so nothing writes it during this read.
        let lock_type = unsafe { (*p).lock_type };
        lock_type == F_UNLCK
    })
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    match try_sched_process_fork(&ctx) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

fn try_sched_process_fork(ctx: &TracePointContext) -> Outcome {
    let cfg = config();
    require(cfg.flags & filter::BY_PID != 0)?;
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    require(PIDS.get_ptr(&parent).is_some())?;
    let child = tp_field::<u32>(ctx, cfg.offsets.fork_child_pid).ok_or(Miss::Ignored)?;
    PIDS.insert(&child, &1, 0).map_err(|_| Miss::MapFull)?;
    debug!(ctx, "following child {} of {}", child, parent);
    Ok(())
}

/// The fork hook cannot tell a new thread from a new process, so it also adds thread IDs; each is
/// dropped when its thread exits, and the process once its last thread does. Releases at exit come
/// later (`exit_files` runs after this tracepoint) but are matched through `HELD`, not `PIDS`.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    match try_sched_process_exit() {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

fn try_sched_process_exit() -> Outcome {
    let cfg = config();
    require(cfg.flags & filter::BY_PID != 0)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid != tgid {
        let _ = PIDS.remove(&tid);
    }
    // do_exit decrements `signal->live` before this tracepoint: 0 means the whole group is exiting.
    let group_dead = read_at::<u64>(current_task(), cfg.offsets.task_signal)
        .and_then(|signal| read_at::<i32>(signal, cfg.offsets.signal_live))
        == Some(0);
    if group_dead {
        let _ = PIDS.remove(&tgid);
    }
    Ok(())
}

/// A thread other than the leader that calls exec takes over the leader's PID: the ID it had is gone
/// without a thread exit, so it is forgotten here.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    match try_sched_process_exec(&ctx) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Outcome {
    let cfg = config();
    require(cfg.flags & filter::BY_PID != 0)?;
    let old = tp_field::<u32>(ctx, cfg.offsets.exec_old_pid).ok_or(Miss::Ignored)?;
    if old != (bpf_get_current_pid_tgid() >> 32) as u32 {
        let _ = PIDS.remove(&old);
    }
    Ok(())
}

/// Loaded only by `locktrace doctor` to report whether BTF raw tracepoints work here; tracing uses
/// the classic tracepoints, whose field layout the kernel publishes in tracefs.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> u32 {
    DONE
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
