//! Thin wrappers over the libc calls the store needs, plus atomic metadata writes.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Turns a libc return value into an `io::Result`, reading errno on -1.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

/// `openat(2)` returning an owned fd; retries on EINTR.
pub(crate) fn openat(
    dir: RawFd,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    loop {
        // SAFETY: c is a valid NUL-terminated string; the returned fd is owned by us.
        let fd = unsafe {
            libc::openat(
                dir,
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: fd was just returned by openat and nobody else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `open(2)` of an absolute or relative path.
pub(crate) fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    openat(libc::AT_FDCWD, path.as_os_str(), flags, mode)
}

/// Random bytes from the kernel, hex encoded.
pub(crate) fn random_hex(nbytes: usize) -> String {
    let mut buf = vec![0u8; nbytes];
    let mut filled = 0;
    while filled < nbytes {
        // SAFETY: the pointer/length describe the unfilled tail of buf.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), nbytes - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
        // n < 0 is EINTR (getrandom without GRND_NONBLOCK only fails that way on Linux ≥ 3.17): retry.
    }
    hex::encode(buf)
}

/// Wall-clock time as nanoseconds since the Unix epoch (record `created` fields).
pub(crate) fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `data` so readers see either the old or the new content, never a mix: write a
/// sibling temp file, fsync it when `durable`, rename over, fsync the directory when `durable`.
/// Callers hold the file's write lock, so a fixed temp name cannot collide.
pub(crate) fn atomic_write(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if durable {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Flushes the whole filesystem holding `fd` (cheaper than fsync per extracted file).
pub(crate) fn syncfs(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fd is a valid open descriptor.
    cvt(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// Removes a directory tree, treating "already gone" as success.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
