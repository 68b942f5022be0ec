//! Directory resolution without following symlinks, replacing what a name already holds, and applying
//! owners, xattrs, modes and times to what was created.

use std::ffi::{CStr, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::header::Meta;
use crate::error::{IoContext, StoreError};
use crate::sys::{self, cstring, cvt};

/// A directory whose mode and mtime are set after extraction (children would change the mtime, and a
/// read-only mode would stop us writing the children).
pub(super) struct DirMeta {
    pub comps: Vec<OsString>,
    pub mode: u32,
    pub mtime: u64,
}

/// The layer directory being filled: every lookup starts at its fd and never follows a symlink.
pub(super) struct Tree {
    pub root: Rc<OwnedFd>,
    /// Whether owners are applied (only root can).
    pub chown: bool,
    /// The last parent directory resolved; consecutive entries usually share it.
    cached: Option<(Vec<OsString>, Rc<OwnedFd>)>,
    /// Directories whose mode and mtime are applied at the end.
    pub dirs: Vec<DirMeta>,
}

impl Tree {
    pub fn new(root: OwnedFd) -> Self {
        Tree {
            root: Rc::new(root),
            // SAFETY: geteuid has no preconditions.
            chown: unsafe { libc::geteuid() } == 0,
            cached: None,
            dirs: Vec::new(),
        }
    }

    /// The fd of directory `comps` under the root, creating missing directories (0755) like `tar -x`.
    pub fn dir_fd(&mut self, comps: &[OsString], display: &str) -> Result<Rc<OwnedFd>, StoreError> {
        if comps.is_empty() {
            return Ok(Rc::clone(&self.root));
        }
        if let Some((path, fd)) = &self.cached
            && path == comps
        {
            return Ok(Rc::clone(fd));
        }
        // Descending from the cached directory saves re-opening every ancestor.
        let (start, skip) = match &self.cached {
            Some((path, fd)) if comps.starts_with(path) => (Rc::clone(fd), path.len()),
            _ => (Rc::clone(&self.root), 0),
        };
        let fd = self.walk_from(start, comps, skip, true, display)?;
        self.cached = Some((comps.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Opens `comps` one component at a time with `O_NOFOLLOW`, so no symlink is ever traversed.
    pub fn walk(
        &self,
        comps: &[OsString],
        create: bool,
        display: &str,
    ) -> Result<Rc<OwnedFd>, StoreError> {
        self.walk_from(Rc::clone(&self.root), comps, 0, create, display)
    }

    /// [`Tree::walk`] starting at `start`, the already-open directory `comps[..skip]`.
    fn walk_from(
        &self,
        start: Rc<OwnedFd>,
        comps: &[OsString],
        skip: usize,
        create: bool,
        display: &str,
    ) -> Result<Rc<OwnedFd>, StoreError> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let mut cur = start;
        for (i, c) in comps.iter().enumerate().skip(skip) {
            let prefix = || PathBuf::from_iter(&comps[..=i]).display().to_string();
            let fd = match sys::openat(cur.as_raw_fd(), c, flags, 0) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    let name = cstring(c).map_err(|e| StoreError::io(display.to_string(), e))?;
                    // SAFETY: name is NUL-terminated; cur is an open directory fd.
                    let r = cvt(unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) });
                    match r {
                        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                            return Err(StoreError::io(format!("creating {}", prefix()), e));
                        }
                        _ => {}
                    }
                    let fd = sys::openat(cur.as_raw_fd(), c, flags, 0)
                        .ctx(|| format!("opening {}", prefix()))?;
                    // SAFETY: fd is an open directory.
                    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), 0o755) })
                        .ctx(|| format!("chmod {}", prefix()))?;
                    fd
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    let is_link = lstat_at(cur.as_raw_fd(), c)
                        .is_ok_and(|m| m & libc::S_IFMT == libc::S_IFLNK);
                    return Err(if is_link {
                        StoreError::UnsafeEntry {
                            path: display.to_string(),
                            reason: format!("{} is a symlink; refusing to follow it", prefix()),
                        }
                    } else {
                        StoreError::Archive(format!("{display}: {} is not a directory", prefix()))
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    return Err(StoreError::Archive(format!(
                        "{display}: {} does not exist",
                        prefix()
                    )));
                }
                Err(e) => return Err(StoreError::io(format!("opening {}", prefix()), e)),
            };
            cur = Rc::new(fd);
        }
        Ok(cur)
    }

    /// Creates a directory entry with `make`; if the name is taken, removes what is there (later entries win,
    /// as in `tar -x`) and tries once more. Creating first saves a stat per entry in the common case.
    pub fn replace<T>(
        &mut self,
        parent: &OwnedFd,
        name: &CStr,
        meta: &Meta,
        mut make: impl FnMut() -> io::Result<T>,
    ) -> Result<io::Result<T>, StoreError> {
        match make() {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.clear(parent, name, false, meta)?;
                Ok(make())
            }
            r => Ok(r),
        }
    }

    /// Removes whatever is at `parent/name` so a new entry can take its place (later entries win, as in
    /// `tar -x`). Returns true when an existing directory was kept because the new entry is a directory.
    pub fn clear(
        &mut self,
        parent: &OwnedFd,
        name: &CStr,
        keep_dir: bool,
        meta: &Meta,
    ) -> Result<bool, StoreError> {
        let os = OsStr::from_bytes(name.to_bytes());
        let fmt = match lstat_at(parent.as_raw_fd(), os) {
            Ok(m) => m & libc::S_IFMT,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(StoreError::io(format!("inspecting {}", meta.display), e)),
        };
        if fmt == libc::S_IFDIR {
            if keep_dir {
                return Ok(true);
            }
            // The cached parent might live under the removed tree.
            self.cached = None;
            let path = Path::new("/proc/self/fd")
                .join(parent.as_raw_fd().to_string())
                .join(os);
            sys::remove_tree(&path).ctx(|| format!("replacing directory {}", meta.display))?;
        } else {
            // SAFETY: name is NUL-terminated; parent is an open directory fd.
            cvt(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), 0) })
                .ctx(|| format!("replacing {}", meta.display))?;
        }
        Ok(false)
    }

    pub fn fd_owner_xattrs(&self, fd: &OwnedFd, meta: &Meta) -> Result<(), StoreError> {
        if self.chown {
            // SAFETY: fd is open.
            cvt(unsafe { libc::fchown(fd.as_raw_fd(), meta.uid, meta.gid) })
                .ctx(|| format!("chown {}", meta.display))?;
        }
        for (k, v) in &meta.xattrs {
            // SAFETY: k is NUL-terminated; v is readable for its length.
            let r = unsafe {
                libc::fsetxattr(fd.as_raw_fd(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0)
            };
            cvt(r).ctx(|| format!("setting xattr {} on {}", k.to_string_lossy(), meta.display))?;
        }
        Ok(())
    }

    /// Owner, xattrs, then mode (chown clears set-id bits and capabilities, so it goes first).
    pub fn fd_meta(&self, fd: &OwnedFd, meta: &Meta) -> Result<(), StoreError> {
        self.fd_owner_xattrs(fd, meta)?;
        // SAFETY: fd is open.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), meta.mode) })
            .ctx(|| format!("chmod {}", meta.display))?;
        Ok(())
    }

    /// Metadata for entries we cannot open (symlinks, devices), addressed as `parent/name` without following.
    pub fn at_meta(
        &self,
        parent: &OwnedFd,
        name: &CStr,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), StoreError> {
        let dfd = parent.as_raw_fd();
        if self.chown {
            // SAFETY: name is NUL-terminated; dfd is an open directory fd.
            cvt(unsafe {
                libc::fchownat(
                    dfd,
                    name.as_ptr(),
                    meta.uid,
                    meta.gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })
            .ctx(|| format!("chown {}", meta.display))?;
        }
        if !meta.xattrs.is_empty() {
            let proc_path = Path::new("/proc/self/fd")
                .join(dfd.to_string())
                .join(OsStr::from_bytes(name.to_bytes()));
            let proc_path = cstring(proc_path.as_os_str())
                .map_err(|e| StoreError::io(meta.display.clone(), e))?;
            for (k, v) in &meta.xattrs {
                // SAFETY: both strings are NUL-terminated; v is readable for its length.
                let r = unsafe {
                    libc::lsetxattr(
                        proc_path.as_ptr(),
                        k.as_ptr(),
                        v.as_ptr().cast(),
                        v.len(),
                        0,
                    )
                };
                cvt(r)
                    .ctx(|| format!("setting xattr {} on {}", k.to_string_lossy(), meta.display))?;
            }
        }
        if chmod {
            // Device nodes and fifos are never symlinks, so following is harmless here.
            // SAFETY: name is NUL-terminated; dfd is an open directory fd.
            cvt(unsafe { libc::fchmodat(dfd, name.as_ptr(), meta.mode, 0) })
                .ctx(|| format!("chmod {}", meta.display))?;
        }
        let ts = times(meta.mtime);
        // SAFETY: name is NUL-terminated; ts points to two timespecs.
        cvt(unsafe { libc::utimensat(dfd, name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
            .ctx(|| format!("setting times of {}", meta.display))?;
        Ok(())
    }

    /// Applies deferred directory modes and mtimes, deepest last-seen first.
    pub fn finish_dirs(&mut self) -> Result<(), StoreError> {
        self.cached = None;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        for d in std::mem::take(&mut self.dirs).into_iter().rev() {
            let display = PathBuf::from_iter(&d.comps).display().to_string();
            let fd = match d.comps.split_last() {
                None => Rc::clone(&self.root),
                Some((last, dir)) => {
                    // A later entry may have replaced this directory; then its metadata no longer applies.
                    let Ok(parent) = self.walk(dir, false, &display) else {
                        continue;
                    };
                    match sys::openat(parent.as_raw_fd(), last, flags, 0) {
                        Ok(fd) => Rc::new(fd),
                        Err(_) => continue,
                    }
                }
            };
            // SAFETY: fd is an open directory.
            cvt(unsafe { libc::fchmod(fd.as_raw_fd(), d.mode) })
                .ctx(|| format!("chmod {display}"))?;
            set_times_fd(&fd, d.mtime).ctx(|| format!("setting times of {display}"))?;
        }
        Ok(())
    }
}

pub(super) fn times(mtime: u64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

pub(super) fn set_times_fd(fd: &OwnedFd, mtime: u64) -> io::Result<()> {
    let ts = times(mtime);
    // SAFETY: fd is open; ts points to two timespecs.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

fn lstat_at(dir: RawFd, name: &OsStr) -> io::Result<libc::mode_t> {
    let c = cstring(name)?;
    // SAFETY: zeroed stat is a valid out-parameter; c is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st.st_mode)
}

pub(super) fn mknod(
    parent: &OwnedFd,
    name: &CStr,
    fmt: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; parent is an open directory fd.
    cvt(unsafe { libc::mknodat(parent.as_raw_fd(), name.as_ptr(), fmt, dev) }).map(drop)
}
