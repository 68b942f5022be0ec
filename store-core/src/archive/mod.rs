//! Layer tar streams: compression detection by magic bytes, digests, resource limits, and a symlink-safe
//! extractor.
//!
//! The `tar` crate parses entries; every file system change is made here, relative to directory fds
//! opened with `O_NOFOLLOW`, so no entry can reach outside the layer directory: `..` and absolute paths are
//! refused, a path through a symlink is refused, and hard link targets are resolved the same way.
//! Whiteouts are stored the overlay way: `.wh.NAME` becomes a 0:0 character device `NAME`, and
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory (both need root).
//!
//! [`header`] turns an entry's header into checked metadata, [`extractor`] creates each kind of entry,
//! [`tree`] resolves directories and replaces existing names, [`budget`] enforces the size limits.

mod budget;
mod extractor;
mod header;
mod tree;

use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use crate::compression::Compression;
use crate::digest::HashingReader;
use crate::error::{IoContext, StoreError};
use crate::options::FreeSpaceReserve;
use crate::record::IdMap;
use crate::sys;
use budget::{Budget, Metered};
use extractor::Extractor;
use header::corrupt;

/// ID mappings applied to every entry's owner, and the limits of one extraction.
pub(crate) struct Options<'a> {
    pub uid_map: &'a [IdMap],
    pub gid_map: &'a [IdMap],
    /// Most bytes of uncompressed stream or of written file content; `None`: unlimited.
    pub max_size: Option<u64>,
    /// Free space to leave on the filesystem.
    pub free_space_reserve: FreeSpaceReserve,
}

/// Digests and sizes of an extracted stream.
pub(crate) struct Digests {
    pub compressed_digest: Option<String>,
    pub compressed_size: Option<u64>,
    pub uncompressed_digest: String,
    pub uncompressed_size: u64,
}

/// Extracts a (plain, gzip or zstd) tar stream into the existing directory `dest`; reads the stream to its end
/// so the digests cover every byte. Past a limit of `opts` it stops with [`StoreError::LimitExceeded`]
/// (the caller removes what was written).
pub(crate) fn extract(
    input: impl Read,
    dest: &Path,
    opts: &Options,
) -> Result<Digests, StoreError> {
    let root = sys::open(
        dest,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .ctx(|| format!("opening {}", dest.display()))?;
    let budget = Rc::new(Budget::new(
        opts.max_size,
        opts.free_space_reserve,
        std::os::fd::AsRawFd::as_raw_fd(&root),
    )?);
    let r = budget.check_space().and_then(|()| {
        let ex = Extractor::new(root, opts.uid_map, opts.gid_map, Rc::clone(&budget));
        extract_stream(input, ex, &budget)
    });
    // A limit surfaces through the tar or gzip reader as an opaque io::Error: report it as the limit.
    match budget.hit() {
        Some(limit) => Err(StoreError::LimitExceeded(limit)),
        None => r,
    }
}

fn extract_stream(
    mut input: impl Read,
    mut ex: Extractor,
    budget: &Rc<Budget>,
) -> Result<Digests, StoreError> {
    let mut prefix = [0u8; 4];
    let mut n = 0;
    while n < prefix.len() {
        match input.read(&mut prefix[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(e)),
        }
    }
    let raw = io::Cursor::new(prefix[..n].to_vec()).chain(input);
    let (uncompressed_digest, uncompressed_size, hraw) = match Compression::detect(&prefix[..n]) {
        Compression::Plain => {
            let (uncompressed_digest, uncompressed_size, _) =
                unpack(&mut ex, Metered::new(raw, budget))?;
            return Ok(Digests {
                compressed_digest: None,
                compressed_size: None,
                uncompressed_digest,
                uncompressed_size,
            });
        }
        Compression::Gzip => {
            let dec = flate2::bufread::MultiGzDecoder::new(hashing(raw)?);
            let (digest, size, dec) = unpack(&mut ex, Metered::new(dec, budget))?;
            (digest, size, dec.into_inner().into_inner())
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(hashing(raw)?).map_err(corrupt)?;
            let (digest, size, dec) = unpack(&mut ex, Metered::new(dec, budget))?;
            (digest, size, dec.into_inner().finish())
        }
    };
    // Bytes after the compressed data still count toward the compressed digest.
    let (compressed_digest, compressed_size, _) = finish(hraw)?;
    Ok(Digests {
        compressed_digest: Some(compressed_digest),
        compressed_size: Some(compressed_size),
        uncompressed_digest,
        uncompressed_size,
    })
}

/// Extracts the tar stream `tar`, then reads it to its end (padding and anything after the
/// end-of-archive blocks count toward the digest) and returns its digest, length and source.
fn unpack<R: Read>(ex: &mut Extractor, tar: R) -> Result<(String, u64, R), StoreError> {
    let mut reader = hashing(tar)?;
    ex.unpack(&mut reader)?;
    finish(reader)
}

/// Hashes `r` on a worker thread while this one writes files.
fn hashing<R: Read>(r: R) -> Result<HashingReader<R>, StoreError> {
    HashingReader::new(r).ctx(|| "starting a sha256 worker thread")
}

/// Reads `r` to its end and returns its digest, length and source.
fn finish<R: Read>(mut r: HashingReader<R>) -> Result<(String, u64, R), StoreError> {
    r.skip_rest().map_err(corrupt)?;
    r.finish().ctx(|| "hashing the layer stream")
}
