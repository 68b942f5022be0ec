//! The one place that syncs to disk: what each [`SyncLevel`] promises, issued by the store's metadata
//! writes and layer commits. Callers say what they just wrote; the level decides whether that is synced.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::options::SyncLevel;
use crate::sys;

/// A sync the store can issue (what the tests observe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncCall {
    /// `fdatasync` of a metadata file's temp copy.
    FileData,
    /// `fsync` of a directory, making a rename or creation in it durable.
    Directory,
    /// `syncfs` of the filesystem holding a layer's contents.
    Filesystem,
}

/// Issues the syncs of one [`SyncLevel`]. Cloned into every record file of a store; clones share the
/// test log, so a test sees every sync a store issued, in order.
#[derive(Debug, Clone)]
pub(crate) struct Durability {
    level: SyncLevel,
    #[cfg(test)]
    log: std::sync::Arc<std::sync::Mutex<Vec<SyncCall>>>,
}

impl Durability {
    pub(crate) fn new(level: SyncLevel) -> Self {
        Durability {
            level,
            #[cfg(test)]
            log: Default::default(),
        }
    }

    #[cfg(test)]
    fn note(&self, call: SyncCall) {
        self.log.lock().unwrap().push(call);
    }

    #[cfg(not(test))]
    fn note(&self, _: SyncCall) {}

    /// The syncs issued so far, emptying the log.
    #[cfg(test)]
    pub(crate) fn take_log(&self) -> Vec<SyncCall> {
        std::mem::take(&mut self.log.lock().unwrap())
    }

    /// A metadata file's temp copy, written in full and about to be renamed over the file: fdatasync'ed
    /// from [`SyncLevel::Metadata`] up, so the rename can never expose an empty or torn file after a
    /// power loss (containers/storage's `AtomicWriteFileWithOpts`).
    pub(crate) fn metadata_written(&self, tmp: &File) -> io::Result<()> {
        if self.level < SyncLevel::Metadata {
            return Ok(());
        }
        self.note(SyncCall::FileData);
        tmp.sync_data()
    }

    /// Something was just renamed into or created in `dir` (a metadata file, a layer directory):
    /// the directory is fsynced at [`SyncLevel::Filesystem`] only, so that the new entry survives a
    /// power loss. containers/storage syncs no directory, so neither does [`SyncLevel::Metadata`].
    pub(crate) fn entry_added(&self, dir: &Path) -> io::Result<()> {
        if self.level < SyncLevel::Filesystem {
            return Ok(());
        }
        self.note(SyncCall::Directory);
        File::open(dir)?.sync_all()
    }

    /// A layer's contents were just extracted into `diff` and are about to be recorded: the whole
    /// filesystem holding them is synced at [`SyncLevel::Filesystem`] (cheaper than an fsync per file,
    /// and what containers/storage's overlay `sync=filesystem` does).
    pub(crate) fn contents_written(&self, diff: &Path) -> io::Result<()> {
        if self.level < SyncLevel::Filesystem {
            return Ok(());
        }
        self.note(SyncCall::Filesystem);
        let fd = sys::open(diff, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        sys::syncfs(&fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(level: SyncLevel) -> Vec<SyncCall> {
        let dir = tempfile::tempdir().unwrap();
        let d = Durability::new(level);
        let f = File::create(dir.path().join("f")).unwrap();
        d.metadata_written(&f).unwrap();
        d.entry_added(dir.path()).unwrap();
        d.contents_written(dir.path()).unwrap();
        d.take_log()
    }

    #[test]
    fn each_level_issues_only_the_syncs_it_promises() {
        use SyncCall::*;
        assert_eq!(issued(SyncLevel::None), vec![]);
        assert_eq!(issued(SyncLevel::Metadata), vec![FileData]);
        assert_eq!(
            issued(SyncLevel::Filesystem),
            vec![FileData, Directory, Filesystem]
        );
    }

    #[test]
    fn clones_share_the_log() {
        let d = Durability::new(SyncLevel::Metadata);
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("f")).unwrap();
        d.clone().metadata_written(&f).unwrap();
        assert_eq!(d.take_log(), vec![SyncCall::FileData]);
        assert_eq!(d.take_log(), vec![]);
    }
}
