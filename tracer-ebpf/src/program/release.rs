//! Releases: every way a held lock ends, seen at the moment the kernel releases it. Also event
//! mode's classic hook on the kernel's lock code, which describes lock calls as well.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{Event, F_UNLCK, FL_CLOSE, HeldKey, NAME_LEN, NO_STACK, event_flag, kind};

use super::{
    DONE, Miss, Outcome, config,
    file::name_of,
    lock::describe_call,
    maps::{EVENTS, HELD},
    require, submit_flags,
};
use crate::kernel::{current_task, now_ns, read_at, tp_field};

/// `task_struct.flags` of a task in `do_exit`.
const PF_EXITING: u32 = 0x4;

/// Event mode's hook on the kernel's lock code where BTF tracepoints are refused (or with
/// `--attach tracepoint`): the same tracepoint's classic form, whose record fields are read through
/// helper calls. It describes lock calls and sees releases.
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
    let key = || HeldKey {
        dev: tp_field::<u32>(ctx, o.pl_dev).unwrap_or(0) as u64,
        ino: tp_field::<u64>(ctx, o.pl_ino).unwrap_or(0),
        owner: tp_field::<u64>(ctx, o.pl_owner).unwrap_or(0),
    };
    if l_type != F_UNLCK {
        return describe_call(cfg, || {
            let request = tp_field::<u64>(ctx, o.pl_request)?;
            let file = read_at::<u64>(request, o.flock_file)?;
            Some((key(), file, name_of(cfg, file).unwrap_or(0)))
        });
    }
    require(tp_field::<i32>(ctx, o.pl_ret) == Some(0))?;
    let task_flags = read_at::<u32>(current_task(), o.task_flags).unwrap_or(0);
    let request_flags = tp_field::<u32>(ctx, o.pl_flags).unwrap_or(0);
    released(&key(), release_kind(task_flags, request_flags))
}

/// How a lock was released, from the releasing task's flags and the unlock request's.
pub(super) fn release_kind(task_flags: u32, request_flags: u32) -> u32 {
    if task_flags & PF_EXITING != 0 {
        kind::RELEASE_EXIT
    } else if request_flags & FL_CLOSE != 0 {
        // `locks_remove_posix`, which every close of a locked file (and the last of an OFD-locked
        // one) runs, marks its unlock request so.
        kind::RELEASE_CLOSE
    } else {
        kind::RELEASE_UNLOCK
    }
}

/// Event mode: the lock `key` was released by the current task, as `release` (a `kind`) says;
/// sends the release if the lock was seen being taken.
pub(super) fn released(key: &HeldKey, release: u32) -> Outcome {
    HELD.remove(key).map_err(|_| Miss::Ignored)?;
    let pid_tgid = bpf_get_current_pid_tgid();
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
