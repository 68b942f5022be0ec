//! The store: layout, metadata caches keyed by last-writer tokens, and the layer/image/container operations.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::archive::{self, Digests};
use crate::error::{IoContext, StoreError};
use crate::lockfile::{LastWrite, LockFile, Rank, WriteGuard};
use crate::observer::{Emitter, EventKind, Observer, Op, monotonic_ns};
use crate::record::{Container, IdMap, Image, Layer, LayerRequest, validate_id, validate_name};
use crate::staging::{self, StagingDir};
use crate::sys;

/// Where a new layer's tar stream is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractMode {
    /// Into the layer directory while holding `layers.lock` for writing (containers/storage today).
    Locked,
    /// Into a private staging directory with no store lock held; `layers.lock` only for a short
    /// pre-check and an O(1) commit.
    #[default]
    Staged,
}

impl fmt::Display for ExtractMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtractMode::Locked => "locked",
            ExtractMode::Staged => "staged",
        })
    }
}

impl FromStr for ExtractMode {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "locked" => Ok(ExtractMode::Locked),
            "staged" => Ok(ExtractMode::Staged),
            _ => Err(StoreError::Invalid(format!(
                "extract mode {s:?} is not \"locked\" or \"staged\""
            ))),
        }
    }
}

/// How a store behaves.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// Mode used by [`Store::create_layer`].
    pub extract_mode: ExtractMode,
    /// fsync layer contents before commit and metadata files on every write.
    pub durable: bool,
    /// Nice increment for the threads that decompress, hash and write a staged layer's files (0 leaves
    /// them at the caller's priority). Staged extraction is CPU-bound work done without store locks;
    /// when it saturates the CPUs, a lock holder that sleeps for a moment (a directory lock, a metadata
    /// read) otherwise waits milliseconds for a CPU before it can finish and release. The thread that
    /// takes and releases the store locks keeps the caller's priority, and so does locked extraction,
    /// which runs under layers.lock.
    pub extract_nice: u8,
    /// Receives lock, extraction and commit timings.
    pub observer: Option<Arc<dyn Observer>>,
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("extract_mode", &self.extract_mode)
            .field("durable", &self.durable)
            .field("extract_nice", &self.extract_nice)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// Parsed metadata file plus the last-writer token it was read under.
struct Cache<T> {
    token: Option<LastWrite>,
    items: Arc<Vec<T>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            token: None,
            items: Arc::new(Vec::new()),
        }
    }
}

/// Records looked up by ID first, then by name.
trait Named {
    fn id(&self) -> &str;
    fn names(&self) -> &[String];
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn id(&self) -> &str { &self.id }
            fn names(&self) -> &[String] { &self.names }
        }
    )*};
}
named!(Layer, Image, Container);

fn find<'a, T: Named>(items: &'a [T], key: &str) -> Option<&'a T> {
    items
        .iter()
        .find(|i| i.id() == key)
        .or_else(|| items.iter().find(|i| i.names().iter().any(|n| n == key)))
}

/// Conflict and parent checks, run before extraction and again at commit. `Some(layer)`: it already exists
/// with the same parent, so return it and extract nothing. Container layers are never in `layers.json`, so
/// "parent exists here" also means "parent is not a container layer".
fn precheck(layers: &[Layer], id: &str, req: &LayerRequest) -> Result<Option<Layer>, StoreError> {
    let complete = || layers.iter().filter(|l| !l.incomplete);
    if let Some(l) = complete().find(|l| l.id == id) {
        if l.parent != req.parent {
            return Err(StoreError::Conflict(format!(
                "layer {id} exists with parent {:?}, not {:?}",
                l.parent, req.parent
            )));
        }
        return Ok(Some(l.clone()));
    }
    for name in &req.names {
        if let Some(other) = complete().find(|l| l.names.contains(name)) {
            return Err(StoreError::Conflict(format!(
                "name {name:?} is already used by layer {}",
                other.id
            )));
        }
    }
    if let Some(p) = &req.parent
        && !complete().any(|l| &l.id == p)
    {
        return Err(StoreError::Invalid(format!(
            "parent layer {p:?} does not exist"
        )));
    }
    Ok(None)
}

fn validate_map(maps: &[IdMap], what: &str) -> Result<(), StoreError> {
    for m in maps {
        let fits = |start: u32| start.checked_add(m.size).is_some();
        if m.size == 0 || !fits(m.container_id) || !fits(m.host_id) {
            return Err(StoreError::Invalid(format!(
                "{what} map entry {m:?} is empty or overflows"
            )));
        }
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .ctx(|| format!("creating {}", path.display()))?;
    // DirBuilder's mode goes through the umask; the final mode must not depend on it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {}", path.display()))
}

/// A layer/image/container store rooted at a graph root. `Send + Sync`; share it with `Arc`.
pub struct Store {
    root: PathBuf,
    opts: StoreOptions,
    emitter: Emitter,
    storage_lock: LockFile,
    layers_lock: LockFile,
    images_lock: LockFile,
    containers_lock: LockFile,
    layers: Mutex<Cache<Layer>>,
    images: Mutex<Cache<Image>>,
    containers: Mutex<Cache<Container>>,
    /// Whether the staging dirs and `overlay-layers` share a filesystem, so a staged commit can
    /// prepare its `layers.json` in its staging dir and rename it over (else `overlay` is a mount of
    /// its own and the temp file is made beside `layers.json`, under the lock).
    stage_metadata: bool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("opts", &self.opts)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root` and recovers from crashes: removes incomplete layers,
    /// layer directories nothing records, and stale staging directories.
    pub fn open(root: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(root).ctx(|| format!("creating graph root {}", root.display()))?;
        // One canonical path per lock file keeps the in-process lock registry keyed correctly.
        let root = root
            .canonicalize()
            .ctx(|| format!("resolving {}", root.display()))?;
        for d in [
            "overlay",
            "overlay/staging",
            "overlay-layers",
            "overlay-images",
            "overlay-containers",
        ] {
            let p = root.join(d);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .ctx(|| format!("creating {}", p.display()))?;
        }
        let dev = |rel: &str| {
            let p = root.join(rel);
            std::fs::metadata(&p)
                .map(|m| m.dev())
                .ctx(|| format!("inspecting {}", p.display()))
        };
        let stage_metadata = dev("overlay/staging")? == dev("overlay-layers")?;
        let lock = |rel: &str, rank| LockFile::new(&root.join(rel), rank, opts.observer.clone());
        let store = Store {
            storage_lock: lock("storage.lock", Rank::Storage),
            layers_lock: lock("overlay-layers/layers.lock", Rank::Layers),
            images_lock: lock("overlay-images/images.lock", Rank::Images),
            containers_lock: lock("overlay-containers/containers.lock", Rank::Containers),
            emitter: Emitter(opts.observer.clone()),
            root,
            opts,
            layers: Mutex::default(),
            images: Mutex::default(),
            containers: Mutex::default(),
            stage_metadata,
        };
        store.recover()?;
        Ok(store)
    }

    /// The graph root (canonicalized).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a layer's (or container layer's) contents live: `overlay/<id>/diff`.
    pub fn diff_path(&self, layer_id: &str) -> PathBuf {
        self.layer_dir(layer_id).join("diff")
    }

    fn layer_dir(&self, id: &str) -> PathBuf {
        self.root.join("overlay").join(id)
    }

    fn staging_root(&self) -> PathBuf {
        self.root.join("overlay/staging")
    }

    fn layers_json(&self) -> PathBuf {
        self.root.join("overlay-layers/layers.json")
    }

    fn images_json(&self) -> PathBuf {
        self.root.join("overlay-images/images.json")
    }

    fn containers_json(&self) -> PathBuf {
        self.root.join("overlay-containers/containers.json")
    }

    /// The metadata as of `token`, reparsed only when another writer changed the token.
    fn load<T: DeserializeOwned>(
        cache: &Mutex<Cache<T>>,
        token: LastWrite,
        path: &Path,
    ) -> Result<Arc<Vec<T>>, StoreError> {
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.token == Some(token) {
            return Ok(Arc::clone(&c.items));
        }
        let items = match std::fs::read(path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| StoreError::Metadata {
                path: path.to_path_buf(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
        };
        *c = Cache {
            token: Some(token),
            items: Arc::new(items),
        };
        Ok(Arc::clone(&c.items))
    }

    /// Records a new last-writer token, then atomically replaces the metadata file through `tmp` (a
    /// sibling temp file made now when `None`). Returns the replaced file, see [`sys::Replacement`].
    fn save<T: Serialize>(
        &self,
        cache: &Mutex<Cache<T>>,
        g: &WriteGuard,
        path: &Path,
        items: Vec<T>,
        tmp: Option<sys::Replacement>,
    ) -> Result<Option<std::fs::File>, StoreError> {
        // Token first: if we die before the rename, others merely reload unchanged data.
        let token = g.record_write()?;
        let data = serde_json::to_vec(&items).map_err(|source| StoreError::Metadata {
            path: path.to_path_buf(),
            source,
        })?;
        let written = tmp
            .map_or_else(|| sys::Replacement::beside(path), Ok)
            .and_then(|tmp| tmp.install(&data, path, self.opts.durable))
            .ctx(|| format!("writing {}", path.display()));
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Layers for modification. Holding the write lock proves any incomplete layer's creator died, so
    /// those are removed here (record and directory).
    fn layers_for_write(&self, g: &WriteGuard) -> Result<Vec<Layer>, StoreError> {
        let all = Self::load(&self.layers, g.last_write()?, &self.layers_json())?;
        let (stale, mut live): (Vec<Layer>, Vec<Layer>) =
            all.iter().cloned().partition(|l| l.incomplete);
        if stale.is_empty() {
            return Ok(live);
        }
        for l in &stale {
            sys::remove_tree(&self.layer_dir(&l.id))
                .ctx(|| format!("removing incomplete layer {}", l.id))?;
        }
        live.retain(|l| !stale.iter().any(|s| s.id == l.id));
        self.save(&self.layers, g, &self.layers_json(), live.clone(), None)?;
        Ok(live)
    }

    fn recover(&self) -> Result<(), StoreError> {
        let op = Op::Recover;
        let _storage = self.storage_lock.write(op)?;
        {
            let lg = self.layers_lock.write(op)?;
            let layers = self.layers_for_write(&lg)?;
            let cg = self.containers_lock.read(op)?;
            let containers =
                Self::load(&self.containers, cg.last_write()?, &self.containers_json())?;
            let known: HashSet<&str> = layers
                .iter()
                .map(|l| l.id.as_str())
                .chain(containers.iter().map(|c| c.layer.as_str()))
                .collect();
            // Layer directories are only created or renamed in under layers.lock (write) or under
            // layers.lock (read) + containers.lock (write); with both held here, an unknown one is an orphan
            // from a crash between rename and record.
            let overlay = self.root.join("overlay");
            for entry in
                std::fs::read_dir(&overlay).ctx(|| format!("listing {}", overlay.display()))?
            {
                let entry = entry.ctx(|| format!("listing {}", overlay.display()))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name != "staging" && !known.contains(name.as_ref()) {
                    let path = entry.path();
                    let removed = match entry.file_type() {
                        Ok(t) if t.is_dir() => sys::remove_tree(&path),
                        _ => std::fs::remove_file(&path),
                    };
                    removed.ctx(|| format!("removing orphan {}", path.display()))?;
                }
            }
        }
        staging::recover(&self.staging_root())?;
        Ok(())
    }

    /// Creates a layer from a (plain, gzip or zstd) tar stream in the store's extraction mode. If a layer
    /// with the requested ID and parent already exists it is returned and the stream is not read.
    pub fn create_layer(
        &self,
        req: &LayerRequest,
        tar_stream: impl Read + Send,
    ) -> Result<Layer, StoreError> {
        self.create_layer_with_mode(req, tar_stream, self.opts.extract_mode)
    }

    /// [`Store::create_layer`] with an explicit extraction mode.
    pub fn create_layer_with_mode(
        &self,
        req: &LayerRequest,
        tar_stream: impl Read + Send,
        mode: ExtractMode,
    ) -> Result<Layer, StoreError> {
        self.create_layer_inner(req, tar_stream, None, mode)
            .map(|(l, _)| l)
    }

    /// Returns the layer and whether this call created it (false: it already existed). `blob_digest`: the
    /// digest the stream must have as given (an OCI blob's), checked before the layer is committed.
    pub(crate) fn create_layer_inner(
        &self,
        req: &LayerRequest,
        tar_stream: impl Read + Send,
        blob_digest: Option<&str>,
        mode: ExtractMode,
    ) -> Result<(Layer, bool), StoreError> {
        let id = match &req.id {
            Some(id) => {
                validate_id(id)?;
                id.clone()
            }
            None => sys::random_hex(32),
        };
        if let Some(p) = &req.parent {
            validate_id(p)?;
        }
        req.names.iter().try_for_each(|n| validate_name(n))?;
        validate_map(&req.uid_map, "UID")?;
        validate_map(&req.gid_map, "GID")?;
        match mode {
            ExtractMode::Locked => self.create_locked(&id, req, tar_stream, blob_digest),
            ExtractMode::Staged => self.create_staged(&id, req, tar_stream, blob_digest),
        }
    }

    fn new_layer(id: &str, req: &LayerRequest, d: Option<Digests>) -> Layer {
        let incomplete = d.is_none();
        let d = d.unwrap_or(Digests {
            compressed_digest: None,
            compressed_size: None,
            uncompressed_digest: String::new(),
            uncompressed_size: 0,
        });
        Layer {
            id: id.to_string(),
            parent: req.parent.clone(),
            names: req.names.clone(),
            compressed_digest: d.compressed_digest,
            compressed_size: d.compressed_size,
            uncompressed_digest: d.uncompressed_digest,
            uncompressed_size: d.uncompressed_size,
            created: sys::unix_now_ns(),
            uid_map: req.uid_map.clone(),
            gid_map: req.gid_map.clone(),
            incomplete,
        }
    }

    /// Creates `dir` (0700) and `dir/diff` (0755), then extracts into `diff`, reporting the extraction time,
    /// and checks the stream's digest against `blob_digest`. With `nice` > 0 the extraction runs on a
    /// thread of its own at that lower priority.
    fn extract_into(
        &self,
        dir: &Path,
        req: &LayerRequest,
        stream: impl Read + Send,
        blob_digest: Option<&str>,
        nice: u8,
    ) -> Result<Digests, StoreError> {
        let diff = dir.join("diff");
        mkdir(&diff, 0o755)?;
        let opts = archive::Options {
            uid_map: &req.uid_map,
            gid_map: &req.gid_map,
        };
        let d = self
            .emitter
            .timed(Op::CreateLayer, EventKind::Extract, || {
                if nice == 0 {
                    return archive::extract(stream, &diff, &opts);
                }
                std::thread::scope(|s| {
                    let worker = std::thread::Builder::new()
                        .name("extract".into())
                        .spawn_scoped(s, || {
                            sys::lower_thread_priority(nice);
                            archive::extract(stream, &diff, &opts)
                        })
                        .ctx(|| "starting the extraction thread")?;
                    worker
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p))
                })
            })?;
        if let Some(expected) = blob_digest {
            // The stream as given: compressed if it was, else the tar itself.
            let actual = d
                .compressed_digest
                .as_ref()
                .unwrap_or(&d.uncompressed_digest);
            if actual != expected {
                return Err(StoreError::BlobMismatch {
                    blob: expected.to_string(),
                    msg: format!("content hashes to {actual}"),
                });
            }
        }
        if self.opts.durable {
            let fd = sys::open(&diff, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .ctx(|| format!("opening {}", diff.display()))?;
            sys::syncfs(&fd).ctx(|| format!("syncing {}", diff.display()))?;
        }
        Ok(d)
    }

    fn create_locked(
        &self,
        id: &str,
        req: &LayerRequest,
        stream: impl Read + Send,
        blob_digest: Option<&str>,
    ) -> Result<(Layer, bool), StoreError> {
        let g = self.layers_lock.write(Op::CreateLayer)?;
        let mut layers = self.layers_for_write(&g)?;
        if let Some(l) = precheck(&layers, id, req)? {
            return Ok((l, false));
        }
        let dir = self.layer_dir(id);
        // Recorded as incomplete before anything touches the disk, so a crash leaves something recovery finds.
        layers.push(Self::new_layer(id, req, None));
        self.save(&self.layers, &g, &self.layers_json(), layers.clone(), None)?;
        let created = match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::Conflict(
                format!("directory {} exists but no layer records it", dir.display()),
            )),
            r => r.ctx(|| format!("creating {}", dir.display())),
        };
        let extracted = created.and_then(|()| {
            // Never lowered here: this extraction is the layers.lock hold, and a slower one holds longer.
            self.extract_into(&dir, req, stream, blob_digest, 0)
                .inspect_err(|_| {
                    let _ = sys::remove_tree(&dir);
                })
        });
        layers.pop();
        let d = match extracted {
            Ok(d) => d,
            Err(e) => {
                self.save(&self.layers, &g, &self.layers_json(), layers, None)?;
                return Err(e);
            }
        };
        let layer = Self::new_layer(id, req, Some(d));
        layers.push(layer.clone());
        self.emitter.timed(Op::CreateLayer, EventKind::Commit, || {
            if self.opts.durable {
                sys::fsync_dir(&self.root.join("overlay")).ctx(|| "syncing overlay directory")?;
            }
            self.save(&self.layers, &g, &self.layers_json(), layers, None)
        })?;
        Ok((layer, true))
    }

    fn create_staged(
        &self,
        id: &str,
        req: &LayerRequest,
        stream: impl Read + Send,
        blob_digest: Option<&str>,
    ) -> Result<(Layer, bool), StoreError> {
        {
            let g = self.layers_lock.read(Op::CreateLayer)?;
            let layers = Self::load(&self.layers, g.last_write()?, &self.layers_json())?;
            if let Some(l) = precheck(&layers, id, req)? {
                return Ok((l, false));
            }
        }
        let staged = StagingDir::create(&self.staging_root())?;
        let staged_layer = staged.path().join("layer");
        mkdir(&staged_layer, 0o700)?;
        let d = self.extract_into(
            &staged_layer,
            req,
            stream,
            blob_digest,
            self.opts.extract_nice,
        )?;
        // Everything that can be done before taking the lock is: the commit below only writes and renames.
        let tmp = if self.stage_metadata {
            let path = staged.path().join("layers.json");
            Some(
                sys::Replacement::create(path)
                    .ctx(|| format!("creating a temp file in {}", staged.path().display()))?,
            )
        } else {
            None
        };

        let g = self.layers_lock.write(Op::CreateLayer)?;
        let start = monotonic_ns();
        let mut layers = self.layers_for_write(&g)?;
        if let Some(l) = precheck(&layers, id, req)? {
            // Another process committed the same layer while we extracted; ours is discarded on drop.
            return Ok((l, false));
        }
        let dir = self.layer_dir(id);
        std::fs::rename(&staged_layer, &dir).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => StoreError::Conflict(format!(
                "directory {} exists but no layer records it",
                dir.display()
            )),
            _ => StoreError::io(format!("renaming staged layer to {}", dir.display()), e),
        })?;
        if self.opts.durable {
            sys::fsync_dir(&self.root.join("overlay")).ctx(|| "syncing overlay directory")?;
        }
        let layer = Self::new_layer(id, req, Some(d));
        layers.push(layer.clone());
        let replaced = match self.save(&self.layers, &g, &self.layers_json(), layers, tmp) {
            Ok(replaced) => replaced,
            Err(e) => {
                let _ = sys::remove_tree(&dir);
                return Err(e);
            }
        };
        self.emitter
            .emit(Op::CreateLayer, EventKind::Commit, start, monotonic_ns());
        drop(g);
        drop(replaced);
        drop(staged);
        Ok((layer, true))
    }

    /// All complete layers.
    pub fn layers(&self) -> Result<Vec<Layer>, StoreError> {
        let g = self.layers_lock.read(Op::ReadLayers)?;
        let layers = Self::load(&self.layers, g.last_write()?, &self.layers_json())?;
        Ok(layers.iter().filter(|l| !l.incomplete).cloned().collect())
    }

    /// One layer by ID or name.
    pub fn layer(&self, id_or_name: &str) -> Result<Layer, StoreError> {
        self.layer_for(Op::ReadLayers, id_or_name)
    }

    /// [`Store::layer`] with the lock timings labelled `op`.
    pub(crate) fn layer_for(&self, op: Op, id_or_name: &str) -> Result<Layer, StoreError> {
        let g = self.layers_lock.read(op)?;
        let layers = Self::load(&self.layers, g.last_write()?, &self.layers_json())?;
        let complete: Vec<Layer> = layers.iter().filter(|l| !l.incomplete).cloned().collect();
        find(&complete, id_or_name)
            .cloned()
            .ok_or_else(|| StoreError::LayerNotFound(id_or_name.to_string()))
    }

    /// The layer's uncompressed digest (OCI diff ID).
    pub fn diff_digest(&self, id_or_name: &str) -> Result<String, StoreError> {
        self.layer(id_or_name).map(|l| l.uncompressed_digest)
    }

    /// Deletes a layer that is no layer's parent and no image's top layer. The contents are moved aside under
    /// the lock and removed after it is released, so the hold time does not grow with layer size.
    pub fn delete_layer(&self, id: &str) -> Result<(), StoreError> {
        let op = Op::DeleteLayer;
        let g = self.layers_lock.write(op)?;
        let mut layers = self.layers_for_write(&g)?;
        let id = find(&layers, id)
            .ok_or_else(|| StoreError::LayerNotFound(id.to_string()))?
            .id
            .clone();
        if let Some(child) = layers.iter().find(|l| l.parent.as_deref() == Some(&id)) {
            return Err(StoreError::InUse(format!(
                "layer {id} is the parent of layer {}",
                child.id
            )));
        }
        {
            let ig = self.images_lock.read(op)?;
            let images = Self::load(&self.images, ig.last_write()?, &self.images_json())?;
            if let Some(img) = images.iter().find(|i| i.top_layer.as_deref() == Some(&id)) {
                return Err(StoreError::InUse(format!(
                    "layer {id} is the top layer of image {}",
                    img.id
                )));
            }
        }
        let trash = StagingDir::create(&self.staging_root())?;
        layers.retain(|l| l.id != id);
        self.save(&self.layers, &g, &self.layers_json(), layers, None)?;
        move_aside(&self.layer_dir(&id), &trash)?;
        drop(g);
        drop(trash);
        Ok(())
    }

    /// Records an image whose top layer exists (layers.lock read, then images.lock write). An existing ID gets
    /// the new names added; names move from any other image, like re-tagging.
    pub fn create_image(
        &self,
        id: &str,
        top_layer: Option<&str>,
        names: &[String],
        digest: Option<&str>,
    ) -> Result<Image, StoreError> {
        validate_id(id)?;
        names.iter().try_for_each(|n| validate_name(n))?;
        let op = Op::CreateImage;
        let lg = self.layers_lock.read(op)?;
        if let Some(top) = top_layer {
            let layers = Self::load(&self.layers, lg.last_write()?, &self.layers_json())?;
            if !layers.iter().any(|l| l.id == top && !l.incomplete) {
                return Err(StoreError::LayerNotFound(top.to_string()));
            }
        }
        let ig = self.images_lock.write(op)?;
        let mut images = Self::load(&self.images, ig.last_write()?, &self.images_json())?.to_vec();
        for other in images.iter_mut().filter(|i| i.id != id) {
            other.names.retain(|n| !names.contains(n));
        }
        let image = match images.iter_mut().find(|i| i.id == id) {
            Some(img) => {
                for n in names {
                    if !img.names.contains(n) {
                        img.names.push(n.clone());
                    }
                }
                if digest.is_some() {
                    img.digest = digest.map(str::to_string);
                }
                img.clone()
            }
            None => {
                let img = Image {
                    id: id.to_string(),
                    names: names.to_vec(),
                    top_layer: top_layer.map(str::to_string),
                    digest: digest.map(str::to_string),
                    created: sys::unix_now_ns(),
                };
                images.push(img.clone());
                img
            }
        };
        self.save(&self.images, &ig, &self.images_json(), images, None)?;
        Ok(image)
    }

    /// All images.
    pub fn images(&self) -> Result<Vec<Image>, StoreError> {
        let g = self.images_lock.read(Op::ReadImages)?;
        Ok(Self::load(&self.images, g.last_write()?, &self.images_json())?.to_vec())
    }

    /// One image by ID or name.
    pub fn image(&self, id_or_name: &str) -> Result<Image, StoreError> {
        let g = self.images_lock.read(Op::ReadImages)?;
        let images = Self::load(&self.images, g.last_write()?, &self.images_json())?;
        find(&images, id_or_name)
            .cloned()
            .ok_or_else(|| StoreError::ImageNotFound(id_or_name.to_string()))
    }

    /// What `podman create` does to the store: layers.lock (read) and images.lock (read) to resolve the image
    /// and its top layer, then containers.lock (write) to create an empty container layer and the record.
    pub fn create_container(
        &self,
        image: &str,
        name: Option<&str>,
    ) -> Result<Container, StoreError> {
        if let Some(n) = name {
            validate_name(n)?;
        }
        let op = Op::CreateContainer;
        let lg = self.layers_lock.read(op)?;
        let layers = Self::load(&self.layers, lg.last_write()?, &self.layers_json())?;
        let img = {
            let ig = self.images_lock.read(op)?;
            let images = Self::load(&self.images, ig.last_write()?, &self.images_json())?;
            find(&images, image)
                .cloned()
                .ok_or_else(|| StoreError::ImageNotFound(image.to_string()))?
        };
        if let Some(top) = &img.top_layer
            && !layers.iter().any(|l| &l.id == top && !l.incomplete)
        {
            return Err(StoreError::LayerNotFound(top.clone()));
        }
        let cg = self.containers_lock.write(op)?;
        let mut containers =
            Self::load(&self.containers, cg.last_write()?, &self.containers_json())?.to_vec();
        if let Some(n) = name
            && let Some(other) = containers.iter().find(|c| c.names.iter().any(|x| x == n))
        {
            return Err(StoreError::Conflict(format!(
                "name {n:?} is already used by container {}",
                other.id
            )));
        }
        let c = Container {
            id: sys::random_hex(32),
            names: name.map(str::to_string).into_iter().collect(),
            image: img.id,
            layer: sys::random_hex(32),
            created: sys::unix_now_ns(),
        };
        let dir = self.layer_dir(&c.layer);
        mkdir(&dir, 0o700)?;
        mkdir(&dir.join("diff"), 0o755)?;
        containers.push(c.clone());
        if let Err(e) = self.save(
            &self.containers,
            &cg,
            &self.containers_json(),
            containers,
            None,
        ) {
            let _ = sys::remove_tree(&dir);
            return Err(e);
        }
        Ok(c)
    }

    /// All containers.
    pub fn containers(&self) -> Result<Vec<Container>, StoreError> {
        let g = self.containers_lock.read(Op::ReadContainers)?;
        Ok(Self::load(&self.containers, g.last_write()?, &self.containers_json())?.to_vec())
    }

    /// Deletes a container and its layer (layers.lock read, containers.lock write).
    pub fn delete_container(&self, id_or_name: &str) -> Result<(), StoreError> {
        let op = Op::DeleteContainer;
        let lg = self.layers_lock.read(op)?;
        let cg = self.containers_lock.write(op)?;
        let mut containers =
            Self::load(&self.containers, cg.last_write()?, &self.containers_json())?.to_vec();
        let c = find(&containers, id_or_name)
            .cloned()
            .ok_or_else(|| StoreError::ContainerNotFound(id_or_name.to_string()))?;
        let trash = StagingDir::create(&self.staging_root())?;
        containers.retain(|x| x.id != c.id);
        self.save(
            &self.containers,
            &cg,
            &self.containers_json(),
            containers,
            None,
        )?;
        move_aside(&self.layer_dir(&c.layer), &trash)?;
        drop(cg);
        drop(lg);
        drop(trash);
        Ok(())
    }
}

/// Renames a layer directory into a staging dir, which deletes it when dropped.
fn move_aside(dir: &Path, trash: &StagingDir) -> Result<(), StoreError> {
    match std::fs::rename(dir, trash.path().join("layer")) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r.ctx(|| format!("moving {} aside", dir.display())),
    }
}
