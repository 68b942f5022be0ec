//! Thin wrappers over the libc calls the store needs.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
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

/// Opens `name` under `dir` for reading only if it is a regular file: a symlink (`O_NOFOLLOW`), a
/// FIFO, socket or device is refused at once, never waited on (`O_NONBLOCK` until `fstat` has said
/// "regular", then cleared so reads block normally).
pub(crate) fn open_regular(dir: RawFd, name: &OsStr) -> io::Result<File> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = openat(dir, name, flags, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => io::Error::new(io::ErrorKind::InvalidInput, "is a symlink"),
        _ => e,
    })?;
    // SAFETY: an all-zero stat is a valid value, overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st is a writable stat.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => None,
        libc::S_IFDIR => Some("a directory"),
        libc::S_IFIFO => Some("a FIFO"),
        libc::S_IFCHR | libc::S_IFBLK => Some("a device"),
        libc::S_IFSOCK => Some("a socket"),
        _ => Some("a special file"),
    };
    if let Some(kind) = kind {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {kind}, not a regular file"),
        ));
    }
    // SAFETY: fd is open; F_GETFL/F_SETFL only change its status flags.
    let fl = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: fd is open; clearing O_NONBLOCK only changes how reads wait.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) })?;
    Ok(File::from(fd))
}

/// Reads at most `limit` bytes of `r`; more is an `InvalidData` error, whatever the file claims its
/// size is (a size can change between `fstat` and `read`).
pub(crate) fn read_limited(r: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(data)
}

/// [`read_limited`] of the file at `path`.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    read_limited(File::open(path)?, limit)
}

fn statvfs(fd: RawFd) -> io::Result<libc::statvfs> {
    // SAFETY: an all-zero statvfs is a valid value, overwritten by fstatvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st is a writable statvfs.
    cvt(unsafe { libc::fstatvfs(fd, &mut st) })?;
    Ok(st)
}

/// Bytes an unprivileged writer may still allocate on the filesystem holding `fd`.
pub(crate) fn free_space(fd: RawFd) -> io::Result<u64> {
    let st = statvfs(fd)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Total size in bytes of the filesystem holding `fd`.
pub(crate) fn filesystem_size(fd: RawFd) -> io::Result<u64> {
    let st = statvfs(fd)?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
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

/// Flushes the whole filesystem holding `fd` (cheaper than fsync per extracted file).
pub(crate) fn syncfs(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fd is a valid open descriptor.
    cvt(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// Adds `increment` to the calling thread's nice value (on Linux, `nice` acts on the calling thread and
/// threads it starts later inherit the value). Best effort: the kernel never refuses lowering one's own
/// priority, and where a sandbox does, running at normal priority is still correct.
pub(crate) fn lower_thread_priority(increment: u8) {
    // SAFETY: nice only changes this thread's scheduling priority.
    unsafe { libc::nice(i32::from(increment)) };
}

/// Removes a directory tree, treating "already gone" as success.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
