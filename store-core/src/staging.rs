//! Staging directories under `overlay/staging/`, each guarded by its own lock file so crash recovery can
//! tell a live one (another process is extracting into it) from a stale one (its owner died).
//!
//! Layout: `staging/<name>.lock` and `staging/<name>/`. The lock is an OFD lock (`F_OFD_SETLK`): unlike
//! POSIX locks it conflicts between fds of the same process and is not dropped when some other fd of the
//! file is closed, so a recovery pass in the same process cannot mistake a live directory for a stale one.
//! Staging locks are never waited for (owners lock fresh files, recovery only tries), so they sit outside
//! the store's lock order.
//!
//! Creation never exposes an unlocked lock file under its final name: the lock file is created as
//! `tmp-<name>.lock`, locked, renamed to `<name>.lock`, and only then is `<name>/` created. Recovery
//! removes `tmp-*` files it can lock (the owner's rename then fails and it starts over), `<name>.lock`
//! files it can lock together with their directory, and directories that have no lock file.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StoreError};
use crate::sys;

/// A live staging directory; removed with its lock file when dropped (after a commit it is empty).
pub struct StagingDir {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: OwnedFd,
}

fn ofd_try_lock(fd: &OwnedFd) -> io::Result<bool> {
    let fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: fd is open; fl is a valid flock with l_pid 0 as OFD locks require.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

impl StagingDir {
    /// Creates and locks a fresh staging directory (mode 0700) under `staging_root`.
    pub fn create(staging_root: &Path) -> Result<StagingDir, StoreError> {
        loop {
            let name = sys::random_hex(16);
            let tmp = staging_root.join(format!("tmp-{name}.lock"));
            let lock_path = staging_root.join(format!("{name}.lock"));
            let dir = staging_root.join(&name);
            let fd = match sys::open(&tmp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                r => r.ctx(|| format!("creating {}", tmp.display()))?,
            };
            // A recovery pass may hold it for a moment and then delete it: start over with a new name.
            if !ofd_try_lock(&fd).ctx(|| format!("locking {}", tmp.display()))? {
                continue;
            }
            match std::fs::rename(&tmp, &lock_path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                r => r.ctx(|| format!("renaming {}", tmp.display()))?,
            }
            let staged = StagingDir {
                dir,
                lock_path,
                _lock: fd,
            };
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&staged.dir)
                .ctx(|| format!("creating {}", staged.dir.display()))?;
            return Ok(staged);
        }
    }

    /// The staging directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        // Best effort: whatever is left is stale once our lock is gone and the next recovery removes it.
        let _ = sys::remove_tree(&self.dir);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Removes stale staging directories and lock files under `staging_root`; live ones (locked by any
/// process, this one included) are left alone. Returns how many entries were removed.
pub fn recover(staging_root: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(staging_root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        r => r.ctx(|| format!("listing {}", staging_root.display()))?,
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.ctx(|| format!("listing {}", staging_root.display()))?;
        let path = entry.path();
        let file_name = entry.file_name();
        let name = file_name.to_string_lossy();
        let Some(stem) = name.strip_suffix(".lock") else {
            dirs.push(path);
            continue;
        };
        let fd = match sys::open(&path, libc::O_RDWR, 0) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            r => r.ctx(|| format!("opening {}", path.display()))?,
        };
        if !ofd_try_lock(&fd).ctx(|| format!("locking {}", path.display()))? {
            continue;
        }
        if !stem.starts_with("tmp-") {
            sys::remove_tree(&staging_root.join(stem))
                .ctx(|| format!("removing stale staging dir {stem}"))?;
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(StoreError::io(format!("removing {}", path.display()), e));
            }
            _ => removed += 1,
        }
    }
    for dir in dirs {
        let mut lock = dir.clone().into_os_string();
        lock.push(".lock");
        if !Path::new(&lock).exists() {
            sys::remove_tree(&dir)
                .ctx(|| format!("removing stale staging dir {}", dir.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}
