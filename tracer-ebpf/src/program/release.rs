//! Releases: every way a held lock ends, seen at the moment the kernel releases it.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{Config, Event, F_UNLCK, HeldKey, NAME_LEN, NO_STACK, event_flag, kind};

use super::{
    DONE, Miss, Outcome, config,
    maps::{EVENTS, HELD, PENDING},
    require, submit_flags,
};
use crate::kernel::{current_task, now_ns, read_at, tp_field};

const PF_EXITING: u32 = 0x4;

/// Event mode's release hook where BTF tracepoints are refused: the same tracepoint's classic
/// form, whose record fields are read through helper calls.
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
    // A helper call per field, not one copy of the record: a 128-byte copy on this program's
    // stack took the combined stack of it and its calls past the verifier's 512 bytes on kernels
    // before 6.13.
    let l_type = tp_field::<u8>(ctx, o.pl_type).unwrap_or(0) as u32;
    let ret = tp_field::<i32>(ctx, o.pl_ret).unwrap_or(-1);
    require(l_type == F_UNLCK && ret == 0)?;
    released(
        cfg,
        &HeldKey {
            dev: tp_field::<u32>(ctx, o.pl_dev).unwrap_or(0) as u64,
            ino: tp_field::<u64>(ctx, o.pl_ino).unwrap_or(0),
            owner: tp_field::<u64>(ctx, o.pl_owner).unwrap_or(0),
        },
    )
}

/// Event mode: the lock `key` was released by the current task; sends the release if the lock
/// was seen being taken.
pub(super) fn released(cfg: &Config, key: &HeldKey) -> Outcome {
    HELD.remove(key).map_err(|_| Miss::Ignored)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let exiting =
        read_at::<u32>(current_task(), cfg.offsets.task_flags).is_some_and(|f| f & PF_EXITING != 0);
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
