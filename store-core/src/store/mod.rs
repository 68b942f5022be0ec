//! The store: layout, the three guarded record files, and the image/container operations; layer creation
//! and deletion are in [`layers`].

mod layers;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::durability::Durability;
use crate::error::{IoContext, StoreError};
use crate::layout;
use crate::lockfile::{LockFile, Rank, WriteGuard};
use crate::observer::{Emitter, Op};
use crate::options::StoreOptions;
use crate::record::{Container, Image, Layer, validate_id, validate_name};
use crate::record_file::RecordFile;
use crate::staging::{self, StagingDir};
use crate::sys;

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

fn mkdir(path: &Path, mode: u32) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .ctx(|| format!("creating {}", path.display()))?;
    // DirBuilder's mode goes through the umask; the final mode must not depend on it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {}", path.display()))
}

/// Renames a layer directory into a staging dir, which deletes it when dropped.
fn move_aside(dir: &Path, trash: &StagingDir) -> Result<(), StoreError> {
    match std::fs::rename(dir, trash.path().join("layer")) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r.ctx(|| format!("moving {} aside", dir.display())),
    }
}

/// A layer/image/container store rooted at a graph root. `Send + Sync`; share it with `Arc`.
///
/// Which lock guards what (lock order `storage → layers → images → containers`, see [`crate::lockfile`]):
pub struct Store {
    /// Canonical graph root. Set at open, never changed: no lock.
    root: PathBuf,
    /// Set at open, never changed: no lock.
    opts: StoreOptions,
    /// Forwards timings to `opts.observer`; stateless: no lock.
    emitter: Emitter,
    /// `storage.lock`: taken for writing by crash recovery at open only, which it serializes between
    /// processes opening the store; guards no field here.
    storage_lock: LockFile,
    /// `layers.json` and its cache, guarded by `layers.lock`; so are the `overlay/<id>` directories of
    /// image layers (created, renamed in and removed only under its write lock).
    layers: RecordFile<Layer>,
    /// `images.json` and its cache, guarded by `images.lock`.
    images: RecordFile<Image>,
    /// `containers.json` and its cache, guarded by `containers.lock`; so are container layer
    /// directories (created and moved aside under its write lock, with `layers.lock` read).
    containers: RecordFile<Container>,
    /// Whether the staging dirs and `overlay-layers` share a filesystem, so a staged commit can
    /// prepare its `layers.json` in its staging dir and rename it over (else `overlay` is a mount of
    /// its own and the temp file is made beside `layers.json`, under the lock). Set at open: no lock.
    stage_metadata: bool,
    /// Issues the syncs of `opts.sync` (shared with the record files). Set at open: no lock.
    durability: Durability,
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
    /// layer directories nothing records, stale staging directories and metadata temp files.
    pub fn open(root: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(root).ctx(|| format!("creating graph root {}", root.display()))?;
        // One canonical path per lock file keeps the in-process lock registry keyed correctly.
        let root = root
            .canonicalize()
            .ctx(|| format!("resolving {}", root.display()))?;
        for d in [
            layout::OVERLAY_DIR,
            layout::STAGING_DIR,
            layout::LAYERS_DIR,
            layout::IMAGES_DIR,
            layout::CONTAINERS_DIR,
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
        let stage_metadata = dev(layout::STAGING_DIR)? == dev(layout::LAYERS_DIR)?;
        let obs = || opts.observer.clone();
        let durability = Durability::new(opts.sync);
        let store = Store {
            storage_lock: LockFile::new(
                &root.join(layout::STORAGE_LOCK_PATH),
                Rank::Storage,
                obs(),
            ),
            layers: RecordFile::new(
                &root,
                layout::LAYERS_LOCK_PATH,
                Rank::Layers,
                layout::LAYERS_JSON_PATH,
                obs(),
                durability.clone(),
            ),
            images: RecordFile::new(
                &root,
                layout::IMAGES_LOCK_PATH,
                Rank::Images,
                layout::IMAGES_JSON_PATH,
                obs(),
                durability.clone(),
            ),
            containers: RecordFile::new(
                &root,
                layout::CONTAINERS_LOCK_PATH,
                Rank::Containers,
                layout::CONTAINERS_JSON_PATH,
                obs(),
                durability.clone(),
            ),
            emitter: Emitter(obs()),
            root,
            opts,
            durability,
            stage_metadata,
        };
        if store.needs_recovery()? {
            store.recover()?;
        }
        // Staging directories carry their own locks, so this needs no store lock (see staging.rs).
        staging::recover(&store.staging_root())?;
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

    fn overlay_dir(&self) -> PathBuf {
        self.root.join(layout::OVERLAY_DIR)
    }

    fn layer_dir(&self, id: &str) -> PathBuf {
        self.overlay_dir().join(id)
    }

    fn staging_root(&self) -> PathBuf {
        self.root.join(layout::STAGING_DIR)
    }

    /// Layers for modification. Holding the write lock proves any incomplete layer's creator died, so
    /// those are removed here (record and directory).
    fn layers_for_write(&self, g: &WriteGuard) -> Result<Vec<Layer>, StoreError> {
        let all = self.layers.load(g)?;
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
        self.layers.save(g, live.clone(), None)?;
        Ok(live)
    }

    /// Whether a crash left anything for [`Store::recover`], judged under read locks only, so that
    /// opening a clean store (what every `podman images`-like command does) never waits for, or
    /// makes wait, anything but writers: an incomplete layer, a metadata temp file, or a directory in
    /// `overlay/` that no layer or container records. Stable under these locks: layer directories
    /// appear only under layers.lock (write), or under layers.lock (read) + containers.lock (write).
    fn needs_recovery(&self) -> Result<bool, StoreError> {
        let op = Op::Recover;
        let _storage = self.storage_lock.read(op)?;
        let lg = self.layers.read(op)?;
        let layers = self.layers.load(&lg)?;
        if layers.iter().any(|l| l.incomplete) || self.layers.has_leftover() {
            return Ok(true);
        }
        // Each temp file is looked for under its file's read lock: a live writer's (every pull
        // writes images.json) is then never mistaken for a dead one's.
        let _images = self.images.read(op)?;
        if self.images.has_leftover() {
            return Ok(true);
        }
        let cg = self.containers.read(op)?;
        if self.containers.has_leftover() {
            return Ok(true);
        }
        let containers = self.containers.load(&cg)?;
        Ok(!self.unrecorded(&layers, &containers)?.is_empty())
    }

    /// The entries of `overlay/` that no layer or container records (besides `staging/`).
    fn unrecorded(
        &self,
        layers: &[Layer],
        containers: &[Container],
    ) -> Result<Vec<std::fs::DirEntry>, StoreError> {
        let known: HashSet<&str> = layers
            .iter()
            .map(|l| l.id.as_str())
            .chain(containers.iter().map(|c| c.layer.as_str()))
            .collect();
        let overlay = self.overlay_dir();
        let mut unknown = Vec::new();
        for entry in std::fs::read_dir(&overlay).ctx(|| format!("listing {}", overlay.display()))? {
            let entry = entry.ctx(|| format!("listing {}", overlay.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name != "staging" && !known.contains(name.as_ref()) {
                unknown.push(entry);
            }
        }
        Ok(unknown)
    }

    /// Removes what a crash left (see [`Store::needs_recovery`]) under the write locks.
    fn recover(&self) -> Result<(), StoreError> {
        let op = Op::Recover;
        let _storage = self.storage_lock.write(op)?;
        {
            let lg = self.layers.write(op)?;
            let layers = self.layers_for_write(&lg)?;
            self.layers.remove_leftover(&lg)?;
            // Only writers make temp files, so their write locks are taken only when one is lying there
            // (a writer killed before its rename): opening a clean store takes the locks it always took.
            if self.images.has_leftover() {
                let ig = self.images.write(op)?;
                self.images.remove_leftover(&ig)?;
            }
            let containers = if self.containers.has_leftover() {
                let cg = self.containers.write(op)?;
                self.containers.remove_leftover(&cg)?;
                self.containers.load(&cg)?
            } else {
                let cg = self.containers.read(op)?;
                self.containers.load(&cg)?
            };
            // Layer directories are only created or renamed in under layers.lock (write) or under
            // layers.lock (read) + containers.lock (write); with layers.lock (write) held, an unknown one
            // is an orphan from a crash between rename and record (containers.json was read under its
            // lock, and a container layer is recorded under the same hold that creates it).
            for entry in self.unrecorded(&layers, &containers)? {
                let path = entry.path();
                let removed = match entry.file_type() {
                    Ok(t) if t.is_dir() => sys::remove_tree(&path),
                    _ => std::fs::remove_file(&path),
                };
                removed.ctx(|| format!("removing orphan {}", path.display()))?;
            }
        }
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
        let lg = self.layers.read(op)?;
        if let Some(top) = top_layer {
            let layers = self.layers.load(&lg)?;
            if !layers.iter().any(|l| l.id == top && !l.incomplete) {
                return Err(StoreError::LayerNotFound(top.to_string()));
            }
        }
        let ig = self.images.write(op)?;
        let mut images = self.images.load(&ig)?.to_vec();
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
        self.images.save(&ig, images, None)?;
        Ok(image)
    }

    /// All images.
    pub fn images(&self) -> Result<Vec<Image>, StoreError> {
        let g = self.images.read(Op::ReadImages)?;
        Ok(self.images.load(&g)?.to_vec())
    }

    /// One image by ID or name.
    pub fn image(&self, id_or_name: &str) -> Result<Image, StoreError> {
        let g = self.images.read(Op::ReadImages)?;
        let images = self.images.load(&g)?;
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
        let lg = self.layers.read(op)?;
        let layers = self.layers.load(&lg)?;
        let img = {
            let ig = self.images.read(op)?;
            let images = self.images.load(&ig)?;
            find(&images, image)
                .cloned()
                .ok_or_else(|| StoreError::ImageNotFound(image.to_string()))?
        };
        if let Some(top) = &img.top_layer
            && !layers.iter().any(|l| &l.id == top && !l.incomplete)
        {
            return Err(StoreError::LayerNotFound(top.clone()));
        }
        let cg = self.containers.write(op)?;
        let mut containers = self.containers.load(&cg)?.to_vec();
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
        let saved = self
            .durability
            .entry_added(&self.overlay_dir())
            .ctx(|| "syncing the overlay directory")
            .and_then(|()| self.containers.save(&cg, containers, None));
        if let Err(e) = saved {
            let _ = sys::remove_tree(&dir);
            return Err(e);
        }
        Ok(c)
    }

    /// All containers.
    pub fn containers(&self) -> Result<Vec<Container>, StoreError> {
        let g = self.containers.read(Op::ReadContainers)?;
        Ok(self.containers.load(&g)?.to_vec())
    }

    /// Deletes a container and its layer (layers.lock read, containers.lock write).
    pub fn delete_container(&self, id_or_name: &str) -> Result<(), StoreError> {
        let op = Op::DeleteContainer;
        let lg = self.layers.read(op)?;
        let cg = self.containers.write(op)?;
        let mut containers = self.containers.load(&cg)?.to_vec();
        let c = find(&containers, id_or_name)
            .cloned()
            .ok_or_else(|| StoreError::ContainerNotFound(id_or_name.to_string()))?;
        let trash = StagingDir::create(&self.staging_root())?;
        containers.retain(|x| x.id != c.id);
        self.containers.save(&cg, containers, None)?;
        move_aside(&self.layer_dir(&c.layer), &trash)?;
        drop(cg);
        drop(lg);
        drop(trash);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
