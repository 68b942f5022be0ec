//! The kernel's own lock code, through its BTF tracepoints: `filelock:posix_lock_inode` ends every
//! attempt to take, convert or release a POSIX or OFD lock, and `filelock:fcntl_setlk` ends every
//! fcntl lock call. Their arguments are typed pointers, so fields are plain loads, not helper calls.
//!
//! Event mode learns here which file a lock call locks, and sees releases. Summary mode needs
//! nothing else, and no syscall hook
//! (while one is attached, every syscall of the machine takes the slow path): a request is
//! granted, deferred (it waits) or refused in `posix_lock_inode`; a wait runs from the first
//! deferral to the grant, or to the end of the call in `fcntl_setlk` when a signal cuts it short.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use tracer_common::{
    Config, Event, F_UNLCK, FILE_LOCK_DEFERRED, FL_SLEEP, HeldInfo, HeldKey, counter, option,
    summary::LockKey,
};

use super::{
    BPF_NOEXIST, DONE, Miss, Outcome, bump, config,
    file::{file_wanted, filter_by_name, process_wanted, send_path_once, set_name},
    lock::describe_call,
    maps::{HELD, SCRATCH, WAITING, Waiting},
    release, require, summary,
};
use crate::kernel::{current_task_btf, load, now_ns};

/// `posix_lock_inode(struct inode *inode, struct file_lock *request, int ret)`.
#[btf_tracepoint(function = "posix_lock_inode")]
pub fn filelock_posix_lock_inode(ctx: BtfTracePointContext) -> u32 {
    match try_posix_lock_inode(&ctx) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

fn try_posix_lock_inode(ctx: &BtfTracePointContext) -> Outcome {
    let cfg = config();
    let (inode, request) = typed_args(ctx)?;
    let ret = ctx.arg::<u64>(2) as i32;
    let lock_type = u32::from(load::<u8>(request, cfg.offsets.flock_type));
    let summarized = cfg.options & option::SUMMARY != 0;
    if lock_type == F_UNLCK {
        require(ret == 0)?;
        let key = held_key(cfg, inode, request);
        return if summarized {
            released(&key)
        } else {
            let o = &cfg.offsets;
            let task_flags = load(current_task_btf(), o.task_flags);
            let how = release::release_kind(task_flags, load(request, o.flock_flags));
            release::released(&key, how)
        };
    }
    if summarized {
        return attempt(cfg, inode, request, lock_type, ret);
    }
    describe_call(cfg, || {
        let file: u64 = load(request, cfg.offsets.flock_file);
        Some((held_key(cfg, inode, request), file, name_addr(cfg, file)))
    })
}

/// `fcntl_setlk(..., struct file_lock *request, ...)` returned `ret` for `inode`. Attached in summary
/// mode only, for the waits that end without a verdict from `posix_lock_inode`.
#[btf_tracepoint(function = "fcntl_setlk")]
pub fn filelock_fcntl_setlk(ctx: BtfTracePointContext) -> u32 {
    match try_fcntl_setlk(&ctx) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

fn try_fcntl_setlk(ctx: &BtfTracePointContext) -> Outcome {
    let ret = ctx.arg::<u64>(2) as i32;
    // A granted or refused request was counted when `posix_lock_inode` said so.
    require(ret < 0)?;
    let (inode, request) = typed_args(ctx)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let waited = wait_ended(pid_tgid, request, now_ns()).ok_or(Miss::Ignored)?;
    let cfg = config();
    let lock_type = u32::from(load::<u8>(request, cfg.offsets.flock_type));
    let key = lock_key(cfg, inode, lock_type);
    if summary::lock_result(&key, true, waited, ret, (pid_tgid >> 32) as u32)? {
        let ev = scratch(&key)?;
        send_path_once(cfg, load(request, cfg.offsets.flock_file), ev, false)?;
    }
    Ok(())
}

/// Ends the current thread's wait, if it had one: how long `request` waited. The entry goes in any
/// case: one left by a request that never came back here (a kernel lock server's, or one whose end
/// was missed) must not time a later one.
#[inline(always)]
fn wait_ended(pid_tgid: u64, request: u64, now: u64) -> Option<u64> {
    let w = WAITING.get_ptr(&pid_tgid)?;
    // SAFETY: the lookup succeeded; entries are keyed by thread, and only this thread's programs,
    // one of which is running this, write its entry.
    let w = unsafe { *w };
    let _ = WAITING.remove(&pid_tgid);
    (w.request == request).then(|| now.saturating_sub(w.since_ns))
}

/// Starts the current thread's wait for `request` at `now`; the attempts after each wake-up find
/// it started.
fn wait_started(pid_tgid: u64, request: u64, now: u64) -> Outcome {
    // SAFETY: as in `wait_ended`.
    if WAITING
        .get_ptr(&pid_tgid)
        .is_some_and(|w| unsafe { (*w).request } == request)
    {
        return Ok(());
    }
    let w = Waiting {
        since_ns: now,
        request,
    };
    WAITING.insert(&pid_tgid, &w, 0).map_err(|_| Miss::MapFull)
}

/// This CPU's scratch event, cleared to name the file of `key` (its name not read yet).
fn scratch(key: &LockKey) -> Result<&'static mut Event, Miss> {
    let ev = SCRATCH.get_ptr_mut(0).ok_or(Miss::Ignored)?;
    // SAFETY: the lookup succeeded, so this is this CPU's scratch slot; programs do not nest on a
    // CPU, so this is the only reference to it while the program runs.
    let ev = unsafe { &mut *ev };
    ev.flags = 0;
    ev.dev = key.dev;
    ev.ino = key.ino;
    Ok(ev)
}

/// Both hooks' `(struct inode *, struct file_lock *)`. Newer verifiers type tracepoint arguments
/// as possibly NULL and refuse arithmetic on them before a check.
fn typed_args(ctx: &BtfTracePointContext) -> Result<(u64, u64), Miss> {
    let (inode, request): (u64, u64) = (ctx.arg(0), ctx.arg(1));
    require(inode != 0 && request != 0)?;
    Ok((inode, request))
}

/// Summary mode: one attempt of the current thread to take a `lock_type` lock, which
/// `posix_lock_inode` answered with `ret`.
fn attempt(cfg: &Config, inode: u64, request: u64, lock_type: u32, ret: i32) -> Outcome {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let o = &cfg.offsets;
    let now = now_ns();
    let blocking = load::<u32>(request, o.flock_flags) & FL_SLEEP != 0;
    // Before the filters, so a wait ends whatever they say now (about a file renamed or a process
    // moved while it waited). A request that may wait and was answered at once waited 0 ns.
    let waited = if blocking && ret != FILE_LOCK_DEFERRED {
        wait_ended(pid_tgid, request, now).unwrap_or(0)
    } else {
        0
    };
    require(process_wanted(cfg, tgid))?;
    let key = lock_key(cfg, inode, lock_type);
    let ev = scratch(&key)?;
    let file: u64 = load(request, o.flock_file);
    let named = filter_by_name(cfg);
    if named {
        set_name(Some(name_addr(cfg, file)), ev);
    }
    file_wanted(cfg, ev)?;
    if ret == FILE_LOCK_DEFERRED {
        return wait_started(pid_tgid, request, now);
    }
    if ret == 0 {
        let owner = load(request, o.flock_owner);
        granted(owned(&key, owner), lock_type, tgid, now);
    }
    // The path goes out with a lock file's first totals (once per file: `send_path_once`), so the
    // many calls after pay no check for it.
    if summary::lock_result(&key, blocking, waited, ret, tgid)? {
        send_path_once(cfg, file, ev, named)?;
    }
    Ok(())
}

/// Summary mode: the owner of `key` released it; the hold ends now. Only locks seen being taken
/// are released.
fn released(key: &HeldKey) -> Outcome {
    let info = HELD.get_ptr(key).ok_or(Miss::Ignored)?;
    // SAFETY: the lookup succeeded; the entry is copied at once, and the copy is used only by the
    // thread whose remove below succeeds.
    let info = unsafe { *info };
    // Two threads of the owner can release at once (closing two fds of the file): the hold is
    // counted by the one that removes it.
    HELD.remove(key).map_err(|_| Miss::Ignored)?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    summary::hold(key.dev, key.ino, &info, tgid, now_ns())
}

/// Summary mode: `key` is held as `lock_type` from `now`. A lock its owner takes again is converted:
/// the old hold ends here.
fn granted(key: HeldKey, lock_type: u32, tgid: u32, now: u64) {
    let info = HeldInfo {
        since_ns: now,
        lock_type,
        _reserved: 0,
    };
    // The common case in one map operation: the insert finds no entry and makes one.
    if HELD.insert(&key, &info, BPF_NOEXIST).is_ok() {
        return;
    }
    let Some(old) = HELD.get_ptr_mut(&key) else {
        // Released by another thread of the owner in between: the lock is this call's alone.
        if HELD.insert(&key, &info, 0).is_err() {
            bump(counter::MAP_FULL);
        }
        return;
    };
    // SAFETY: the lookup succeeded and map values outlive the program run. The owner's threads (a
    // POSIX lock's owner is the process's file table, an OFD lock's the open file) may update the
    // entry at once; plain integers, so a race costs at most one hold's figure.
    let held = unsafe { *old };
    if let Err(miss) = summary::hold(key.dev, key.ino, &held, tgid, now) {
        miss.counted();
    }
    // SAFETY: as above.
    unsafe { *old = info };
}

fn lock_key(cfg: &Config, inode: u64, lock_type: u32) -> LockKey {
    let (dev, ino) = identity(cfg, inode);
    LockKey {
        dev,
        ino,
        lock_type,
        _reserved: 0,
    }
}

fn held_key(cfg: &Config, inode: u64, request: u64) -> HeldKey {
    owned(
        &lock_key(cfg, inode, 0),
        load(request, cfg.offsets.flock_owner),
    )
}

/// The `HELD` key of `key`'s file locked by `owner`.
fn owned(key: &LockKey, owner: u64) -> HeldKey {
    HeldKey {
        dev: key.dev,
        ino: key.ino,
        owner,
    }
}

/// The address of `file`'s basename (`file->f_path.dentry->d_name.name`).
fn name_addr(cfg: &Config, file: u64) -> u64 {
    let dentry: u64 = load(file, cfg.offsets.file_dentry);
    load(dentry, cfg.offsets.dentry_name)
}

/// The inode's `s_dev` and `i_ino`, as the lock-call hooks read them from the file.
fn identity(cfg: &Config, inode: u64) -> (u64, u64) {
    let o = &cfg.offsets;
    let sb: u64 = load(inode, o.inode_sb);
    (
        u64::from(load::<u32>(sb, o.sb_dev)),
        load(inode, o.inode_ino),
    )
}
