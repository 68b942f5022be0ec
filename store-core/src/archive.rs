//! Layer tar streams: compression detection by magic bytes, digests, and a symlink-safe extractor.
//!
//! The `tar` crate parses entries; every file system change is made here, relative to directory fds
//! opened with `O_NOFOLLOW`, so no entry can reach outside the layer directory: `..` and absolute paths are
//! refused, a path through a symlink is refused, and hard link targets are resolved the same way.
//! Whiteouts are stored the overlay way: `.wh.NAME` becomes a 0:0 character device `NAME`, and
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory (both need root).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::digest::HashingReader;
use crate::error::{IoContext, StoreError};
use crate::record::{IdMap, map_id};
use crate::sys::{self, cstring, cvt};

/// Copy buffer size: big copies keep extraction at `tar -x` speed.
const BUF: usize = 1 << 20;

/// How a layer stream is compressed, decided from its first bytes (never from a file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
}

impl Compression {
    /// Detects gzip (`1f 8b`) and zstd (`28 b5 2f fd`); anything else is taken as a plain tar stream.
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::Plain
        }
    }
}

/// ID mappings applied to every entry's owner.
pub(crate) struct Options<'a> {
    pub uid_map: &'a [IdMap],
    pub gid_map: &'a [IdMap],
}

/// Digests and sizes of an extracted stream.
pub(crate) struct Digests {
    pub compressed_digest: Option<String>,
    pub compressed_size: Option<u64>,
    pub uncompressed_digest: String,
    pub uncompressed_size: u64,
}

fn corrupt(e: io::Error) -> StoreError {
    StoreError::Archive(e.to_string())
}

/// Extracts a (plain, gzip or zstd) tar stream into the existing directory `dest`; reads the stream to its end
/// so the digests cover every byte.
pub(crate) fn extract(
    mut input: impl Read,
    dest: &Path,
    opts: &Options,
) -> Result<Digests, StoreError> {
    let root = sys::open(
        dest,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .ctx(|| format!("opening {}", dest.display()))?;
    let mut prefix = [0u8; 4];
    let mut n = 0;
    while n < prefix.len() {
        match input.read(&mut prefix[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(e)),
        }
    }
    let raw = io::Cursor::new(prefix[..n].to_vec()).chain(input);
    let mut ex = Extractor::new(root, opts);
    let (uncompressed_digest, uncompressed_size, hraw) = match Compression::detect(&prefix[..n]) {
        Compression::Plain => {
            let (uncompressed_digest, uncompressed_size, _) = ex.unpack(hashing(raw)?)?;
            return Ok(Digests {
                compressed_digest: None,
                compressed_size: None,
                uncompressed_digest,
                uncompressed_size,
            });
        }
        Compression::Gzip => {
            let dec = flate2::bufread::MultiGzDecoder::new(hashing(raw)?);
            let (digest, size, dec) = ex.unpack(hashing(dec)?)?;
            (digest, size, dec.into_inner())
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(hashing(raw)?).map_err(corrupt)?;
            let (digest, size, dec) = ex.unpack(hashing(dec)?)?;
            (digest, size, dec.finish())
        }
    };
    // Bytes after the compressed data still count toward the compressed digest.
    let (compressed_digest, compressed_size, _) = finish(hraw)?;
    Ok(Digests {
        compressed_digest: Some(compressed_digest),
        compressed_size: Some(compressed_size),
        uncompressed_digest,
        uncompressed_size,
    })
}

/// Hashes `r` on a worker thread while this one writes files.
fn hashing<R: Read>(r: R) -> Result<HashingReader<R>, StoreError> {
    HashingReader::new(r).ctx(|| "starting a sha256 worker thread")
}

/// Reads `r` to its end and returns its digest, length and source.
fn finish<R: Read>(mut r: HashingReader<R>) -> Result<(String, u64, R), StoreError> {
    r.skip_rest().map_err(corrupt)?;
    r.finish().ctx(|| "hashing the layer stream")
}

/// Splits an archive path into components; refuses absolute paths and `..`.
fn components(raw: &[u8], what: &str) -> Result<Vec<OsString>, String> {
    if raw.starts_with(b"/") {
        return Err(format!("{what} is an absolute path"));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(format!("{what} contains '..'")),
            _ => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

/// A directory whose mode and mtime are set after extraction (children would change the mtime, and a
/// read-only mode would stop us writing the children).
struct DirMeta {
    comps: Vec<OsString>,
    mode: u32,
    mtime: u64,
}

struct Extractor<'a> {
    root: Rc<OwnedFd>,
    opts: &'a Options<'a>,
    chown: bool,
    buf: Vec<u8>,
    /// The last parent directory resolved; consecutive entries usually share it.
    cached: Option<(Vec<OsString>, Rc<OwnedFd>)>,
    dirs: Vec<DirMeta>,
}

/// One entry's header fields, already mapped.
struct Meta {
    display: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl<'a> Extractor<'a> {
    fn new(root: OwnedFd, opts: &'a Options<'a>) -> Self {
        Extractor {
            root: Rc::new(root),
            opts,
            // SAFETY: geteuid has no preconditions.
            chown: unsafe { libc::geteuid() } == 0,
            buf: vec![0; BUF],
            cached: None,
            dirs: Vec::new(),
        }
    }

    /// Extracts the tar stream `reader`, then reads it to its end (padding and anything after the
    /// end-of-archive blocks count toward the digest) and returns its digest, length and source.
    fn unpack<R: Read>(
        &mut self,
        mut reader: HashingReader<R>,
    ) -> Result<(String, u64, R), StoreError> {
        {
            let mut ar = tar::Archive::new(&mut reader);
            for entry in ar.entries().map_err(corrupt)? {
                let mut entry = entry.map_err(corrupt)?;
                self.entry(&mut entry)?;
            }
        }
        self.finish_dirs()?;
        finish(reader)
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>) -> Result<(), StoreError> {
        let raw_path = e.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let unsafe_entry = |reason: String| StoreError::UnsafeEntry {
            path: display.clone(),
            reason,
        };
        let comps = components(&raw_path, "path").map_err(unsafe_entry)?;
        let h = e.header().clone();
        let kind = h.entry_type();
        let mode = h.mode().map_err(corrupt)? & 0o7777;
        let (uid, gid) = (h.uid().map_err(corrupt)?, h.gid().map_err(corrupt)?);
        let uid = map_id(self.opts.uid_map, uid).ok_or_else(|| {
            StoreError::Invalid(format!("{display}: UID {uid} is not in the UID map"))
        })?;
        let gid = map_id(self.opts.gid_map, gid).ok_or_else(|| {
            StoreError::Invalid(format!("{display}: GID {gid} is not in the GID map"))
        })?;
        let mtime = h.mtime().unwrap_or(0);
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions().map_err(corrupt)? {
            for ext in exts {
                let ext = ext.map_err(corrupt)?;
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    let name =
                        CString::new(name).map_err(|_| unsafe_entry("NUL in xattr name".into()))?;
                    xattrs.push((name, ext.value_bytes().to_vec()));
                }
            }
        }
        let meta = Meta {
            display: display.clone(),
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        };

        let Some((last, dir)) = comps.split_last() else {
            return match kind {
                tar::EntryType::Directory => self.directory(&comps, &meta),
                _ => Err(unsafe_entry(
                    "a non-directory entry for the layer root".into(),
                )),
            };
        };
        if let Some(target) = last.as_bytes().strip_prefix(b".wh.") {
            return self.whiteout(dir, target, &meta);
        }
        let name = cstring(last).map_err(|e| unsafe_entry(e.to_string()))?;
        let parent = self.dir_fd(dir, &meta.display)?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                let fd = self
                    .replace(&parent, &name, &meta, || {
                        sys::openat(parent.as_raw_fd(), last, flags, 0o600)
                    })?
                    .ctx(|| format!("creating {}", meta.display))?;
                let mut f = File::from(fd);
                loop {
                    let n = e.read(&mut self.buf).map_err(corrupt)?;
                    if n == 0 {
                        break;
                    }
                    f.write_all(&self.buf[..n])
                        .ctx(|| format!("writing {}", meta.display))?;
                }
                let fd = OwnedFd::from(f);
                self.fd_meta(&fd, &meta)?;
                set_times_fd(&fd, meta.mtime).ctx(|| format!("setting times of {}", meta.display))
            }
            tar::EntryType::Directory => self.directory(&comps, &meta),
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("symlink without target".into()))?;
                if target.is_empty() {
                    return Err(unsafe_entry("symlink with an empty target".into()));
                }
                let target = CString::new(target.into_owned())
                    .map_err(|_| unsafe_entry("NUL in symlink target".into()))?;
                self.replace(&parent, &name, &meta, || {
                    // SAFETY: both strings are NUL-terminated; parent is an open directory fd.
                    cvt(unsafe {
                        libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), name.as_ptr())
                    })
                })?
                .ctx(|| format!("creating symlink {}", meta.display))?;
                self.at_meta(&parent, &name, &meta, false)
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("hard link without target".into()))?;
                let tcomps = components(&target, "hard link target").map_err(unsafe_entry)?;
                let Some((tlast, tdir)) = tcomps.split_last() else {
                    return Err(unsafe_entry("hard link to the layer root".into()));
                };
                if tcomps == comps {
                    return Ok(());
                }
                let tparent = self.walk(tdir, false, &meta.display)?;
                let tname = cstring(tlast).map_err(|e| unsafe_entry(e.to_string()))?;
                let r = self.replace(&parent, &name, &meta, || {
                    // Flags 0: a symlink target is linked as the symlink itself, never followed.
                    // SAFETY: all names NUL-terminated; both fds are open directories.
                    cvt(unsafe {
                        libc::linkat(
                            tparent.as_raw_fd(),
                            tname.as_ptr(),
                            parent.as_raw_fd(),
                            name.as_ptr(),
                            0,
                        )
                    })
                })?;
                r.map(drop).map_err(|err| match err.raw_os_error() {
                    Some(libc::ENOENT) => StoreError::Archive(format!(
                        "{}: hard link target {} is not in this layer",
                        meta.display,
                        String::from_utf8_lossy(&target)
                    )),
                    Some(libc::EPERM) => unsafe_entry("hard link to a directory".into()),
                    _ => StoreError::io(format!("creating hard link {}", meta.display), err),
                })
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let fmt = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = h.device_major().map_err(corrupt)?.unwrap_or(0);
                let minor = h.device_minor().map_err(corrupt)?.unwrap_or(0);
                let dev = libc::makedev(major, minor);
                self.replace(&parent, &name, &meta, || mknod(&parent, &name, fmt, dev))?
                    .ctx(|| {
                        format!(
                            "creating device/fifo {} (needs root for devices)",
                            meta.display
                        )
                    })?;
                self.at_meta(&parent, &name, &meta, true)
            }
            // Global pax headers and other metadata-only records carry nothing to create.
            _ => Ok(()),
        }
    }

    fn directory(&mut self, comps: &[OsString], meta: &Meta) -> Result<(), StoreError> {
        let fd = match comps.split_last() {
            None => Rc::clone(&self.root),
            Some((last, dir)) => {
                let parent = self.dir_fd(dir, &meta.display)?;
                let name = cstring(last).map_err(|e| StoreError::io(meta.display.clone(), e))?;
                // SAFETY: name is NUL-terminated; parent is an open directory fd.
                let mkdir =
                    || cvt(unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) });
                match mkdir() {
                    // An existing directory is kept (its contents too), anything else is replaced.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        if !self.clear(&parent, &name, true, meta)? {
                            mkdir().ctx(|| format!("creating directory {}", meta.display))?;
                        }
                    }
                    r => {
                        r.ctx(|| format!("creating directory {}", meta.display))?;
                    }
                }
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                Rc::new(
                    sys::openat(parent.as_raw_fd(), last, flags, 0)
                        .ctx(|| format!("opening {}", meta.display))?,
                )
            }
        };
        self.fd_owner_xattrs(&fd, meta)?;
        self.dirs.push(DirMeta {
            comps: comps.to_vec(),
            mode: meta.mode,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn whiteout(&mut self, dir: &[OsString], target: &[u8], meta: &Meta) -> Result<(), StoreError> {
        let parent = self.dir_fd(dir, &meta.display)?;
        if target == b".wh..opq" {
            let v = b"y";
            // SAFETY: the name is a NUL-terminated literal, v is readable for its length.
            let r = unsafe {
                libc::fsetxattr(
                    parent.as_raw_fd(),
                    c"trusted.overlay.opaque".as_ptr(),
                    v.as_ptr().cast(),
                    1,
                    0,
                )
            };
            return cvt(r)
                .map(drop)
                .ctx(|| format!("marking {} opaque (needs root)", meta.display));
        }
        if target.starts_with(b".wh.") {
            // Other `.wh..wh.` names are aufs bookkeeping (hard link dirs, ...), not content.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(StoreError::UnsafeEntry {
                path: meta.display.clone(),
                reason: "whiteout of an invalid name".into(),
            });
        }
        let name = cstring(OsStr::from_bytes(target))
            .map_err(|e| StoreError::io(meta.display.clone(), e))?;
        self.replace(&parent, &name, meta, || {
            mknod(&parent, &name, libc::S_IFCHR, 0)
        })?
        .ctx(|| format!("creating whiteout {} (needs root)", meta.display))?;
        let ts = times(meta.mtime);
        // SAFETY: name is NUL-terminated; ts points to two timespecs.
        cvt(unsafe {
            libc::utimensat(
                parent.as_raw_fd(),
                name.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop)
        .ctx(|| format!("setting times of {}", meta.display))
    }

    /// The fd of directory `comps` under the root, creating missing directories (0755) like `tar -x`.
    fn dir_fd(&mut self, comps: &[OsString], display: &str) -> Result<Rc<OwnedFd>, StoreError> {
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
    fn walk(
        &self,
        comps: &[OsString],
        create: bool,
        display: &str,
    ) -> Result<Rc<OwnedFd>, StoreError> {
        self.walk_from(Rc::clone(&self.root), comps, 0, create, display)
    }

    /// [`Extractor::walk`] starting at `start`, the already-open directory `comps[..skip]`.
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
    fn replace<T>(
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
    fn clear(
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

    fn fd_owner_xattrs(&self, fd: &OwnedFd, meta: &Meta) -> Result<(), StoreError> {
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
    fn fd_meta(&self, fd: &OwnedFd, meta: &Meta) -> Result<(), StoreError> {
        self.fd_owner_xattrs(fd, meta)?;
        // SAFETY: fd is open.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), meta.mode) })
            .ctx(|| format!("chmod {}", meta.display))?;
        Ok(())
    }

    /// Metadata for entries we cannot open (symlinks, devices), addressed as `parent/name` without following.
    fn at_meta(
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
    fn finish_dirs(&mut self) -> Result<(), StoreError> {
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

fn times(mtime: u64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

fn set_times_fd(fd: &OwnedFd, mtime: u64) -> io::Result<()> {
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

fn mknod(parent: &OwnedFd, name: &CStr, fmt: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; parent is an open directory fd.
    cvt(unsafe { libc::mknodat(parent.as_raw_fd(), name.as_ptr(), fmt, dev) }).map(drop)
}
