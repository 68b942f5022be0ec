//! Atomic replacement of a metadata file: readers see the old or the new content, never a mix, and the
//! store's [`Durability`] decides what of it is synced.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::durability::Durability;

/// A new file that will replace a metadata file whole. Creating it can be made ahead of time, outside
/// the lock that guards the metadata: allocating an inode is the slowest step of a metadata write on
/// ext4 while other processes are creating many files.
pub(crate) struct Replacement {
    path: PathBuf,
    file: File,
}

impl Replacement {
    /// Creates (or truncates) the temp file at `path`, which must be on the target's filesystem.
    pub(crate) fn create(path: PathBuf) -> io::Result<Replacement> {
        let file = File::create(&path)?;
        Ok(Replacement { path, file })
    }

    /// The default temp file for `target`: a dotted sibling. Callers hold the target's write lock, so
    /// the fixed name cannot collide.
    pub(crate) fn beside(target: &Path) -> io::Result<Replacement> {
        Replacement::create(Replacement::beside_path(target))
    }

    /// Where [`Replacement::beside`] puts the temp file for `target`: `.NAME.tmp` next to it.
    pub(crate) fn beside_path(target: &Path) -> PathBuf {
        let mut name = std::ffi::OsString::from(".");
        name.push(target.file_name().unwrap_or_default());
        name.push(".tmp");
        target.with_file_name(name)
    }

    /// Replaces `target` with `data`: [`Replacement::write`] then [`Written::rename_over`]. Returns
    /// the replaced file still open: its inode is truncated and freed only when that is dropped, which
    /// the caller can do after releasing its lock.
    pub(crate) fn install(
        self,
        data: &[u8],
        target: &Path,
        durability: &Durability,
    ) -> io::Result<Option<File>> {
        self.write(data, durability)?
            .rename_over(target, durability)
    }

    /// Writes `data` in full and syncs it as `durability` says (fdatasync from
    /// [`SyncLevel::Metadata`](crate::SyncLevel) up). Needs no lock: the file is private until renamed.
    pub(crate) fn write(mut self, data: &[u8], durability: &Durability) -> io::Result<Written> {
        self.file.write_all(data)?;
        durability.metadata_written(&self.file)?;
        Ok(Written { path: self.path })
    }
}

/// A replacement whose content is written and synced as the store's durability asks: renaming it
/// over its target is all that is left, and that is all a commit under the lock has to do.
pub(crate) struct Written {
    path: PathBuf,
}

impl Written {
    /// Renames the file over `target` and syncs the directory as `durability` says. Returns the
    /// replaced file still open (see [`Replacement::install`]).
    pub(crate) fn rename_over(
        self,
        target: &Path,
        durability: &Durability,
    ) -> io::Result<Option<File>> {
        // Not there yet (first write) or unreadable: then it is simply freed during the rename.
        let replaced = File::open(target).ok();
        std::fs::rename(&self.path, target)?;
        durability.entry_added(target.parent().unwrap_or(Path::new(".")))?;
        Ok(replaced)
    }
}
