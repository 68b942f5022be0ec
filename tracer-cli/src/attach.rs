//! Attach modes and the fallback between them, in one place.
//!
//! fentry/fexit on `fcntl_setlk` is preferred (what the original bpftrace script used; one hook for
//! every lock call, no fd-table walk). Where the kernel refuses BPF trampolines (ftrace restricted,
//! as on this project's CI machines) the syscall tracepoints do the same job. Releases always come
//! from the `filelock:posix_lock_inode` tracepoint.

use std::fmt;

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, TracePoint},
};

use crate::{Error, kernel};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Fentry,
    Tracepoint,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Fentry => "fentry",
            AttachMode::Tracepoint => "tracepoint",
        })
    }
}

/// What the user asked for with `--attach`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachRequest {
    /// fentry if the kernel allows it, else tracepoints.
    #[default]
    Auto,
    Fentry,
    Tracepoint,
}

/// Attaches the lock-call hooks in the first mode that really works, plus the release (and, when
/// following a process tree, fork and exit) hooks. Returns the mode used and why earlier modes were skipped.
pub fn attach(
    ebpf: &mut Ebpf,
    request: AttachRequest,
    follow_forks: bool,
) -> Result<(AttachMode, Vec<String>), Error> {
    let order: &[AttachMode] = match request {
        AttachRequest::Auto => &[AttachMode::Fentry, AttachMode::Tracepoint],
        AttachRequest::Fentry => &[AttachMode::Fentry],
        AttachRequest::Tracepoint => &[AttachMode::Tracepoint],
    };
    let mut skipped = Vec::new();
    let mut chosen = None;
    for &mode in order {
        match attach_lock_calls(ebpf, mode) {
            Ok(()) => {
                chosen = Some(mode);
                break;
            }
            Err(reason) => {
                if order.len() == 1 {
                    return Err(Error::Attach { mode, reason });
                }
                skipped.push(format!("{mode}: {reason}"));
            }
        }
    }
    let mode = chosen.ok_or_else(|| Error::Attach {
        mode: AttachMode::Tracepoint,
        reason: skipped.join("; "),
    })?;
    attach_tracepoint(ebpf, "posix_lock_inode", "filelock", "posix_lock_inode")
        .map_err(|reason| Error::Attach { mode, reason })?;
    if follow_forks {
        attach_pid_hooks(ebpf).map_err(|reason| Error::Attach { mode, reason })?;
    }
    Ok((mode, skipped))
}

/// The hooks that keep the pid filter in step with the process tree (`--pid`, `-- COMMAND`).
pub fn attach_pid_hooks(ebpf: &mut Ebpf) -> Result<(), String> {
    for hook in [
        "sched_process_fork",
        "sched_process_exit",
        "sched_process_exec",
    ] {
        attach_tracepoint(ebpf, hook, "sched", hook)?;
    }
    Ok(())
}

/// Tries to load and attach the lock-call hooks of `mode`; the error says why it is unavailable.
pub fn attach_lock_calls(ebpf: &mut Ebpf, mode: AttachMode) -> Result<(), String> {
    match mode {
        AttachMode::Fentry => {
            let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
            // Load both before attaching either: a lone entry hook left attached after a failed
            // exit hook would race the tracepoint fallback for the same calls.
            let entry: &mut FEntry = program(ebpf, "fcntl_setlk_entry")?;
            entry.load("fcntl_setlk", &btf).map_err(|e| describe(&e))?;
            let exit: &mut FExit = program(ebpf, "fcntl_setlk_exit")?;
            exit.load("fcntl_setlk", &btf).map_err(|e| describe(&e))?;
            let exit_link = exit.attach().map_err(|e| describe(&e))?;
            let entry: &mut FEntry = program(ebpf, "fcntl_setlk_entry")?;
            if let Err(e) = entry.attach() {
                let exit: &mut FExit = program(ebpf, "fcntl_setlk_exit")?;
                let _ = exit.detach(exit_link);
                return Err(describe(&e));
            }
            Ok(())
        }
        AttachMode::Tracepoint => {
            attach_tracepoint(ebpf, "sys_enter_fcntl", "syscalls", "sys_enter_fcntl")?;
            attach_tracepoint(ebpf, "sys_exit_fcntl", "syscalls", "sys_exit_fcntl")
        }
    }
}

/// Whether BTF raw tracepoints load and attach here (reported by `doctor`).
pub fn probe_tp_btf(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    let prog: &mut BtfTracePoint = program(ebpf, "probe_tp_btf")?;
    prog.load("sched_process_fork", &btf)
        .map_err(|e| describe(&e))?;
    prog.attach().map_err(|e| describe(&e))?;
    Ok(())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    prog: &str,
    category: &str,
    name: &str,
) -> Result<(), String> {
    if !kernel::has_tracepoint(category, name) {
        return Err(format!("this kernel has no tracepoint {category}:{name}"));
    }
    let tp: &mut TracePoint = program(ebpf, prog)?;
    tp.load().map_err(|e| describe(&e))?;
    tp.attach(category, name).map_err(|e| describe(&e))?;
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the eBPF object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| describe(&e))
}

/// One line for an aya error chain; an empty verifier log on EPERM is what a refused trampoline
/// looks like, so say that instead of printing nothing.
fn describe(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    if line.contains("Operation not permitted") || line.contains("EPERM") {
        line.push_str(" (the kernel refused it: BPF trampolines or ftrace restricted here)");
    }
    line.lines().next().unwrap_or_default().to_owned()
}
