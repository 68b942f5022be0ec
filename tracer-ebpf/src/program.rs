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
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
    },
    macros::{btf_tracepoint, fentry, fexit, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, TracePointContext},
};
use aya_log_ebpf::debug;
use tracer_common::{
    COMPONENT_LEN, Config, Event, F_OFD_SETLK, F_OFD_SETLKW, F_SETLK, F_SETLKW, F_UNLCK, HeldKey,
    InodeKey, NAME_LEN, PATH_DEPTH, PathRecord, counter, event_flag, filter, kind,
};

#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    flags: 0,
    _reserved: 0,
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

/// Inodes whose path was already sent.
#[map]
static SEEN: LruHashMap<InodeKey, u8> = LruHashMap::with_max_entries(16384, 0);

#[map]
static PATH_SCRATCH: PerCpuArray<PathRecord> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space: an `Event` is too big to build on the 512-byte BPF stack next to everything else.
#[map]
static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

const PF_EXITING: u32 = 0x4;
const BPF_NOEXIST: u64 = 1;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Wake the reader only once this much is queued; it polls on a short timeout anyway. Waking it per
/// event would schedule locktrace onto the CPU of the very process whose hold is being timed.
const WAKEUP_BYTES: u64 = 2 << 20;
/// Sentinel for "this call is not one of ours".
const SKIP: u32 = 0;
const OK: u32 = 0;

fn submit_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

fn config() -> Config {
    // SAFETY: CONFIG lives in .rodata, written by the loader before the program is loaded; volatile
    // keeps the compiler from folding the zero initialiser into the code.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

fn bump(which: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(which) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

unsafe fn read_at<T>(base: u64, off: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + off) as *const T).ok() }
}

fn is_lock_cmd(cmd: u32) -> bool {
    matches!(cmd, F_SETLK | F_SETLKW | F_OFD_SETLK | F_OFD_SETLKW)
}

fn is_ofd(cmd: u32) -> bool {
    matches!(cmd, F_OFD_SETLK | F_OFD_SETLKW)
}

/// Process filters that need no file: pid tree and cgroup.
fn process_wanted(cfg: &Config, tgid: u32) -> bool {
    if cfg.flags & filter::BY_PID != 0 && unsafe { PIDS.get(&tgid) }.is_none() {
        return false;
    }
    if cfg.flags & filter::BY_CGROUP != 0 && unsafe { bpf_get_current_cgroup_id() } != cfg.cgroup_id
    {
        return false;
    }
    true
}

/// `current->files->fdt->fd[fd]`, bounds-checked against `max_fds`.
unsafe fn file_from_fd(cfg: &Config, fd: u32) -> Option<u64> {
    let o = &cfg.offsets;
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = read_at(task, o.task_files)?;
        let fdt: u64 = read_at(files, o.files_fdt)?;
        let max_fds: u32 = read_at(fdt, o.fdtable_max_fds)?;
        if fd >= max_fds {
            return None;
        }
        let fds: u64 = read_at(fdt, o.fdtable_fd)?;
        let file: u64 = read_at(fds, (fd as u64) * 8)?;
        if file == 0 { None } else { Some(file) }
    }
}

unsafe fn current_files(cfg: &Config) -> Option<u64> {
    unsafe { read_at(bpf_get_current_task(), cfg.offsets.task_files) }
}

/// Fills identity (dev, ino, name) from a `struct file *` and applies the file filters.
/// Returns false when the file is not one we trace.
unsafe fn describe_file(cfg: &Config, file: u64, ev: &mut Event) -> bool {
    let o = &cfg.offsets;
    let Some(inode) = (unsafe { read_at::<u64>(file, o.file_inode) }) else {
        bump(counter::READ_FAILED);
        return false;
    };
    ev.ino = unsafe { read_at::<u64>(inode, o.inode_ino) }.unwrap_or(0);
    ev.dev = unsafe { read_at::<u64>(inode, o.inode_sb) }
        .and_then(|sb| unsafe { read_at::<u32>(sb, o.sb_dev) })
        .unwrap_or(0) as u64;
    ev.name = [0; NAME_LEN];
    let name_ptr = unsafe { read_at::<u64>(file, o.file_dentry) }
        .and_then(|dentry| unsafe { read_at::<u64>(dentry, o.dentry_name) });
    let named = match name_ptr {
        Some(p) => unsafe { bpf_probe_read_kernel_str_bytes(p as *const u8, &mut ev.name) }.is_ok(),
        None => false,
    };
    if !named {
        ev.flags |= event_flag::NAME_MISSING;
    }
    if cfg.flags & filter::ALL_LOCKS != 0 {
        return true;
    }
    if cfg.flags & filter::BY_NAME != 0 && named && unsafe { NAMES.get(&ev.name) }.is_some() {
        return true;
    }
    let key = InodeKey {
        dev: ev.dev,
        ino: ev.ino,
    };
    cfg.flags & filter::BY_INODE != 0 && unsafe { INODES.get(&key) }.is_some()
}

/// Sends the path of a traced inode the first time it is seen.
unsafe fn send_path_once(cfg: &Config, file: u64, dev: u64, ino: u64) {
    let key = InodeKey { dev, ino };
    // One insert both checks and claims: two CPUs cannot both send the path.
    if SEEN.insert(&key, &1, BPF_NOEXIST).is_err() {
        return;
    }
    let Some(rec) = PATH_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for the duration of this program.
    let rec = unsafe { &mut *rec };
    let o = &cfg.offsets;
    rec.dev = dev;
    rec.ino = ino;
    rec.depth = 0;
    rec.incomplete = 1;
    let Some(mut dentry) = (unsafe { read_at::<u64>(file, o.file_dentry) }) else {
        return;
    };
    for i in 0..PATH_DEPTH {
        let Some(parent) = (unsafe { read_at::<u64>(dentry, o.dentry_parent) }) else {
            break;
        };
        if parent == dentry {
            // The filesystem root: its "/" is implied.
            rec.incomplete = 0;
            break;
        }
        let slot = &mut rec.components[i];
        *slot = [0; COMPONENT_LEN];
        let read = unsafe { read_at::<u64>(dentry, o.dentry_name) }
            .and_then(|p| unsafe { bpf_probe_read_kernel_str_bytes(p as *const u8, slot) }.ok())
            .map(|name| name.len());
        match read {
            // A full slot means the name may have been cut.
            Some(len) if len < COMPONENT_LEN - 1 => rec.depth = i as u32 + 1,
            _ => break,
        }
        dentry = parent;
    }
    if EVENTS.output::<PathRecord>(&*rec, submit_flags()).is_err() {
        bump(counter::RINGBUF_FULL);
    }
}

/// Common entry half: `file` is the locked file, `l_type` the requested lock type.
fn lock_enter(fd: i32, cmd: u32, file: u64, l_type: u32) -> u32 {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !process_wanted(&cfg, tgid) {
        return SKIP;
    }
    let Some(ev) = SCRATCH.get_ptr_mut(0) else {
        return SKIP;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for the duration of this program.
    let ev = unsafe { &mut *ev };
    ev.flags = 0;
    if l_type == F_UNLCK {
        // An unlock only needs to mark the thread as inside one, so the release it causes is
        // labelled as such; the release event carries the rest. No file walk, no event of its own.
        ev.lock_type = F_UNLCK;
        if PENDING.insert(&pid_tgid, &*ev, 0).is_err() {
            bump(counter::MAP_FULL);
        }
        return OK;
    }
    if !unsafe { describe_file(&cfg, file, ev) } {
        return SKIP;
    }
    let owner = if is_ofd(cmd) {
        Some(file)
    } else {
        unsafe { current_files(&cfg) }
    };
    let Some(owner) = owner else {
        bump(counter::READ_FAILED);
        return SKIP;
    };
    unsafe { send_path_once(&cfg, file, ev.dev, ev.ino) };
    ev.owner = owner;
    ev.start_ns = unsafe { bpf_ktime_get_ns() };
    ev.end_ns = 0;
    ev.pid = tgid;
    ev.tid = pid_tgid as u32;
    ev.fd = fd;
    ev.ret = 0;
    ev.kind = kind::LOCK;
    ev.cmd = cmd;
    ev.lock_type = l_type;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    if PENDING.insert(&pid_tgid, &*ev, 0).is_err() {
        bump(counter::MAP_FULL);
    }
    OK
}

/// Common exit half: emits the lock event and records a successful acquisition as held.
fn lock_exit(ret: i32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING.get_ptr(&pid_tgid) else {
        return SKIP;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the pointer comes from a successful map lookup and is read before the delete below.
    let pending = unsafe { &*pending };
    if pending.lock_type == F_UNLCK {
        let _ = PENDING.remove(&pid_tgid);
        return OK;
    }
    if ret == 0 {
        let key = HeldKey {
            dev: pending.dev,
            ino: pending.ino,
            owner: pending.owner,
        };
        if HELD.insert(&key, &1, 0).is_err() {
            bump(counter::MAP_FULL);
        }
    }
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            let mut ev = *pending;
            ev.end_ns = now;
            ev.ret = ret;
            slot.write(ev);
            slot.submit(submit_flags());
        }
        None => bump(counter::RINGBUF_FULL),
    }
    let _ = PENDING.remove(&pid_tgid);
    OK
}

#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    // Syscall tracepoint args are 8-byte slots after the 16-byte header (fd, cmd, arg); this layout
    // is the syscall ABI, identical on every kernel.
    let Ok(cmd) = (unsafe { ctx.read_at::<u64>(24) }) else {
        return SKIP;
    };
    let cmd = cmd as u32;
    if !is_lock_cmd(cmd) {
        return SKIP;
    }
    // Untraced processes stop here, before the user read and the fd-table walk.
    let cfg = config();
    if !process_wanted(&cfg, (bpf_get_current_pid_tgid() >> 32) as u32) {
        return SKIP;
    }
    let fd = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(u64::MAX) as u32;
    let arg = unsafe { ctx.read_at::<u64>(32) }.unwrap_or(0);
    // struct flock starts with `short l_type` on every Linux ABI.
    let Ok(l_type) = (unsafe { bpf_probe_read_user(arg as *const i16) }) else {
        return SKIP;
    };
    let l_type = l_type as u32;
    let file = if l_type == F_UNLCK {
        0
    } else {
        match unsafe { file_from_fd(&cfg, fd) } {
            Some(file) => file,
            None => return SKIP,
        }
    };
    lock_enter(fd as i32, cmd, file, l_type)
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0);
    lock_exit(ret as i32)
}

/// fentry mode: `int fcntl_setlk(unsigned int fd, struct file *filp, unsigned int cmd, struct flock *flock)`.
#[fentry(function = "fcntl_setlk")]
pub fn fcntl_setlk_entry(ctx: FEntryContext) -> u32 {
    let fd: u32 = ctx.arg(0);
    let file: u64 = ctx.arg(1);
    let cmd: u32 = ctx.arg(2);
    let flock: u64 = ctx.arg(3);
    let Ok(l_type) = (unsafe { bpf_probe_read_kernel(flock as *const i16) }) else {
        return SKIP;
    };
    lock_enter(fd as i32, cmd, file, l_type as u32)
}

#[fexit(function = "fcntl_setlk")]
pub fn fcntl_setlk_exit(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.arg(4);
    lock_exit(ret as i32)
}

#[tracepoint]
pub fn posix_lock_inode(ctx: TracePointContext) -> u32 {
    let o = config().offsets;
    let l_type = unsafe { ctx.read_at::<u8>(o.pl_type as usize) }.unwrap_or(0) as u32;
    let ret = unsafe { ctx.read_at::<i32>(o.pl_ret as usize) }.unwrap_or(-1);
    if l_type != F_UNLCK || ret != 0 {
        return SKIP;
    }
    let key = HeldKey {
        dev: unsafe { ctx.read_at::<u32>(o.pl_dev as usize) }.unwrap_or(0) as u64,
        ino: unsafe { ctx.read_at::<u64>(o.pl_ino as usize) }.unwrap_or(0),
        owner: unsafe { ctx.read_at::<u64>(o.pl_owner as usize) }.unwrap_or(0),
    };
    if HELD.remove(&key).is_err() {
        return SKIP;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let cfg = config();
    let exiting = unsafe { read_at::<u32>(bpf_get_current_task(), cfg.offsets.task_flags) }
        .is_some_and(|f| f & PF_EXITING != 0);
    // An explicit unlock arrives inside our own pending fcntl call; anything else is a close.
    let release = if exiting {
        kind::RELEASE_EXIT
    } else if PENDING
        .get_ptr(&pid_tgid)
        .is_some_and(|p| unsafe { (*p).lock_type } == F_UNLCK)
    {
        kind::RELEASE_UNLOCK
    } else {
        kind::RELEASE_CLOSE
    };
    let Some(mut slot) = EVENTS.reserve::<Event>(0) else {
        bump(counter::RINGBUF_FULL);
        return OK;
    };
    let now = unsafe { bpf_ktime_get_ns() };
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
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        name: [0; NAME_LEN],
    });
    slot.submit(submit_flags());
    OK
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.flags & filter::BY_PID == 0 {
        return SKIP;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if unsafe { PIDS.get(&parent) }.is_none() {
        return SKIP;
    }
    let Ok(child) = (unsafe { ctx.read_at::<u32>(cfg.offsets.fork_child_pid as usize) }) else {
        return SKIP;
    };
    if PIDS.insert(&child, &1, 0).is_err() {
        bump(counter::MAP_FULL);
    } else {
        debug!(&ctx, "following child {} of {}", child, parent);
    }
    OK
}

/// The fork hook cannot tell a new thread from a new process, so it also adds thread IDs; each is
/// dropped when its thread exits, and the process once its last thread does. Releases at exit come
/// later (`exit_files` runs after this tracepoint) but are matched through `HELD`, not `PIDS`.
#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.flags & filter::BY_PID == 0 {
        return SKIP;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid != tgid {
        let _ = PIDS.remove(&tid);
    }
    // do_exit decrements `signal->live` before this tracepoint: 0 means the whole group is exiting.
    let group_dead = unsafe {
        read_at::<u64>(bpf_get_current_task(), cfg.offsets.task_signal)
            .and_then(|signal| read_at::<i32>(signal, cfg.offsets.signal_live))
    } == Some(0);
    if group_dead {
        let _ = PIDS.remove(&tgid);
    }
    OK
}

/// A thread other than the leader that calls exec takes over the leader's PID: the ID it had is gone
/// without a thread exit, so it is forgotten here.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.flags & filter::BY_PID == 0 {
        return SKIP;
    }
    let Ok(old) = (unsafe { ctx.read_at::<u32>(cfg.offsets.exec_old_pid as usize) }) else {
        return SKIP;
    };
    if old != (bpf_get_current_pid_tgid() >> 32) as u32 {
        let _ = PIDS.remove(&old);
    }
    OK
}

/// Loaded only by `locktrace doctor` to report whether BTF raw tracepoints work here; tracing uses
/// the classic tracepoints, whose field layout the kernel publishes in tracefs.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> u32 {
    OK
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
