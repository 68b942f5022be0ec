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
use crate::replacement::Replacement;
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
        self.check_guard(g);
        let token = g.last_write()?;
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.token == Some(token) {
            return Ok(Arc::clone(&c.items));
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
        Ok(Arc::clone(&c.items))
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
