//! `lockbench images`: the images of a store, as `podman images` lists them (it reads the layers
//! too, for the sizes): what compare-podman's readers run against store-core.

use store_core::{Store, StoreOptions};

use crate::error::{Context, Result};
use crate::size::ByteSize;

/// Prints one line per image: ID (12 hex digits), size of its layer chain, names.
pub fn run(store: &std::path::Path) -> Result<()> {
    let s = Store::open(store, StoreOptions::default())
        .with_context(|| format!("opening store {}", store.display()))?;
    let images = s.images().context("reading the images")?;
    let layers = s.layers().context("reading the layers")?;
    println!("{:<12}  {:>10}  NAMES", "IMAGE ID", "SIZE");
    for image in images {
        let mut size = 0;
        let mut next = image.top_layer.as_deref();
        // Bounded by the layer count: a parent cycle in corrupt metadata cannot loop forever.
        for _ in 0..layers.len() {
            let Some(layer) = next.and_then(|id| layers.iter().find(|l| l.id == id)) else {
                break;
            };
            size += layer.uncompressed_size;
            next = layer.parent.as_deref();
        }
        let id = image.id.get(..12).unwrap_or(&image.id);
        println!(
            "{id:<12}  {:>10}  {}",
            ByteSize(size).to_string(),
            image.names.join(", ")
        );
    }
    Ok(())
}
