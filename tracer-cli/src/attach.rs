//! Attach modes and the fallback between them, in one place.
//!
//! Event mode: fentry/fexit on `fcntl_setlk` is preferred for lock calls (what the original bpftrace
//! script used; one hook for every lock call, no fd-table walk). Where the kernel refuses BPF
//! trampolines (ftrace restricted, as on this project's CI machines) the syscall tracepoints do the
//! same job. Releases come from the `filelock:posix_lock_inode` tracepoint: its BTF form (typed
//! arguments, no record to build), else its classic one.
//!
//! Summary mode hooks only the kernel's lock code, through the BTF tracepoints
//! `filelock:posix_lock_inode` and `filelock:fcntl_setlk`: no syscall hook, which would put every
//! syscall of the machine on the slow path while attached.

use std::{fmt, io};

use aya::{
    Btf, BtfError, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, Program, ProgramError, TracePoint},
    sys::SyscallError,
};

use crate::{Error, kernel};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Fentry,
    Tracepoint,
    /// Summary mode's BTF tracepoints on the kernel's lock code; not a choice of `--attach`.
    TpBtf,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Fentry => "fentry",
            AttachMode::Tracepoint => "tracepoint",
            AttachMode::TpBtf => "tp_btf",
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
    /// Classic tracepoints for every hook (releases too).
    Tracepoint,
}

/// The step of putting a program into the kernel that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Load,
    Attach,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Load => "load",
            Step::Attach => "attach",
        })
    }
}

/// Why a hook cannot be used here. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The embedded object lacks a program: a build mismatch, not the kernel's doing.
    #[error("program {0} missing from the eBPF object")]
    ProgramMissing(&'static str),
    /// The embedded object's program has another type than the hook needs (also a build mismatch).
    #[error("program {0} in the eBPF object is not of the expected type")]
    ProgramType(&'static str),
    #[error("no kernel BTF: {0}")]
    NoBtf(BtfError),
    #[error("this kernel has no tracepoint {category}:{name}")]
    NoTracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// EPERM or EACCES without a verifier complaint: what a restricted BPF trampoline or ftrace
    /// looks like.
    #[error(
        "the kernel refused to {step} {program}: {errno} (BPF trampolines or ftrace restricted here)"
    )]
    Refused {
        step: Step,
        program: &'static str,
        errno: io::Error,
    },
    /// The verifier read the program and turned it down; `reason` is the line of its log that says why.
    #[error("the verifier rejected {program}: {reason} ({errno})")]
    Rejected {
        program: &'static str,
        errno: io::Error,
        reason: String,
    },
    #[error("cannot {step} {program}: {}", one_line(.error))]
    Failed {
        step: Step,
        program: &'static str,
        error: ProgramError,
    },
}

impl AttachError {
    /// Whether the kernel is the reason (another attach mode may work), rather than an object
    /// that does not match this build.
    pub fn is_kernel_side(&self) -> bool {
        !matches!(
            self,
            AttachError::ProgramMissing(_) | AttachError::ProgramType(_)
        )
    }

    /// Sorts what aya reports by what the kernel said: its errno, and the verifier log if any.
    fn from_program(step: Step, program: &'static str, error: ProgramError) -> Self {
        match error {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                match Verdict::of(&io_error, &log) {
                    Verdict::Rejected(reason) => AttachError::Rejected {
                        program,
                        errno: io_error,
                        reason: reason.to_owned(),
                    },
                    Verdict::Refused => AttachError::Refused {
                        step,
                        program,
                        errno: io_error,
                    },
                    Verdict::Failed => AttachError::Failed {
                        step,
                        program,
                        error: ProgramError::LoadError {
                            io_error,
                            verifier_log,
                        },
                    },
                }
            }
            ProgramError::SyscallError(SyscallError { io_error, .. })
            | ProgramError::IOError(io_error)
                if Verdict::of(&io_error, "") == Verdict::Refused =>
            {
                AttachError::Refused {
                    step,
                    program,
                    errno: io_error,
                }
            }
            error => AttachError::Failed {
                step,
                program,
                error,
            },
        }
    }
}

/// What the kernel's answer to a load or attach means.
#[derive(Debug, PartialEq, Eq)]
enum Verdict<'a> {
    /// The verifier read the program and said why not (the line given).
    Rejected(&'a str),
    /// EPERM or EACCES with nothing from the verifier: a policy refused it.
    Refused,
    Failed,
}

impl<'a> Verdict<'a> {
    fn of(errno: &io::Error, verifier_log: &'a str) -> Self {
        match verifier_reason(verifier_log) {
            Some(reason) => Verdict::Rejected(reason),
            None if matches!(errno.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                Verdict::Refused
            }
            None => Verdict::Failed,
        }
    }
}

/// The verifier's own explanation: the last line of its log before the statistics it appends.
fn verifier_reason(log: &str) -> Option<&str> {
    log.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with("processed ") && !l.starts_with("verification time"))
        .last()
}

/// A preferred attach mode that `--attach auto` skipped, and why.
#[derive(Debug)]
pub struct Skipped {
    pub mode: AttachMode,
    pub error: AttachError,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.mode, self.error)
    }
}

/// Attaches the lock-call hooks in the first mode that really works, plus the release (and, when
/// following a process tree, fork and exit) hooks. Returns the mode used and the modes skipped.
/// In summary mode (`summary`) the kernel's lock code is hooked instead and `request` is moot.
pub fn attach(
    ebpf: &mut Ebpf,
    request: AttachRequest,
    follow_forks: bool,
    summary: bool,
) -> Result<(AttachMode, Vec<Skipped>), Error> {
    let (mode, skipped) = if summary {
        let mode = AttachMode::TpBtf;
        attach_lock_code(ebpf).map_err(|error| Error::Attach { mode, error })?;
        (mode, Vec::new())
    } else {
        attach_event_hooks(ebpf, request)?
    };
    if follow_forks {
        attach_pid_hooks(ebpf).map_err(|error| Error::Attach { mode, error })?;
    }
    Ok((mode, skipped))
}

fn attach_event_hooks(
    ebpf: &mut Ebpf,
    request: AttachRequest,
) -> Result<(AttachMode, Vec<Skipped>), Error> {
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
            // Only the kernel's refusals move on to the next mode; a broken object is reported.
            Err(error) if order.len() == 1 || !error.is_kernel_side() => {
                return Err(Error::Attach { mode, error });
            }
            Err(error) => skipped.push(Skipped { mode, error }),
        }
    }
    let Some(mode) = chosen else {
        return Err(Error::NoAttachMode(skipped));
    };
    // `--attach tracepoint` keeps to classic tracepoints throughout.
    let btf = match request {
        AttachRequest::Tracepoint => None,
        _ => Some(attach_btf_tracepoint(ebpf, RELEASES, "posix_lock_inode")),
    };
    let released = match btf {
        Some(Err(error)) if error.is_kernel_side() => None,
        other => other,
    }
    .unwrap_or_else(|| attach_classic_lock_code(ebpf));
    released.map_err(|error| Error::Attach { mode, error })?;
    Ok((mode, skipped))
}

/// The BTF hook on `filelock:posix_lock_inode`: releases, and in summary mode every attempt.
const RELEASES: &str = "filelock_posix_lock_inode";

/// Event mode's hook on the kernel's lock code in its classic form (`--attach tracepoint`, or where
/// BTF tracepoints are refused).
pub fn attach_classic_lock_code(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    attach_tracepoint(ebpf, "posix_lock_inode", "filelock", "posix_lock_inode")
}

/// The BTF hooks on the kernel's lock code: summary mode's only hooks, event mode's release and
/// description hook (it attaches the first alone).
pub fn attach_lock_code(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    attach_btf_tracepoint(ebpf, RELEASES, "posix_lock_inode")?;
    attach_btf_tracepoint(ebpf, "filelock_fcntl_setlk", "fcntl_setlk")
}

/// The hooks that keep the pid filter in step with the process tree (`--pid`, `-- COMMAND`).
pub fn attach_pid_hooks(ebpf: &mut Ebpf) -> Result<(), AttachError> {
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
pub fn attach_lock_calls(ebpf: &mut Ebpf, mode: AttachMode) -> Result<(), AttachError> {
    const ENTRY: &str = "fcntl_setlk_entry";
    const EXIT: &str = "fcntl_setlk_exit";
    match mode {
        AttachMode::Fentry => {
            let btf = Btf::from_sys_fs().map_err(AttachError::NoBtf)?;
            // Load both before attaching either: a lone entry hook left attached after a failed
            // exit hook would race the tracepoint fallback for the same calls.
            let entry: &mut FEntry = program(ebpf, ENTRY)?;
            entry
                .load("fcntl_setlk", &btf)
                .map_err(|e| AttachError::from_program(Step::Load, ENTRY, e))?;
            let exit: &mut FExit = program(ebpf, EXIT)?;
            exit.load("fcntl_setlk", &btf)
                .map_err(|e| AttachError::from_program(Step::Load, EXIT, e))?;
            let exit_link = exit
                .attach()
                .map_err(|e| AttachError::from_program(Step::Attach, EXIT, e))?;
            let entry: &mut FEntry = program(ebpf, ENTRY)?;
            if let Err(e) = entry.attach() {
                let exit: &mut FExit = program(ebpf, EXIT)?;
                let _ = exit.detach(exit_link);
                return Err(AttachError::from_program(Step::Attach, ENTRY, e));
            }
            Ok(())
        }
        AttachMode::Tracepoint => {
            attach_tracepoint(ebpf, "sys_enter_fcntl", "syscalls", "sys_enter_fcntl")?;
            attach_tracepoint(ebpf, "sys_exit_fcntl", "syscalls", "sys_exit_fcntl")
        }
        AttachMode::TpBtf => attach_lock_code(ebpf),
    }
}

fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    prog: &'static str,
    tracepoint: &'static str,
) -> Result<(), AttachError> {
    let btf = Btf::from_sys_fs().map_err(AttachError::NoBtf)?;
    let tp: &mut BtfTracePoint = program(ebpf, prog)?;
    tp.load(tracepoint, &btf)
        .map_err(|e| AttachError::from_program(Step::Load, prog, e))?;
    tp.attach()
        .map_err(|e| AttachError::from_program(Step::Attach, prog, e))?;
    Ok(())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    prog: &'static str,
    category: &'static str,
    name: &'static str,
) -> Result<(), AttachError> {
    if !kernel::has_tracepoint(category, name) {
        return Err(AttachError::NoTracepoint { category, name });
    }
    let tp: &mut TracePoint = program(ebpf, prog)?;
    tp.load()
        .map_err(|e| AttachError::from_program(Step::Load, prog, e))?;
    tp.attach(category, name)
        .map_err(|e| AttachError::from_program(Step::Attach, prog, e))?;
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, AttachError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(AttachError::ProgramMissing(name))?
        .try_into()
        .map_err(|_| AttachError::ProgramType(name))
}

/// One line for an error chain (aya's messages put the errno in the source).
pub(crate) fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn eperm_or_eacces_without_a_verifier_log_is_a_refusal() {
        assert_eq!(Verdict::of(&errno(libc::EPERM), ""), Verdict::Refused);
        assert_eq!(Verdict::of(&errno(libc::EACCES), "\n"), Verdict::Refused);
        assert_eq!(Verdict::of(&errno(libc::EINVAL), ""), Verdict::Failed);
    }

    #[test]
    fn a_verifier_log_names_the_rejection_whatever_the_errno() {
        let log = "0: R1=ctx() R10=fp0\n1: (79) r2 = *(u64 *)(r1 +0)\n\
                   R1 invalid mem access 'scalar'\n\
                   processed 12 insns (limit 1000000) max_states_per_insn 0\n";
        let want = Verdict::Rejected("R1 invalid mem access 'scalar'");
        assert_eq!(Verdict::of(&errno(libc::EACCES), log), want);
        assert_eq!(Verdict::of(&errno(libc::EPERM), log), want);
    }

    #[test]
    fn a_refused_attach_syscall_is_told_apart_from_other_failures() {
        let syscall = |code| {
            ProgramError::SyscallError(SyscallError {
                call: "bpf_link_create",
                io_error: errno(code),
            })
        };
        let refused =
            AttachError::from_program(Step::Attach, "fcntl_setlk_entry", syscall(libc::EPERM));
        assert!(matches!(
            refused,
            AttachError::Refused {
                step: Step::Attach,
                ..
            }
        ));
        assert!(
            refused
                .to_string()
                .contains("refused to attach fcntl_setlk_entry"),
            "{refused}"
        );
        let failed =
            AttachError::from_program(Step::Attach, "fcntl_setlk_entry", syscall(libc::ENOENT));
        assert!(matches!(failed, AttachError::Failed { .. }), "{failed}");
        assert!(!failed.to_string().contains('\n'), "one line: {failed}");
        assert!(failed.is_kernel_side());
        assert!(!AttachError::ProgramMissing("x").is_kernel_side());
    }
}
