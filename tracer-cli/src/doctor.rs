//! `locktrace doctor`: what this kernel allows and which attach mode `record` would use, with reasons.

use std::{fmt, path::Path};

use tracer_common::{Config, option};

use crate::{
    attach::{self, AttachError, AttachMode},
    kernel::{self, KernelError},
    tracer,
};

pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

pub struct Diagnosis {
    pub checks: Vec<Check>,
    /// The mode `record --attach auto` would pick, if any.
    pub mode: Option<AttachMode>,
}

impl Diagnosis {
    /// 0 when `record` can trace here, 1 when it cannot.
    pub fn exit_code(&self) -> i32 {
        if self.mode.is_some() { 0 } else { 1 }
    }
}

/// One line per check, then the verdict.
impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let mark = if c.ok { "ok" } else { "no" };
            writeln!(f, "{mark:<4} {:<12} {}", c.name, c.detail)?;
        }
        match self.mode {
            Some(mode) => writeln!(f, "record would attach with: {mode}"),
            None => writeln!(
                f,
                "record cannot trace on this machine (see the lines marked no)"
            ),
        }
    }
}

/// A check from a trial load-and-attach: its error, or `worked` when it worked.
fn trial(name: &'static str, result: Result<(), AttachError>, worked: &str) -> Check {
    Check {
        name,
        ok: result.is_ok(),
        detail: result.map_or_else(|e| e.to_string(), |()| worked.to_owned()),
    }
}

pub fn diagnose() -> Diagnosis {
    let mut checks = Vec::new();
    let mut check = |name, ok, detail: String| checks.push(Check { name, ok, detail });
    check("kernel", true, kernel::release());
    let privileged = tracer::privileged();
    check(
        "privileges",
        privileged,
        if privileged {
            "root or CAP_BPF+CAP_PERFMON".into()
        } else {
            crate::Error::Privileges.to_string()
        },
    );
    match kernel::ensure_tracefs() {
        Ok(true) => check(
            "tracefs",
            true,
            format!("mounted it at {}", kernel::TRACEFS),
        ),
        Ok(false) => check("tracefs", true, format!("mounted at {}", kernel::TRACEFS)),
        Err(e) => check("tracefs", false, e.to_string()),
    }
    let btf = Path::new(kernel::BTF_PATH).exists();
    check(
        "btf",
        btf,
        if btf {
            kernel::BTF_PATH.into()
        } else {
            KernelError::NoBtf.to_string()
        },
    );
    let offsets = kernel::offsets();
    match &offsets {
        Ok(_) => check(
            "offsets",
            true,
            "struct and tracepoint offsets read from this kernel".into(),
        ),
        Err(e) => check("offsets", false, e.to_string()),
    }
    let tracefs_readable = std::fs::read_dir(kernel::TRACEFS).is_ok();
    for (category, name) in [
        ("syscalls", "sys_enter_fcntl"),
        ("syscalls", "sys_exit_fcntl"),
        ("filelock", "posix_lock_inode"),
        ("filelock", "fcntl_setlk"),
        ("sched", "sched_process_fork"),
        ("sched", "sched_process_exit"),
        ("sched", "sched_process_exec"),
    ] {
        let ok = kernel::has_tracepoint(category, name);
        let why = match (ok, tracefs_readable) {
            (true, _) => "",
            (false, true) => " missing",
            (false, false) => " not visible (tracefs not readable)",
        };
        checks.push(Check {
            name: "tracepoint",
            ok,
            detail: format!("{category}:{name}{why}"),
        });
    }
    let mut mode = None;
    if let (true, Ok(offsets)) = (privileged, offsets) {
        let config = Config {
            offsets,
            ..Default::default()
        };
        // One object for every trial: the hooks are separate programs, and nothing reads the events.
        let mut ebpf = match tracer::load(&config, Default::default()) {
            Ok(ebpf) => {
                checks.push(Check {
                    name: "ringbuf",
                    ok: true,
                    detail: "object loaded, ring buffer and maps created".into(),
                });
                ebpf
            }
            Err(e) => {
                checks.push(Check {
                    name: "ringbuf",
                    ok: false,
                    detail: e.to_string(),
                });
                return Diagnosis { checks, mode };
            }
        };
        checks.push(trial(
            "tp_btf",
            attach::attach_lock_code(&mut ebpf),
            "BTF tracepoints on the kernel's lock code loaded and attached (trial)",
        ));
        for (candidate, name) in [
            (AttachMode::Fentry, "fentry"),
            (AttachMode::Tracepoint, "tracepoints"),
        ] {
            let mut result = attach::attach_lock_calls(&mut ebpf, candidate);
            if result.is_ok() && mode.is_none() {
                mode = Some(candidate);
            }
            if candidate == AttachMode::Tracepoint {
                // `--attach tracepoint` also takes the classic hook on the kernel's lock code.
                result = result.and_then(|()| attach::attach_classic_lock_code(&mut ebpf));
            }
            checks.push(trial(name, result, "loaded and attached (trial)"));
        }
        // Its own object: the verifier checks only the code the configuration leaves reachable.
        let config = Config {
            options: option::SUMMARY,
            ..config
        };
        let capture = tracer::Capture {
            summary: true,
            ..Default::default()
        };
        let summary = tracer::load(&config, capture)
            .map_err(|e| e.to_string())
            .and_then(|mut ebpf| attach::attach_lock_code(&mut ebpf).map_err(|e| e.to_string()));
        checks.push(Check {
            name: "summary",
            ok: summary.is_ok(),
            detail: summary.map_or_else(
                |e| e,
                |()| "--summary's hooks loaded and attached (trial)".into(),
            ),
        });
        checks.push(trial(
            "pid hooks",
            attach::attach_pid_hooks(&mut ebpf),
            "fork/exit/exec hooks loaded and attached (--pid, -- COMMAND)",
        ));
    }
    Diagnosis { checks, mode }
}
