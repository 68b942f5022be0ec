//! Lock calls: entry parks a half-built event per thread (no fd-table walk: the kernel's lock code
//! says which file it locks, see [`describe_call`]), exit completes and sends it.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{fentry, fexit, tracepoint},
    programs::{FEntryContext, FExitContext, TracePointContext, tracing::StackIdContext},
};
use tracer_common::{Config, Event, F_UNLCK, HeldInfo, HeldKey, NO_STACK, counter, kind, option};

use super::{
    DONE, Miss, Outcome, bump, config,
    file::{file_wanted, is_lock_cmd, process_wanted, send_path_once, set_name},
    maps::{EVENTS, HELD, PENDING, SCRATCH, STACKS},
    require, submit_flags,
};
use crate::kernel::{now_ns, read_kernel, read_user, syscall_slot};

const BPF_F_USER_STACK: u64 = 1 << 8;

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

/// Common entry half: parks the call, which the kernel's lock code then describes (see
/// [`describe_call`]).
fn lock_enter<C: StackIdContext>(ctx: &C, cfg: &Config, fd: i32, cmd: u32, l_type: u32) -> Outcome {
    // An unlock is seen as the release it causes.
    require(l_type != F_UNLCK)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    require(process_wanted(cfg, tgid))?;
    let ev = SCRATCH.get_ptr_mut(0).ok_or(Miss::Ignored)?;
    // SAFETY: the lookup succeeded, so this is this CPU's scratch slot; programs do not nest on a
    // CPU, so this is the only reference to it while the program runs.
    let ev = unsafe { &mut *ev };
    ev.flags = 0;
    ev.lock_type = l_type;
    // Not a lock event until `describe_call` says which file it locks and that it is traced.
    ev.kind = UNDESCRIBED;
    ev.start_ns = now_ns();
    ev.end_ns = 0;
    ev.pid = tgid;
    ev.tid = pid_tgid as u32;
    ev.fd = fd;
    ev.ret = 0;
    ev.cmd = cmd;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    ev.stack_id = user_stack(ctx, cfg);
    PENDING
        .insert(&pid_tgid, &*ev, 0)
        .map_err(|_| Miss::MapFull)
}

/// [`Event::kind`] of a parked call whose file is not known yet.
const UNDESCRIBED: u32 = 0;

/// The current thread's parked lock call reached the kernel's lock code, which knows the file:
/// `read` gives its identity with the lock's owner (the same `fl_owner` its release will carry),
/// the `struct file` (for the path) and the address of its name (0 if unknown). It runs only for a
/// parked call, so other threads' lock calls cost no reads. A call on a file the filters leave out
/// is dropped here; one that never gets here (refused before the lock code) is dropped at exit.
/// Only the first attempt of a call describes it; the retries after a wait find it described.
#[inline(always)]
pub(super) fn describe_call(
    cfg: &Config,
    read: impl FnOnce() -> Option<(HeldKey, u64, u64)>,
) -> Outcome {
    let pid_tgid = bpf_get_current_pid_tgid();
    let ev = PENDING.get_ptr_mut(&pid_tgid).ok_or(Miss::Ignored)?;
    // SAFETY: the lookup succeeded; the entry is keyed by the current thread, so only this
    // thread's programs (this one, now) touch it.
    let ev = unsafe { &mut *ev };
    require(ev.kind == UNDESCRIBED)?;
    let Some((id, file, name)) = read() else {
        let _ = PENDING.remove(&pid_tgid);
        return Err(Miss::ReadFailed);
    };
    ev.dev = id.dev;
    ev.ino = id.ino;
    ev.owner = id.owner;
    set_name((name != 0).then_some(name), ev);
    if let Err(miss) = file_wanted(cfg, ev) {
        let _ = PENDING.remove(&pid_tgid);
        return Err(miss);
    }
    ev.kind = kind::LOCK;
    // A path that cannot be sent costs the path, not the lock event.
    send_path_once(cfg, file, ev, true)
}

/// Common exit half: emits the lock event and records a successful acquisition as held.
fn lock_exit(ret: i32) -> Outcome {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pending = PENDING.get_ptr(&pid_tgid).ok_or(Miss::Ignored)?;
    let now = now_ns();
    // SAFETY: the lookup succeeded; the entry is keyed by the current thread, so only this thread's
    // programs write it, and it is read before the delete below.
    let pending = unsafe { &*pending };
    let sent = if pending.kind == kind::LOCK {
        complete(pending, now, ret)
    } else {
        Ok(())
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
        let info = HeldInfo {
            since_ns: now,
            lock_type: pending.lock_type,
            _reserved: 0,
        };
        // The event still goes out; only its release will be unmatched.
        if HELD.insert(&key, &info, 0).is_err() {
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
    let cmd = syscall_slot::<1>(ctx) as u32;
    require(is_lock_cmd(cmd))?;
    let fd = syscall_slot::<0>(ctx) as i32;
    let arg = syscall_slot::<2>(ctx);
    // struct flock starts with `short l_type` on every Linux ABI.
    let l_type = read_user::<i16>(arg).ok_or(Miss::Ignored)? as u32;
    lock_enter(ctx, config(), fd, cmd, l_type)
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    match lock_exit(syscall_slot::<0>(&ctx) as i64 as i32) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

/// fentry mode: `int fcntl_setlk(unsigned int fd, struct file *filp, unsigned int cmd, struct flock *flock)`.
/// The file is described later, by the kernel's lock code, as in tracepoint mode.
#[fentry(function = "fcntl_setlk")]
pub fn fcntl_setlk_entry(ctx: FEntryContext) -> u32 {
    match try_fcntl_setlk_entry(&ctx) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}

fn try_fcntl_setlk_entry(ctx: &FEntryContext) -> Outcome {
    let fd: u32 = ctx.arg(0);
    let cmd: u32 = ctx.arg(2);
    let flock: u64 = ctx.arg(3);
    let l_type = read_kernel::<i16>(flock).ok_or(Miss::Ignored)?;
    lock_enter(ctx, config(), fd as i32, cmd, l_type as u32)
}

#[fexit(function = "fcntl_setlk")]
pub fn fcntl_setlk_exit(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.arg(4);
    match lock_exit(ret as i32) {
        Ok(()) => DONE,
        Err(miss) => miss.counted(),
    }
}
