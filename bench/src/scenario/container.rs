//! `lockbench create` and `lockbench rm`: a container record and its layer made from an image, and
//! removed again, as `podman create` and `podman rm` do to the store: what compare-podman's readers
//! run against store-core.

use std::path::Path;

use store_core::{Store, StoreOptions};

use crate::error::{Context, Result};

fn open(store: &Path) -> Result<Store> {
    Store::open(store, StoreOptions::default())
        .with_context(|| format!("opening store {}", store.display()))
}

/// Creates container `name` from `image` (ID or name) and prints its ID.
pub fn create(store: &Path, image: &str, name: &str) -> Result<()> {
    let container = open(store)?
        .create_container(image, Some(name))
        .with_context(|| format!("creating container {name} from {image}"))?;
    println!("{}", container.id);
    Ok(())
}

/// Removes container `name` (ID or name) and its layer.
pub fn remove(store: &Path, name: &str) -> Result<()> {
    open(store)?
        .delete_container(name)
        .with_context(|| format!("removing container {name}"))
}
