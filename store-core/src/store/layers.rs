//! Layer creation (locked and staged), layer reads and deletion: everything under `layers.lock`.

use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::{Store, find, mkdir, move_aside};
use crate::archive::{self, Digests};
use crate::error::{IoContext, StoreError};
use crate::lockfile::WriteGuard;
use crate::observer::{EventKind, Op, monotonic_ns};
use crate::options::ExtractMode;
use crate::record::{IdMap, Layer, LayerRequest, validate_id, validate_name};
use crate::replacement::Replacement;
use crate::staging::StagingDir;
use crate::sys;

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

/// How many times a staged commit prepares layers.json outside the lock before it writes it under the
/// lock instead. Each retry means another writer saved in between and costs one more sync (outside the
/// lock); the fallback bounds that under a storm of commits.
const PREPARE_ATTEMPTS: u32 = 4;

/// The temp file for layers.json inside a staging directory (same filesystem, so it can be renamed).
fn staged_replacement(staged: &StagingDir) -> Result<Replacement, StoreError> {
    Replacement::create(staged.path().join("layers.json"))
        .ctx(|| format!("creating a temp file in {}", staged.path().display()))
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

impl Store {
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

    /// Creates `dir/diff` (0755) and extracts into it, reporting the extraction time, and checks the
    /// stream's digest against `blob_digest`. With `nice` > 0 the extraction runs on a thread of its own
    /// at that lower priority.
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
            max_size: self.opts.max_layer_size,
            free_space_reserve: self.opts.free_space_reserve,
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
        self.durability
            .contents_written(&diff)
            .ctx(|| format!("syncing {}", diff.display()))?;
        Ok(d)
    }

    fn create_locked(
        &self,
        id: &str,
        req: &LayerRequest,
        stream: impl Read + Send,
        blob_digest: Option<&str>,
    ) -> Result<(Layer, bool), StoreError> {
        let g = self.layers.write(Op::CreateLayer)?;
        let mut layers = self.layers_for_write(&g)?;
        if let Some(l) = precheck(&layers, id, req)? {
            return Ok((l, false));
        }
        let dir = self.layer_dir(id);
        // Recorded as incomplete before anything touches the disk, so a crash leaves something recovery finds.
        layers.push(new_layer(id, req, None));
        self.layers.save(&g, layers.clone(), None)?;
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
                self.layers.save(&g, layers, None)?;
                return Err(e);
            }
        };
        let layer = new_layer(id, req, Some(d));
        layers.push(layer.clone());
        self.emitter.timed(Op::CreateLayer, EventKind::Commit, || {
            self.durability
                .entry_added(&self.overlay_dir())
                .ctx(|| "syncing the overlay directory")?;
            self.layers.save(&g, layers, None)
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
            let g = self.layers.read(Op::CreateLayer)?;
            if let Some(l) = precheck(&self.layers.load(&g)?, id, req)? {
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
        let layer = new_layer(id, req, Some(d));
        if self.stage_metadata {
            for _ in 0..PREPARE_ATTEMPTS {
                if let Some(done) = self.commit_prepared(id, req, &layer, &staged)? {
                    return Ok(done);
                }
            }
        }
        self.commit_staged(id, req, layer, staged)
    }

    /// The staged commit with layers.json written and synced before `layers.lock` is taken; under it
    /// only a token check and two renames. `None`: another writer saved layers.json after the snapshot
    /// this was prepared from (or a dead creator's record needs the write lock to clean up), so
    /// nothing was committed.
    ///
    /// Why this is as safe as [`Store::commit_staged`]: the replacement is computed from layers.json
    /// as read under the snapshot's token, and every save records a new token before it renames, so an
    /// unchanged token under the write lock proves layers.json is still what the replacement was
    /// computed from; its data was fdatasync'ed (at [`SyncLevel::Metadata`](crate::SyncLevel) and up)
    /// before the rename, exactly as a save under the lock does. The layer directory is renamed in
    /// before layers.json, as there. Only the moment of the sync moved.
    fn commit_prepared(
        &self,
        id: &str,
        req: &LayerRequest,
        layer: &Layer,
        staged: &StagingDir,
    ) -> Result<Option<(Layer, bool)>, StoreError> {
        let base = {
            let g = self.layers.read(Op::CreateLayer)?;
            self.layers.snapshot(&g)?
        };
        if let Some(l) = precheck(&base.items, id, req)? {
            // Another process committed the same layer while we extracted; ours is discarded on drop.
            return Ok(Some((l, false)));
        }
        if base.items.iter().any(|l| l.incomplete) {
            return Ok(None);
        }
        let mut items = base.items.to_vec();
        items.push(layer.clone());
        let tmp = staged_replacement(staged)?;
        let prepared = self.layers.prepare(&base, items, tmp)?;

        let g = self.layers.write(Op::CreateLayer)?;
        let start = monotonic_ns();
        if !self.layers.is_current(&g, &prepared)? {
            return Ok(None);
        }
        let replaced =
            self.install_staged(&g, staged, id, start, || self.layers.commit(&g, prepared))?;
        drop(g);
        drop(replaced);
        Ok(Some((layer.clone(), true)))
    }

    /// The staged commit with layers.json written (and synced) under `layers.lock`: when the staging
    /// directory is on another filesystem, or when other writers kept invalidating prepared ones.
    fn commit_staged(
        &self,
        id: &str,
        req: &LayerRequest,
        layer: Layer,
        staged: StagingDir,
    ) -> Result<(Layer, bool), StoreError> {
        // Everything that can be done before taking the lock is: the commit below only writes and renames.
        let tmp = if self.stage_metadata {
            Some(staged_replacement(&staged)?)
        } else {
            None
        };

        let g = self.layers.write(Op::CreateLayer)?;
        let start = monotonic_ns();
        let mut layers = self.layers_for_write(&g)?;
        if let Some(l) = precheck(&layers, id, req)? {
            // Another process committed the same layer while we extracted; ours is discarded on drop.
            return Ok((l, false));
        }
        layers.push(layer.clone());
        let replaced =
            self.install_staged(&g, &staged, id, start, || self.layers.save(&g, layers, tmp))?;
        drop(g);
        drop(replaced);
        drop(staged);
        Ok((layer, true))
    }

    /// Under the write lock `g`: renames the staged layer directory into place, syncs `overlay/` as
    /// the level says, then records the layer with `record` (the directory is removed again if that
    /// fails before the record is in place), and reports the commit as from `start`. Returns the
    /// replaced metadata file, to be dropped after the lock is released.
    fn install_staged(
        &self,
        g: &WriteGuard,
        staged: &StagingDir,
        id: &str,
        start: u64,
        record: impl FnOnce() -> Result<Option<std::fs::File>, StoreError>,
    ) -> Result<Option<std::fs::File>, StoreError> {
        let dir = self.layer_dir(id);
        std::fs::rename(staged.path().join("layer"), &dir).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => StoreError::Conflict(format!(
                "directory {} exists but no layer records it",
                dir.display()
            )),
            _ => StoreError::io(format!("renaming staged layer to {}", dir.display()), e),
        })?;
        let replaced = self
            .durability
            .entry_added(&self.overlay_dir())
            .ctx(|| "syncing the overlay directory")
            .and_then(|()| record())
            .inspect_err(|_| {
                // A sync that failed after the rename leaves the layer recorded: its directory
                // stays. When unsure, it stays too (recovery removes it if nothing records it).
                let recorded = self
                    .layers
                    .load(g)
                    .map_or(true, |layers| layers.iter().any(|l| l.id == id));
                if !recorded {
                    let _ = sys::remove_tree(&dir);
                }
            })?;
        self.emitter
            .emit(Op::CreateLayer, EventKind::Commit, start, monotonic_ns());
        Ok(replaced)
    }

    /// All complete layers.
    pub fn layers(&self) -> Result<Vec<Layer>, StoreError> {
        let g = self.layers.read(Op::ReadLayers)?;
        let layers = self.layers.load(&g)?;
        Ok(layers.iter().filter(|l| !l.incomplete).cloned().collect())
    }

    /// One layer by ID or name.
    pub fn layer(&self, id_or_name: &str) -> Result<Layer, StoreError> {
        self.layer_for(Op::ReadLayers, id_or_name)
    }

    /// [`Store::layer`] with the lock timings labelled `op`.
    pub(crate) fn layer_for(&self, op: Op, id_or_name: &str) -> Result<Layer, StoreError> {
        let g = self.layers.read(op)?;
        let layers = self.layers.load(&g)?;
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
        let g = self.layers.write(op)?;
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
            let ig = self.images.read(op)?;
            let images = self.images.load(&ig)?;
            if let Some(img) = images.iter().find(|i| i.top_layer.as_deref() == Some(&id)) {
                return Err(StoreError::InUse(format!(
                    "layer {id} is the top layer of image {}",
                    img.id
                )));
            }
        }
        let trash = StagingDir::create(&self.staging_root())?;
        layers.retain(|l| l.id != id);
        self.layers.save(&g, layers, None)?;
        move_aside(&self.layer_dir(&id), &trash)?;
        drop(g);
        drop(trash);
        Ok(())
    }
}
