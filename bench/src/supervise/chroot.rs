//! Running a program of another Debian's rootfs (podman 5.8 from sid) on this host: chrooted, in a
//! mount namespace of its own where /proc, /sys, /dev, a /run of its own and the run's own directory
//! are mounted. The mounts live and die with that namespace, so nothing is left mounted on the host when
//! the program exits, fails, or is killed along with lockbench.
//!
//! The run's directory is bound at the same path inside the rootfs, so every path (stores, images,
//! the locks the tracer reports) is the same inside and outside.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};

/// A rootfs to run programs from.
#[derive(Debug, Clone)]
pub struct RootFs {
    root: PathBuf,
    /// Bound on the rootfs's /run, the same for every program run: podman keeps its `alive` file
    /// there and, finding none, believes the machine rebooted and refreshes all its state.
    run: Option<PathBuf>,
}

/// One mount(2) call, its strings made before fork (the child may not allocate).
struct Mount {
    source: CString,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{} contains a NUL byte", path.display())))
}

impl RootFs {
    /// The rootfs at `root`, which must hold `program` (a path inside it, e.g. `/usr/bin/podman`).
    pub fn open(root: &Path, program: &str) -> Result<RootFs> {
        let root = root
            .canonicalize()
            .with_context(|| format!("rootfs {}", root.display()))?;
        let inside = root.join(program.trim_start_matches('/'));
        if !inside.is_file() {
            return Err(Error::Invalid(format!(
                "{} has no {program}",
                root.display()
            )));
        }
        Ok(RootFs { root, run: None })
    }

    /// Bind `dir` (created if needed) on the rootfs's /run for every program run from now on,
    /// instead of a tmpfs of its own per program.
    pub fn with_run_dir(mut self, dir: &Path) -> Result<RootFs> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        self.run = Some(dir.to_path_buf());
        Ok(self)
    }

    /// Where the host sees the rootfs's `path`.
    pub fn inside(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// `program` of the rootfs, run chrooted with `shared` (an absolute host directory) bound at the
    /// same path, in `cwd` (under `shared`).
    pub fn command(&self, program: &str, shared: &Path, cwd: &Path) -> Result<Command> {
        let inside = |p: &Path| self.inside(p);
        std::fs::create_dir_all(inside(shared))
            .with_context(|| format!("creating {} in the rootfs", shared.display()))?;
        let bind = |source: &Path, recursive: bool| -> Result<Mount> {
            Ok(Mount {
                source: cstring(source)?,
                target: cstring(&inside(source))?,
                fstype: None,
                flags: libc::MS_BIND | if recursive { libc::MS_REC } else { 0 },
            })
        };
        let mounts = [
            bind(Path::new("/proc"), true)?,
            bind(Path::new("/sys"), true)?,
            bind(Path::new("/dev"), true)?,
            match &self.run {
                Some(dir) => Mount {
                    source: cstring(dir)?,
                    target: cstring(&inside(Path::new("/run")))?,
                    fstype: None,
                    flags: libc::MS_BIND,
                },
                None => Mount {
                    source: CString::from(c"tmpfs"),
                    target: cstring(&inside(Path::new("/run")))?,
                    fstype: Some(CString::from(c"tmpfs")),
                    flags: 0,
                },
            },
            bind(shared, false)?,
        ];
        let root = cstring(&self.root)?;
        let cwd = cstring(cwd)?;
        let mut cmd = Command::new(program);
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("PODMAN_IGNORE_CGROUPSV1_WARNING", "1");
        // SAFETY: the closure runs in the forked child before exec and only makes syscalls on
        // strings allocated before the fork (no allocation, no locks), which is what pre_exec asks.
        unsafe {
            cmd.pre_exec(move || enter(&mounts, &root, &cwd));
        }
        Ok(cmd)
    }
}

/// In the child: a private mount namespace, the mounts, then chroot and chdir.
fn enter(mounts: &[Mount], root: &CString, cwd: &CString) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: plain syscalls on NUL-terminated strings that outlive the calls; null pointers
    // where mount(2) allows them.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        // Private, so nothing mounted below propagates back to the host's namespace.
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for m in mounts {
            check(libc::mount(
                m.source.as_ptr(),
                m.target.as_ptr(),
                m.fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
                m.flags,
                std::ptr::null(),
            ))?;
        }
        check(libc::chroot(root.as_ptr()))?;
        check(libc::chdir(cwd.as_ptr()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rootfs_without_the_program_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = RootFs::open(dir.path(), "/usr/bin/podman").unwrap_err();
        assert!(err.to_string().contains("has no /usr/bin/podman"), "{err}");
        let err = RootFs::open(&dir.path().join("nope"), "/usr/bin/podman").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
