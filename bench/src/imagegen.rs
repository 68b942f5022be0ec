//! Deterministic synthetic OCI image layouts for the pull benchmark.
//!
//! Output shape of [`ensure`]: `DIR/img-00`, `DIR/img-01`, … — one OCI image layout per image, each
//! tagged `latest` (so `podman pull oci:DIR/img-00:latest` works), plus `DIR/lockbench-gen.json`, the
//! stamp that lets a later run reuse the images when the parameters did not change. Every image gets
//! its own seed, so no two images share a layer and every pull really extracts.
//!
//! Bytes are a pure function of the parameters: fixed mtimes and owners, entries in sorted order,
//! a ChaCha RNG seeded per layer, compressors without timestamps.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::size::ByteSize;

/// The tag every generated image carries (`org.opencontainers.image.ref.name`).
pub const TAG: &str = "latest";
/// Name of the parameter stamp written next to the generated images.
pub const STAMP: &str = "lockbench-gen.json";
/// mtime of every tar entry: 2024-01-01T00:00:00Z.
const MTIME: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";
const FILES_PER_DIR: usize = 16;
/// Content is written in chunks; each chunk is either random bytes or text, which keeps the
/// gzip ratio near 1.5:1 — compressible like real binaries, never "compresses to nothing".
const CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid generator parameters: {0}")]
    Spec(String),
    #[error("unknown compression {0:?} (expected gzip, zstd or none)")]
    Compression(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GenError + '_ {
    move |source| GenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

impl FromStr for Compression {
    type Err = GenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(GenError::Compression(other.to_string())),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        })
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

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Compressor<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    fn new(kind: Compression, w: W) -> io::Result<Self> {
        Ok(match kind {
            // GzBuilder writes mtime 0 and no file name: byte-for-byte reproducible.
            Compression::Gzip => {
                Compressor::Gzip(flate2::GzBuilder::new().write(w, flate2::Compression::default()))
            }
            Compression::Zstd => Compressor::Zstd(zstd::Encoder::new(w, 3)?),
            Compression::None => Compressor::None(w),
        })
    }
    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
            Compressor::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

/// Writes layer `index` of `spec` as a compressed blob into `dir/blobs/sha256/`.
fn write_layer_blob(
    dir: &Path,
    spec: &ImageSpec,
    index: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<LayerInfo, GenError> {
    let blobs = dir.join("blobs/sha256");
    let tmp = blobs.join(format!(".layer-{index}.tmp"));
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let compressed = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let compressor = Compressor::new(spec.compression, compressed).map_err(io_err(&tmp))?;
    let mut tar = Hashing::new(compressor);
    write_layer_tar(&mut tar, spec, index, progress).map_err(io_err(&tmp))?;
    let (compressor, diff_id, tar_size) = tar.finish();
    let compressed = compressor.finish().map_err(io_err(&tmp))?;
    let (buf, digest, compressed_size) = compressed.finish();
    buf.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(io_err(&tmp))?;
    let blob = blobs.join(digest.trim_start_matches("sha256:"));
    fs::rename(&tmp, &blob).map_err(io_err(&blob))?;
    Ok(LayerInfo {
        digest,
        diff_id,
        compressed_size,
        tar_size,
    })
}

/// Writes the uncompressed tar stream of layer `index` of `spec` to `w`; returns nothing but
/// reports content bytes to `progress`. Public so benchmarks can extract the very same streams.
pub fn write_layer_tar(
    w: &mut impl Write,
    spec: &ImageSpec,
    index: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(spec.seed, 1000 + index as u64));
    let files = spec.files_per_layer;
    let sizes = split_sizes(&mut rng, spec.layer_size.0, files);
    let root = format!("usr/share/lockbench/layer-{index:03}");
    let mut builder = tar::Builder::new(w);
    let parents = [
        "usr/",
        "usr/share/",
        "usr/share/lockbench/",
        &format!("{root}/"),
    ];
    for d in parents {
        builder.append(&header(d, tar::EntryType::Directory, 0o755, 0), io::empty())?;
    }
    let mut content = Content::new(&mut rng);
    for (f, size) in sizes.into_iter().enumerate() {
        if f % FILES_PER_DIR == 0 {
            let d = format!("{root}/d{:04}/", f / FILES_PER_DIR);
            builder.append(
                &header(&d, tar::EntryType::Directory, 0o755, 0),
                io::empty(),
            )?;
        }
        let path = format!("{root}/d{:04}/f{f:06}.dat", f / FILES_PER_DIR);
        let mode = if f % 7 == 0 { 0o755 } else { 0o644 };
        content.remaining = size;
        builder.append(
            &header(&path, tar::EntryType::Regular, mode, size),
            &mut content,
        )?;
        progress(size);
    }
    builder.into_inner()?.flush()
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_path(path)
        .expect("generated paths are short and relative");
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_cksum();
    h
}

/// Splits `total` bytes into `n` file sizes between 0.25× and 1.75× the mean.
fn split_sizes(rng: &mut ChaCha8Rng, total: u64, n: usize) -> Vec<u64> {
    let weights: Vec<f64> = (0..n).map(|_| rng.random_range(0.25..1.75)).collect();
    let sum: f64 = weights.iter().sum();
    let mut sizes: Vec<u64> = weights
        .iter()
        .map(|w| (total as f64 * w / sum) as u64)
        .collect();
    let assigned: u64 = sizes.iter().sum();
    if let Some(last) = sizes.last_mut() {
        *last += total - assigned.min(total);
    }
    sizes
}

const WORDS: [&str; 32] = [
    "lock",
    "layer",
    "image",
    "store",
    "container",
    "overlay",
    "digest",
    "manifest",
    "config",
    "rootfs",
    "extract",
    "commit",
    "staging",
    "rename",
    "fsync",
    "reader",
    "writer",
    "pull",
    "podman",
    "buildah",
    "registry",
    "blob",
    "index",
    "tar",
    "gzip",
    "zstd",
    "mount",
    "diff",
    "parent",
    "mapping",
    "uid",
    "gid",
];

/// Streams file content: chunks of random bytes interleaved with pseudo-text lines.
struct Content<'r> {
    rng: &'r mut ChaCha8Rng,
    remaining: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<'r> Content<'r> {
    fn new(rng: &'r mut ChaCha8Rng) -> Self {
        Content {
            rng,
            remaining: 0,
            buf: Vec::with_capacity(CHUNK + 64),
            pos: 0,
        }
    }

    fn refill(&mut self) {
        self.buf.clear();
        self.pos = 0;
        if self.rng.random_bool(0.5) {
            self.buf.resize(CHUNK, 0);
            self.rng.fill_bytes(&mut self.buf);
        } else {
            while self.buf.len() < CHUNK {
                let n = self.rng.random_range(0..100_000u32);
                let w1 = WORDS[self.rng.random_range(0..WORDS.len())];
                let w2 = WORDS[self.rng.random_range(0..WORDS.len())];
                let _ = writeln!(self.buf, "{w1} {n} {w2}");
            }
            self.buf.truncate(CHUNK);
        }
    }
}

impl Read for Content<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.buf.len() {
            self.refill();
        }
        let n = out
            .len()
            .min(self.buf.len() - self.pos)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Writes config, manifest and index.json; returns the manifest digest.
fn write_metadata(
    dir: &Path,
    spec: &ImageSpec,
    layers: &[LayerInfo],
    tag: &str,
) -> Result<String, GenError> {
    let config = json!({
        "created": CREATED,
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": { "io.locktrace.lockbench.seed": spec.seed.to_string() },
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        },
        "history": (0..layers.len()).map(|i| json!({
            "created": CREATED,
            "created_by": format!("lockbench gen layer {i}"),
        })).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).expect("config serializes");
    let config_digest = write_blob(dir, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": spec.compression.media_type(),
            "digest": l.digest,
            "size": l.compressed_size,
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest serializes");
    let manifest_digest = write_blob(dir, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    let index_path = dir.join("index.json");
    fs::write(
        &index_path,
        serde_json::to_vec(&index).expect("index serializes"),
    )
    .map_err(io_err(&index_path))?;
    let layout_path = dir.join("oci-layout");
    fs::write(&layout_path, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err(&layout_path))?;
    Ok(manifest_digest)
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<String, GenError> {
    let hex = hex::encode(Sha256::digest(bytes));
    let path = dir.join("blobs/sha256").join(&hex);
    fs::write(&path, bytes).map_err(io_err(&path))?;
    Ok(format!("sha256:{hex}"))
}

/// The OCI architecture name of this host, so podman pulls without a platform mismatch.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_sum_to_total() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (total, n) in [(1_000_000u64, 17usize), (5, 3), (0, 4), (1 << 30, 256)] {
            let sizes = split_sizes(&mut rng, total, n);
            assert_eq!(sizes.len(), n);
            assert_eq!(sizes.iter().sum::<u64>(), total);
        }
    }

    #[test]
    fn content_is_compressible_but_not_trivially() {
        let spec = ImageSpec {
            layers: 1,
            layer_size: ByteSize(2 << 20),
            files_per_layer: 8,
            compression: Compression::Gzip,
            seed: 3,
        };
        let mut tar = Vec::new();
        write_layer_tar(&mut tar, &spec, 0, &|_| {}).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let ratio = tar.len() as f64 / gz.finish().unwrap().len() as f64;
        assert!((1.2..=2.0).contains(&ratio), "gzip ratio {ratio:.2}");
    }

    #[test]
    fn derived_seeds_differ() {
        assert_ne!(mix(1, 0), mix(1, 1));
        assert_ne!(mix(1, 0), mix(2, 0));
    }
}
