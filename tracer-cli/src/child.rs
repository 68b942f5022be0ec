//! The traced command: forked, but held before `exec` until the tracer is attached, so its first
//! lock is seen. (`std::process::Command` cannot do this: `spawn` itself waits for the `exec`.)

use std::{ffi::CString, fs::File, io::Write, os::fd::FromRawFd, path::Path};

/// Why the command could not be started or waited for; each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot run {0}: no such executable")]
    NotExecutable(String),
    #[error("argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    #[error("creating a pipe: {0}")]
    Pipe(std::io::Error),
    #[error("fork: {0}")]
    Fork(std::io::Error),
    #[error("starting the command: {0}")]
    Start(std::io::Error),
    #[error("waiting for the command: {0}")]
    Wait(std::io::Error),
}

pub struct HeldChild {
    pid: libc::pid_t,
    /// Writing to it lets the child go on to `exec`.
    gate: Option<File>,
}

impl HeldChild {
    /// Forks `program` with `args`, held before its `exec` until [`HeldChild::release`].
    pub fn spawn(program: &str, args: &[String]) -> Result<HeldChild, ChildError> {
        if !runnable(program) {
            return Err(ChildError::NotExecutable(program.to_owned()));
        }
        let argv: Vec<CString> = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .map(|a| CString::new(a).map_err(|_| ChildError::NulInArgument(a.to_owned())))
            .collect::<Result<_, _>>()?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(ChildError::Pipe(std::io::Error::last_os_error()));
        }
        let (read_end, write_end) = (fds[0], fds[1]);
        // SAFETY: the child only calls async-signal-safe functions (close, read, execvp, write,
        // _exit) on memory prepared before the fork, so the state other threads left is not touched.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(ChildError::Fork(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: in the child: the fds are this process's own, buf is a writable local of the
            // length passed, argv_ptrs is a NULL-terminated array of C strings that outlive the
            // exec, and msg is a static buffer of the length passed.
            unsafe {
                libc::close(write_end);
                let mut buf = [0u8; 2];
                // Blocks until the tracer is attached (or the parent died: EOF, run anyway).
                libc::read(read_end, buf.as_mut_ptr().cast(), buf.len());
                libc::execvp(argv_ptrs[0], argv_ptrs.as_ptr());
                let msg = b"locktrace: cannot run the command\n";
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(127);
            }
        }
        // SAFETY: read_end is our open descriptor from pipe2 and nothing else owns it.
        unsafe { libc::close(read_end) };
        // SAFETY: write_end is our open descriptor from pipe2; the File becomes its only owner.
        let gate = unsafe { File::from_raw_fd(write_end) };
        Ok(HeldChild {
            pid,
            gate: Some(gate),
        })
    }

    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the command `exec`.
    pub fn release(&mut self) -> Result<(), ChildError> {
        if let Some(mut gate) = self.gate.take() {
            gate.write_all(b"go").map_err(ChildError::Start)?;
        }
        Ok(())
    }

    pub fn kill(&mut self, signal: libc::c_int) {
        // SAFETY: kill only takes numbers; pid is our own unreaped child, so it names no other process.
        unsafe { libc::kill(self.pid, signal) };
    }

    /// The exit code (128 + signal for a killed command) once it has exited.
    pub fn try_wait(&mut self, block: bool) -> Result<Option<i32>, ChildError> {
        let mut status = 0;
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: status is a writable local int, as waitpid expects.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, flags) };
        if rc < 0 {
            return Err(ChildError::Wait(std::io::Error::last_os_error()));
        }
        if rc == 0 {
            return Ok(None);
        }
        Ok(Some(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }))
    }
}

/// Whether `program` names an executable, directly or through PATH (checked before forking, so a
/// typo is one clear error instead of a traced failure).
fn runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| executable(&dir.join(program)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_waits_for_release_and_its_exit_code_comes_back() {
        let mut child = HeldChild::spawn("sh", &args(&["-c", "exit 3"])).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(child.try_wait(false).unwrap(), None, "held before exec");
        child.release().unwrap();
        assert_eq!(child.try_wait(true).unwrap(), Some(3));
    }

    #[test]
    fn a_killed_command_exits_with_128_plus_the_signal() {
        let mut child = HeldChild::spawn("sleep", &args(&["10"])).unwrap();
        child.kill(libc::SIGKILL);
        assert_eq!(child.try_wait(true).unwrap(), Some(128 + libc::SIGKILL));
    }

    #[test]
    fn unrunnable_commands_are_refused_before_forking() {
        let err = HeldChild::spawn("locktrace-no-such-program", &[])
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "cannot run locktrace-no-such-program: no such executable"
        );
        let err = HeldChild::spawn("sh", &args(&["a\0b"])).err().unwrap();
        assert!(matches!(err, ChildError::NulInArgument(_)), "{err}");
    }
}
