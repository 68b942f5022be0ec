//! Deterministic synthetic OCI image layouts for the pull benchmark.
//!
//! Output shape of [`ensure`]: `DIR/img-00`, `DIR/img-01`, … — one OCI image layout per image, each
//! tagged `latest` (so `podman pull oci:DIR/img-00:latest` works), plus `DIR/lockbench-gen.json`, the
//! stamp that lets a later run reuse the images when the parameters did not change. Every image gets
//! its own seed, so no two images share a layer and every pull really extracts.
//!
//! Bytes are a pure function of the parameters: fixed mtimes and owners, entries in sorted order,
//! a ChaCha RNG seeded per layer, compressors without timestamps.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::size::ByteSize;
pub use store_core::Compression;

mod layer;
mod layout;

use layer::write_layer_blob;
pub use layer::write_layer_tar;
use layout::write_metadata;

/// The tag every generated image carries (`org.opencontainers.image.ref.name`).
pub const TAG: &str = "latest";
/// Name of the parameter stamp written next to the generated images.
pub const STAMP: &str = "lockbench-gen.json";

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid generator parameters: {0}")]
    Spec(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GenError + '_ {
    move |source| GenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one image looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub layers: usize,
    /// Uncompressed file content per layer (tar headers come on top).
    pub layer_size: ByteSize,
    pub files_per_layer: usize,
    pub compression: Compression,
    pub seed: u64,
}

/// A set of images: `images` layouts that differ only by their derived seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenSpec {
    pub images: usize,
    pub layers: usize,
    pub layer_size: ByteSize,
    pub files_per_layer: usize,
    pub compression: Compression,
    pub seed: u64,
}

impl GenSpec {
    pub fn image(&self, index: usize) -> ImageSpec {
        ImageSpec {
            layers: self.layers,
            layer_size: self.layer_size,
            files_per_layer: self.files_per_layer,
            compression: self.compression,
            seed: mix(self.seed, index as u64),
        }
    }

    fn validate(&self) -> Result<(), GenError> {
        if self.images == 0 || self.images > 1000 {
            return Err(GenError::Spec("--images must be 1..=1000".into()));
        }
        self.image(0).validate()
    }

    /// Total uncompressed file content of all images.
    pub fn total_bytes(&self) -> u64 {
        self.images as u64 * self.layers as u64 * self.layer_size.0
    }
}

impl ImageSpec {
    fn validate(&self) -> Result<(), GenError> {
        if self.layers == 0 || self.layers > 127 {
            return Err(GenError::Spec("--layers must be 1..=127".into()));
        }
        if self.files_per_layer == 0 || self.files_per_layer > 1_000_000 {
            return Err(GenError::Spec(
                "--files-per-layer must be 1..=1000000".into(),
            ));
        }
        Ok(())
    }
}

/// One generated layer, as the manifest and config describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// `sha256:…` of the compressed blob.
    pub digest: String,
    /// `sha256:…` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    pub compressed_size: u64,
    pub tar_size: u64,
}

/// One generated image layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    pub dir: PathBuf,
    pub tag: String,
    pub manifest_digest: String,
    pub layers: Vec<LayerInfo>,
}

impl ImageInfo {
    /// `DIR:TAG`, what `lockbench pull` and `podman pull oci:` take.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.dir.display(), self.tag)
    }
    pub fn tar_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.tar_size).sum()
    }
    pub fn compressed_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.compressed_size).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenSet {
    pub spec: GenSpec,
    pub images: Vec<ImageInfo>,
}

/// splitmix64 of `seed` and `salt`: independent seeds for images and layers.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn image_name(index: usize) -> String {
    format!("img-{index:02}")
}

/// Returns the image set in `out`, generating what is missing or stale. `progress` receives
/// uncompressed bytes as they are produced (from several threads). The bool says "reused".
pub fn ensure(
    out: &Path,
    spec: &GenSpec,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(GenSet, bool), GenError> {
    spec.validate()?;
    fs::create_dir_all(out).map_err(io_err(out))?;
    let out = out.canonicalize().map_err(io_err(out))?;
    let stamp = out.join(STAMP);
    if let Some(set) = read_stamp(&stamp)
        && set.spec == *spec
        && set.images.iter().all(is_intact)
    {
        return Ok((set, true));
    }
    // Stale or partial: drop the stamp first so an interrupted regeneration is never mistaken
    // for a complete one.
    match fs::remove_file(&stamp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&stamp)(e)),
        _ => {}
    }
    let jobs: Vec<(usize, usize)> = (0..spec.images)
        .flat_map(|i| (0..spec.layers).map(move |l| (i, l)))
        .collect();
    let staging: Vec<PathBuf> = (0..spec.images)
        .map(|i| out.join(format!(".{}.tmp", image_name(i))))
        .collect();
    for dir in &staging {
        remove_dir_if_exists(dir)?;
        fs::create_dir_all(dir.join("blobs/sha256")).map_err(io_err(dir))?;
    }
    let layers = run_parallel(&jobs, |&(i, l)| {
        write_layer_blob(&staging[i], &spec.image(i), l, progress)
    })?;
    let mut images = Vec::with_capacity(spec.images);
    for (i, dir) in staging.iter().enumerate() {
        let own: Vec<LayerInfo> = jobs
            .iter()
            .zip(&layers)
            .filter(|((img, _), _)| *img == i)
            .map(|(_, info)| info.clone())
            .collect();
        let name = image_name(i);
        let manifest_digest = write_metadata(dir, &spec.image(i), &own, TAG)?;
        let final_dir = out.join(&name);
        remove_dir_if_exists(&final_dir)?;
        fs::rename(dir, &final_dir).map_err(io_err(&final_dir))?;
        images.push(ImageInfo {
            name,
            dir: final_dir,
            tag: TAG.to_string(),
            manifest_digest,
            layers: own,
        });
    }
    // Leftovers of an earlier, larger set would otherwise be mistaken for part of this one.
    for i in spec.images.. {
        let dir = out.join(image_name(i));
        if !dir.join("oci-layout").exists() {
            break;
        }
        remove_dir_if_exists(&dir)?;
    }
    let set = GenSet {
        spec: *spec,
        images,
    };
    let text = serde_json::to_vec_pretty(&set).expect("GenSet serializes");
    locktrace_report::write_atomic(&stamp, &text).map_err(io_err(&stamp))?;
    Ok((set, false))
}

/// Writes one image layout into `dir` (which must not exist or be empty) and describes it.
pub fn generate_image(dir: &Path, spec: &ImageSpec, tag: &str) -> Result<ImageInfo, GenError> {
    spec.validate()?;
    fs::create_dir_all(dir.join("blobs/sha256")).map_err(io_err(dir))?;
    let layers = (0..spec.layers)
        .map(|l| write_layer_blob(dir, spec, l, &|_| {}))
        .collect::<Result<Vec<_>, _>>()?;
    let manifest_digest = write_metadata(dir, spec, &layers, tag)?;
    Ok(ImageInfo {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dir: dir.to_path_buf(),
        tag: tag.to_string(),
        manifest_digest,
        layers,
    })
}

fn read_stamp(path: &Path) -> Option<GenSet> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Cheap integrity check for the cache: every blob is present with its recorded size.
fn is_intact(image: &ImageInfo) -> bool {
    let blob_ok = |digest: &str, size: u64| {
        digest
            .strip_prefix("sha256:")
            .and_then(|hex| fs::metadata(image.dir.join("blobs/sha256").join(hex)).ok())
            .is_some_and(|m| m.len() == size)
    };
    image.dir.join("index.json").is_file()
        && image
            .dir
            .join("blobs/sha256")
            .join(
                image
                    .manifest_digest
                    .strip_prefix("sha256:")
                    .unwrap_or_default(),
            )
            .is_file()
        && image
            .layers
            .iter()
            .all(|l| blob_ok(&l.digest, l.compressed_size))
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), GenError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(dir)(e)),
        _ => Ok(()),
    }
}

/// Runs `f` over `jobs` on up to `available_parallelism` threads, keeping job order in the result.
fn run_parallel<J: Sync, T: Send>(
    jobs: &[J],
    f: impl Fn(&J) -> Result<T, GenError> + Sync,
) -> Result<Vec<T>, GenError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len())
        .max(1);
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<T, GenError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let idx = {
                        let mut n = next.lock().expect("job counter");
                        let idx = *n;
                        *n += 1;
                        idx
                    };
                    let Some(job) = jobs.get(idx) else { break };
                    let r = f(job);
                    let failed = r.is_err();
                    results.lock().expect("job results")[idx] = Some(r);
                    if failed {
                        // Skip the remaining jobs; the first error is reported.
                        *next.lock().expect("job counter") = jobs.len();
                    }
                }
            });
        }
    });
    let mut out = Vec::with_capacity(jobs.len());
    for r in results.into_inner().expect("job results") {
        match r {
            Some(r) => out.push(r?),
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ() {
        assert_ne!(mix(1, 0), mix(1, 1));
        assert_ne!(mix(1, 0), mix(2, 0));
    }
}
