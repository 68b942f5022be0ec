//! `lockbench gen`: the image set on its own, for podman, skopeo or later runs.

use std::path::Path;
use std::time::Instant;

use crate::error::Result;
use crate::imagegen::{self, GenSpec};
use crate::progress::byte_bar;
use crate::size::ByteSize;

/// Generates (or reuses) the images in `out` and lists them.
pub fn run(out: &Path, spec: &GenSpec) -> Result<()> {
    let started = Instant::now();
    let bar = byte_bar(spec.total_bytes(), "generating", false);
    let (set, cached) = imagegen::ensure(out, spec, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    let note = if cached { " (cached)" } else { "" };
    for image in &set.images {
        println!(
            "{}  {} uncompressed, {} compressed",
            image.reference(),
            ByteSize(image.tar_bytes()),
            ByteSize(image.compressed_bytes())
        );
    }
    println!(
        "{} images in {}{note}, {:.1}s",
        set.images.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
