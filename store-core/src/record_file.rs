//! One metadata file and the lock that guards it (`layers.json` + `layers.lock`, ...): the parsed records
//! cached under the last-writer token they were read under, reloaded only when another writer changed
//! the token, and saved by atomic replacement.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::durability::Durability;
use crate::error::{IoContext, StoreError};
use crate::lockfile::{LastWrite, LockFile, Rank, ReadGuard, WriteGuard};
use crate::observer::{Observer, Op};
use crate::replacement::{Replacement, Written};
use crate::sys;

/// Metadata files larger than this are refused as corrupt rather than read into memory.
const MAX_RECORD_FILE: u64 = 1 << 30;

/// A held lock of either kind: what [`RecordFile::load`] needs to know the records are current.
pub(crate) trait Held {
    fn last_write(&self) -> Result<LastWrite, StoreError>;
    fn lock_path(&self) -> &Path;
}

impl Held for ReadGuard {
    fn last_write(&self) -> Result<LastWrite, StoreError> {
        ReadGuard::last_write(self)
    }

    fn lock_path(&self) -> &Path {
        self.path()
    }
}

impl Held for WriteGuard {
    fn last_write(&self) -> Result<LastWrite, StoreError> {
        WriteGuard::last_write(self)
    }

    fn lock_path(&self) -> &Path {
        self.path()
    }
}

/// Parsed records plus the last-writer token they were read under.
struct Cache<T> {
    token: Option<LastWrite>,
    items: Arc<Vec<T>>,
}

/// The records as read under a lock, and the last-writer token they were read under.
pub(crate) struct Snapshot<T> {
    token: LastWrite,
    pub(crate) items: Arc<Vec<T>>,
}

/// A replacement written and synced outside the lock, and the token of the records it was computed
/// from: it may be installed only while that token is still the file's.
pub(crate) struct Prepared<T> {
    base: LastWrite,
    items: Vec<T>,
    file: Written,
}

/// A JSON array of records in one file, guarded by one lock file. Every method that touches the file or
/// the cache takes a guard of that lock, so the records can only be read or written under it.
pub(crate) struct RecordFile<T> {
    /// The lock file guarding `path`, the cache and the temp file beside `path`.
    lock: LockFile,
    /// The JSON file; read and replaced only under `lock` (replaced only under its write lock).
    path: PathBuf,
    /// Only ever replaced while the lock is held; the mutex orders threads of this process that hold
    /// the lock for reading at the same time.
    cache: Mutex<Cache<T>>,
    /// What a save syncs.
    durability: Durability,
}

impl<T: Serialize + DeserializeOwned> RecordFile<T> {
    /// The records at `root/json` guarded by the lock file `root/lock`.
    pub(crate) fn new(
        root: &Path,
        lock: &str,
        rank: Rank,
        json: &str,
        observer: Option<Arc<dyn Observer>>,
        durability: Durability,
    ) -> Self {
        RecordFile {
            lock: LockFile::new(&root.join(lock), rank, observer),
            path: root.join(json),
            cache: Mutex::new(Cache {
                token: None,
                items: Arc::new(Vec::new()),
            }),
            durability,
        }
    }

    /// The guard passed in must be of this file's lock (a guard of another lock file would let the
    /// records be read or written unguarded); checked in debug builds.
    fn check_guard(&self, g: &impl Held) {
        debug_assert_eq!(
            g.lock_path(),
            self.lock.path(),
            "{} used under the wrong lock",
            self.path.display()
        );
    }

    pub(crate) fn read(&self, op: Op) -> Result<ReadGuard, StoreError> {
        self.lock.read(op)
    }

    pub(crate) fn write(&self, op: Op) -> Result<WriteGuard, StoreError> {
        self.lock.write(op)
    }

    /// The records as of the held lock's token, reparsed only when another writer changed it.
    pub(crate) fn load(&self, g: &impl Held) -> Result<Arc<Vec<T>>, StoreError> {
        self.snapshot(g).map(|s| s.items)
    }

    /// [`RecordFile::load`], remembering the token the records were read under: the base of a
    /// [`RecordFile::prepare`]d replacement.
    pub(crate) fn snapshot(&self, g: &impl Held) -> Result<Snapshot<T>, StoreError> {
        self.check_guard(g);
        let token = g.last_write()?;
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.token == Some(token) {
            return Ok(Snapshot {
                token,
                items: Arc::clone(&c.items),
            });
        }
        let items = match sys::read_bounded(&self.path, MAX_RECORD_FILE) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| StoreError::Metadata {
                path: self.path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(StoreError::io(
                    format!("reading {}", self.path.display()),
                    e,
                ));
            }
        };
        *c = Cache {
            token: Some(token),
            items: Arc::new(items),
        };
        Ok(Snapshot {
            token,
            items: Arc::clone(&c.items),
        })
    }

    /// Records a new last-writer token, then atomically replaces the file through `tmp` (the sibling
    /// temp file, made now, when `None`), synced as the store's [`Durability`] says. Returns the
    /// replaced file, see [`Replacement::install`].
    pub(crate) fn save(
        &self,
        g: &WriteGuard,
        items: Vec<T>,
        tmp: Option<Replacement>,
    ) -> Result<Option<std::fs::File>, StoreError> {
        self.check_guard(g);
        // Token first: if we die before the rename, others merely reload unchanged data.
        let token = g.record_write()?;
        let data = serde_json::to_vec(&items).map_err(|source| StoreError::Metadata {
            path: self.path.clone(),
            source,
        })?;
        let written = tmp
            .map_or_else(|| Replacement::beside(&self.path), Ok)
            .and_then(|tmp| tmp.install(&data, &self.path, &self.durability))
            .ctx(|| format!("writing {}", self.path.display()));
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match written {
            Ok(replaced) => {
                *c = Cache {
                    token: Some(token),
                    items: Arc::new(items),
                };
                Ok(replaced)
            }
            Err(e) => {
                c.token = None;
                Err(e)
            }
        }
    }

    /// Writes and syncs the replacement holding `items`, computed from `base`, into `tmp` while no lock
    /// is held: the sync (an ext4 journal commit that waits for every other process's dirty data) is
    /// the slow part of a save, and here it happens before the lock is taken.
    pub(crate) fn prepare(
        &self,
        base: &Snapshot<T>,
        items: Vec<T>,
        tmp: Replacement,
    ) -> Result<Prepared<T>, StoreError> {
        let data = serde_json::to_vec(&items).map_err(|source| StoreError::Metadata {
            path: self.path.clone(),
            source,
        })?;
        let file = tmp
            .write(&data, &self.durability)
            .ctx(|| format!("writing the replacement of {}", self.path.display()))?;
        Ok(Prepared {
            base: base.token,
            items,
            file,
        })
    }

    /// Whether `p` was computed from the file as it is now: no writer has recorded a save since its
    /// base snapshot (every save records a new token before it renames).
    pub(crate) fn is_current(&self, g: &WriteGuard, p: &Prepared<T>) -> Result<bool, StoreError> {
        self.check_guard(g);
        Ok(g.last_write()? == p.base)
    }

    /// Installs a prepared replacement that [`RecordFile::is_current`] under this same guard: a new
    /// token and a rename, no sync of the data (it was synced when prepared). The file then holds
    /// exactly what [`RecordFile::save`] would have written under the lock, synced the same way: only
    /// the moment of the sync moved, to before the lock.
    pub(crate) fn commit(
        &self,
        g: &WriteGuard,
        p: Prepared<T>,
    ) -> Result<Option<std::fs::File>, StoreError> {
        self.check_guard(g);
        debug_assert!(g.last_write()? == p.base, "stale prepared replacement");
        let token = g.record_write()?;
        let installed = p
            .file
            .rename_over(&self.path, &self.durability)
            .ctx(|| format!("writing {}", self.path.display()));
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match installed {
            Ok(replaced) => {
                *c = Cache {
                    token: Some(token),
                    items: Arc::new(p.items),
                };
                Ok(replaced)
            }
            Err(e) => {
                c.token = None;
                Err(e)
            }
        }
    }

    /// Whether a writer's temp file is lying beside the records (checked without the lock: a hint that
    /// [`RecordFile::remove_leftover`] is worth the write lock).
    pub(crate) fn has_leftover(&self) -> bool {
        Replacement::beside_path(&self.path).exists()
    }

    /// Removes the temp file a writer killed before its rename left behind. Holding the write lock
    /// proves no live writer is using it.
    pub(crate) fn remove_leftover(&self, g: &WriteGuard) -> Result<(), StoreError> {
        self.check_guard(g);
        let tmp = Replacement::beside_path(&self.path);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r.ctx(|| format!("removing leftover {}", tmp.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::SyncCall;
    use crate::options::SyncLevel;

    fn records(root: &Path, durability: &Durability) -> RecordFile<u32> {
        let d = durability.clone();
        RecordFile::new(root, "n.lock", Rank::Layers, "n.json", None, d)
    }

    fn on_disk(root: &Path) -> Vec<u32> {
        serde_json::from_slice(&std::fs::read(root.join("n.json")).unwrap()).unwrap()
    }

    /// A snapshot of `rf` and a replacement holding it plus `extra`, prepared without the lock.
    fn prepare_with(rf: &RecordFile<u32>, root: &Path, extra: u32) -> Prepared<u32> {
        let base = rf.snapshot(&rf.read(Op::CreateLayer).unwrap()).unwrap();
        let mut items = base.items.to_vec();
        items.push(extra);
        let tmp = Replacement::create(root.join("prepared.tmp")).unwrap();
        rf.prepare(&base, items, tmp).unwrap()
    }

    #[test]
    fn prepared_replacement_installs_and_is_seen_by_other_handles() {
        let dir = tempfile::tempdir().unwrap();
        let durability = Durability::new(SyncLevel::None);
        let rf = records(dir.path(), &durability);
        rf.save(&rf.write(Op::CreateLayer).unwrap(), vec![1], None)
            .unwrap();
        let p = prepare_with(&rf, dir.path(), 2);
        let g = rf.write(Op::CreateLayer).unwrap();
        assert!(rf.is_current(&g, &p).unwrap());
        rf.commit(&g, p).unwrap();
        assert_eq!(*rf.load(&g).unwrap(), vec![1, 2]);
        drop(g);
        assert_eq!(on_disk(dir.path()), vec![1, 2]);
        let other = records(dir.path(), &durability);
        assert_eq!(
            *other.load(&other.read(Op::ReadLayers).unwrap()).unwrap(),
            vec![1, 2]
        );
    }

    #[test]
    fn prepared_replacement_is_stale_once_another_writer_saved() {
        let dir = tempfile::tempdir().unwrap();
        let durability = Durability::new(SyncLevel::None);
        let rf = records(dir.path(), &durability);
        let p = prepare_with(&rf, dir.path(), 2);
        // Another process's save in between, through a handle with its own cache.
        let other = records(dir.path(), &durability);
        other
            .save(&other.write(Op::CreateLayer).unwrap(), vec![3], None)
            .unwrap();
        let g = rf.write(Op::CreateLayer).unwrap();
        assert!(!rf.is_current(&g, &p).unwrap());
        assert_eq!(*rf.load(&g).unwrap(), vec![3], "the other save stands");
        drop(g);
        // Prepared again from the new state, it goes in.
        let p = prepare_with(&rf, dir.path(), 2);
        let g = rf.write(Op::CreateLayer).unwrap();
        assert!(rf.is_current(&g, &p).unwrap());
        rf.commit(&g, p).unwrap();
        drop(g);
        assert_eq!(on_disk(dir.path()), vec![3, 2]);
    }

    #[test]
    fn prepared_replacement_is_synced_when_prepared_not_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let durability = Durability::new(SyncLevel::Metadata);
        let rf = records(dir.path(), &durability);
        let p = prepare_with(&rf, dir.path(), 1);
        assert_eq!(durability.take_log(), vec![SyncCall::FileData]);
        let g = rf.write(Op::CreateLayer).unwrap();
        rf.commit(&g, p).unwrap();
        assert_eq!(
            durability.take_log(),
            vec![],
            "nothing synced under the lock"
        );
    }
}
