//! Creates each kind of tar entry (regular file, directory, symlink, hard link, device or FIFO, whiteout)
//! inside the layer directory.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use super::budget::Budget;
use super::header::{self, Meta, components, corrupt};
use super::tree::{DirMeta, Tree, mknod, set_times_fd, times};
use crate::error::{IoContext, StoreError};
use crate::record::IdMap;
use crate::sys::{self, cstring, cvt};

/// Copy buffer size: big copies keep extraction at `tar -x` speed.
const BUF: usize = 1 << 20;

pub(super) struct Extractor<'a> {
    tree: Tree,
    uid_map: &'a [IdMap],
    gid_map: &'a [IdMap],
    budget: Rc<Budget>,
    buf: Vec<u8>,
}

/// Where a non-root entry goes: its parent directory (open) and its name there.
struct Slot {
    parent: Rc<OwnedFd>,
    name: CString,
}

impl<'a> Extractor<'a> {
    pub fn new(
        root: OwnedFd,
        uid_map: &'a [IdMap],
        gid_map: &'a [IdMap],
        budget: Rc<Budget>,
    ) -> Self {
        Extractor {
            tree: Tree::new(root),
            uid_map,
            gid_map,
            budget,
            buf: vec![0; BUF],
        }
    }

    /// Extracts every entry of the tar stream `reader` (up to its end-of-archive blocks), then applies
    /// the directories' deferred modes and times.
    pub fn unpack(&mut self, reader: &mut impl Read) -> Result<(), StoreError> {
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            self.entry(&mut entry)?;
        }
        self.tree.finish_dirs()
    }

    /// Checks an entry's path and header, then creates it according to its kind.
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>) -> Result<(), StoreError> {
        let raw_path = e.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let comps = components(&raw_path, "path").map_err(|reason| StoreError::UnsafeEntry {
            path: display.clone(),
            reason,
        })?;
        let meta = header::read_meta(e, display, self.uid_map, self.gid_map)?;
        let kind = e.header().entry_type();
        let Some((last, dir)) = comps.split_last() else {
            return match kind {
                tar::EntryType::Directory => self.directory(&comps, &meta),
                _ => Err(meta.unsafe_entry("a non-directory entry for the layer root")),
            };
        };
        if let Some(target) = last.as_bytes().strip_prefix(b".wh.") {
            return self.whiteout(dir, target, &meta);
        }
        let slot = Slot {
            parent: self.tree.dir_fd(dir, &meta.display)?,
            name: cstring(last).map_err(|e| meta.unsafe_entry(e.to_string()))?,
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.regular(e, &slot, &meta)
            }
            tar::EntryType::Directory => self.directory(&comps, &meta),
            tar::EntryType::Symlink => self.symlink(e, &slot, &meta),
            tar::EntryType::Link => self.hard_link(e, &comps, &slot, &meta),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.node(e.header(), kind, &slot, &meta)
            }
            // Global pax headers and other metadata-only records carry nothing to create.
            _ => Ok(()),
        }
    }

    /// A regular file: created 0600, filled, then owner, xattrs, mode and mtime.
    fn regular<R: Read>(
        &mut self,
        e: &mut tar::Entry<R>,
        slot: &Slot,
        meta: &Meta,
    ) -> Result<(), StoreError> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let name = OsStr::from_bytes(slot.name.to_bytes());
        let fd = self
            .tree
            .replace(&slot.parent, &slot.name, meta, || {
                sys::openat(slot.parent.as_raw_fd(), name, flags, 0o600)
            })?
            .ctx(|| format!("creating {}", meta.display))?;
        let mut f = File::from(fd);
        loop {
            let n = e.read(&mut self.buf).map_err(corrupt)?;
            if n == 0 {
                break;
            }
            // Sparse entries expand on reading: what is written counts, not only what was read.
            self.budget.charge_written(n)?;
            f.write_all(&self.buf[..n])
                .ctx(|| format!("writing {}", meta.display))?;
        }
        let fd = OwnedFd::from(f);
        self.tree.fd_meta(&fd, meta)?;
        set_times_fd(&fd, meta.mtime).ctx(|| format!("setting times of {}", meta.display))
    }

    fn symlink<R: Read>(
        &mut self,
        e: &tar::Entry<R>,
        slot: &Slot,
        meta: &Meta,
    ) -> Result<(), StoreError> {
        let target = e
            .link_name_bytes()
            .ok_or_else(|| meta.unsafe_entry("symlink without target"))?;
        if target.is_empty() {
            return Err(meta.unsafe_entry("symlink with an empty target"));
        }
        let target = CString::new(target.into_owned())
            .map_err(|_| meta.unsafe_entry("NUL in symlink target"))?;
        let (parent, name) = (&slot.parent, &slot.name);
        self.tree
            .replace(parent, name, meta, || {
                // SAFETY: both strings are NUL-terminated; parent is an open directory fd.
                cvt(unsafe { libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), name.as_ptr()) })
            })?
            .ctx(|| format!("creating symlink {}", meta.display))?;
        self.tree.at_meta(parent, name, meta, false)
    }

    /// A hard link to an entry already extracted into this layer, resolved like any path (no `..`, no
    /// symlinks on the way); a link to itself is a no-op.
    fn hard_link<R: Read>(
        &mut self,
        e: &tar::Entry<R>,
        comps: &[OsString],
        slot: &Slot,
        meta: &Meta,
    ) -> Result<(), StoreError> {
        let target = e
            .link_name_bytes()
            .ok_or_else(|| meta.unsafe_entry("hard link without target"))?;
        let tcomps = components(&target, "hard link target").map_err(|r| meta.unsafe_entry(r))?;
        let Some((tlast, tdir)) = tcomps.split_last() else {
            return Err(meta.unsafe_entry("hard link to the layer root"));
        };
        if tcomps == comps {
            return Ok(());
        }
        let tparent = self.tree.walk(tdir, false, &meta.display)?;
        let tname = cstring(tlast).map_err(|e| meta.unsafe_entry(e.to_string()))?;
        let (parent, name) = (&slot.parent, &slot.name);
        let r = self.tree.replace(parent, name, meta, || {
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
            Some(libc::EPERM) => meta.unsafe_entry("hard link to a directory"),
            _ => StoreError::io(format!("creating hard link {}", meta.display), err),
        })
    }

    /// A character or block device or a FIFO. A FIFO's device fields are ignored (tar writers leave
    /// them empty).
    fn node(
        &mut self,
        h: &tar::Header,
        kind: tar::EntryType,
        slot: &Slot,
        meta: &Meta,
    ) -> Result<(), StoreError> {
        let (fmt, (major, minor)) = match kind {
            tar::EntryType::Char => (libc::S_IFCHR, header::device(h, &meta.display)?),
            tar::EntryType::Block => (libc::S_IFBLK, header::device(h, &meta.display)?),
            _ => (libc::S_IFIFO, (0, 0)),
        };
        let dev = libc::makedev(major, minor);
        let (parent, name) = (&slot.parent, &slot.name);
        self.tree
            .replace(parent, name, meta, || mknod(parent, name, fmt, dev))?
            .ctx(|| {
                format!(
                    "creating device/fifo {} (needs root for devices)",
                    meta.display
                )
            })?;
        self.tree.at_meta(parent, name, meta, true)
    }

    /// A directory: an existing one is kept with its contents, anything else at the name is replaced.
    /// Its mode and mtime are applied at the end.
    fn directory(&mut self, comps: &[OsString], meta: &Meta) -> Result<(), StoreError> {
        let fd = match comps.split_last() {
            None => Rc::clone(&self.tree.root),
            Some((last, dir)) => {
                let parent = self.tree.dir_fd(dir, &meta.display)?;
                let name = cstring(last).map_err(|e| StoreError::io(meta.display.clone(), e))?;
                // SAFETY: name is NUL-terminated; parent is an open directory fd.
                let mkdir =
                    || cvt(unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) });
                match mkdir() {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        if !self.tree.clear(&parent, &name, true, meta)? {
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
        self.tree.fd_owner_xattrs(&fd, meta)?;
        self.tree.dirs.push(DirMeta {
            comps: comps.to_vec(),
            mode: meta.mode,
            mtime: meta.mtime,
        });
        Ok(())
    }

    /// `.wh..wh..opq` marks the directory opaque; `.wh.NAME` becomes a 0:0 character device `NAME`.
    fn whiteout(&mut self, dir: &[OsString], target: &[u8], meta: &Meta) -> Result<(), StoreError> {
        let parent = self.tree.dir_fd(dir, &meta.display)?;
        if target == b".wh..opq" {
            return opaque(&parent, meta);
        }
        if target.starts_with(b".wh.") {
            // Other `.wh..wh.` names are aufs bookkeeping (hard link dirs, ...), not content.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(meta.unsafe_entry("whiteout of an invalid name"));
        }
        let name = cstring(OsStr::from_bytes(target))
            .map_err(|e| StoreError::io(meta.display.clone(), e))?;
        self.tree
            .replace(&parent, &name, meta, || {
                mknod(&parent, &name, libc::S_IFCHR, 0)
            })?
            .ctx(|| format!("creating whiteout {} (needs root)", meta.display))?;
        set_times_at(&parent, &name, meta)
    }
}

fn opaque(dir: &OwnedFd, meta: &Meta) -> Result<(), StoreError> {
    let v = b"y";
    // SAFETY: the name is a NUL-terminated literal, v is readable for its length.
    let r = unsafe {
        libc::fsetxattr(
            dir.as_raw_fd(),
            c"trusted.overlay.opaque".as_ptr(),
            v.as_ptr().cast(),
            1,
            0,
        )
    };
    cvt(r)
        .map(drop)
        .ctx(|| format!("marking {} opaque (needs root)", meta.display))
}

fn set_times_at(parent: &OwnedFd, name: &CStr, meta: &Meta) -> Result<(), StoreError> {
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
