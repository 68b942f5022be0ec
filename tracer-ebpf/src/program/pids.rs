//! The pid filter's upkeep: children join, exited threads and processes leave.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use aya_log_ebpf::debug;
use tracer_common::filter;

use super::{DONE, Miss, Outcome, config, maps::PIDS, require};
use crate::kernel::{current_task, read_at, tp_field};

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
