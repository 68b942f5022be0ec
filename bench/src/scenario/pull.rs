//! `lockbench pull`: one image into one store, timed.

use std::time::Instant;

use store_core::{Store, StoreOptions};

use crate::error::{Context, Result};
use crate::model::PullConfig;
use crate::reference::ImageRef;
use crate::size::ByteSize;

/// Pulls `cfg.image` and prints what it created.
pub fn run(cfg: &PullConfig) -> Result<()> {
    let image: ImageRef = cfg.image.parse()?;
    let opts = StoreOptions {
        extract_nice: cfg.extract_nice,
        sync: cfg.sync,
        max_layer_size: Some(cfg.max_layer_size),
        ..Default::default()
    };
    let store = Store::open(&cfg.store, opts)
        .with_context(|| format!("opening store {}", cfg.store.display()))?;
    let started = Instant::now();
    let outcome = store_core::oci::pull(&store, &image.dir, image.reference.as_deref(), cfg.mode)
        .with_context(|| format!("pulling {}", cfg.image))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "image {} ({} layers created, {} reused, {} in {:.2}s, {:.1} MB/s, mode {})",
        outcome.image.id,
        outcome.layers_created,
        outcome.layers_reused,
        ByteSize(outcome.bytes),
        secs,
        outcome.bytes as f64 / 1e6 / secs.max(1e-9),
        cfg.mode
    );
    Ok(())
}
