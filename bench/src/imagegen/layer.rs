//! One layer blob: a deterministic tar stream (sorted entries, fixed mtimes and owners, ChaCha
//! content), compressed without timestamps, hashed on the way to disk.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::{Compression, GenError, ImageSpec, LayerInfo, io_err, mix};

/// mtime of every tar entry: 2024-01-01T00:00:00Z.
const MTIME: u64 = 1_704_067_200;
const FILES_PER_DIR: usize = 16;
/// Content is written in chunks; each chunk is either random bytes or text, which keeps the
/// gzip ratio near 1.5:1 — compressible like real binaries, never "compresses to nothing".
const CHUNK: usize = 4096;

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
            Compression::Plain => Compressor::None(w),
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
pub(super) fn write_layer_blob(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::ByteSize;

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
}
