//! What a scenario needs before its first pull: the output directory, the image set (generated or
//! reused, with a progress bar), the small base image readers create containers from, and a warm
//! page cache.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use store_core::{ExtractMode, Store, StoreOptions};

use crate::error::{Context, Result};
use crate::imagegen::{self, Compression, GenSet, GenSpec, ImageInfo, ImageSpec};
use crate::progress::byte_bar;
use crate::size::ByteSize;

/// Creates `out` and returns it absolute: the kernel reports lock paths absolute.
pub fn out_dir(out: &Path) -> Result<PathBuf> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    out.canonicalize()
        .with_context(|| format!("resolving {}", out.display()))
}

/// The image set in `dir`, generated or reused (the bool says reused).
pub fn images(dir: &Path, spec: &GenSpec, quiet: bool) -> Result<(GenSet, bool)> {
    let bar = byte_bar(spec.total_bytes(), "generating", quiet);
    let generated = imagegen::ensure(dir, spec, &|n| bar.inc(n))
        .with_context(|| format!("generating images in {}", dir.display()))?;
    bar.finish_and_clear();
    Ok(generated)
}

/// The tiny image readers create containers from; pre-pulled into every reader store.
pub fn base_image(out: &Path) -> Result<ImageInfo> {
    let dir = out.join("base-image");
    let _ = fs::remove_dir_all(&dir);
    let spec = ImageSpec {
        layers: 1,
        layer_size: ByteSize(256 << 10),
        files_per_layer: 8,
        compression: Compression::Gzip,
        seed: 0xba5e,
    };
    imagegen::generate_image(&dir, &spec, imagegen::TAG).context("generating the base image")
}

/// Pulls the base image into `store` (from the parent, before any worker starts); returns its id.
pub fn prepull_base(store: &Path, base: &ImageInfo) -> Result<String> {
    let s = Store::open(store, StoreOptions::default())
        .with_context(|| format!("opening store {}", store.display()))?;
    let outcome = store_core::oci::pull(&s, &base.dir, Some(&base.tag), ExtractMode::Staged)
        .with_context(|| format!("pulling the base image into {}", store.display()))?;
    Ok(outcome.image.id)
}

/// Reads every blob once so the first mode does not pay for cold reads the others skip.
pub fn warm_page_cache(set: &GenSet) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for image in &set.images {
        for layer in &image.layers {
            let path = image
                .dir
                .join("blobs/sha256")
                .join(layer.digest.trim_start_matches("sha256:"));
            let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            while f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?
                > 0
            {}
        }
    }
    Ok(())
}
