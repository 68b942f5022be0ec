//! The names containers/storage gives its lock and metadata files under the graph root; the one place
//! they are spelled, for the store and for tools that trace or inspect a store.

/// Taken (write) by [`crate::Store::open`]'s crash recovery; first in the lock order.
pub const STORAGE_LOCK: &str = "storage.lock";
/// Guards `layers.json` and the layer directories under [`OVERLAY_DIR`].
pub const LAYERS_LOCK: &str = "layers.lock";
/// Guards `images.json`.
pub const IMAGES_LOCK: &str = "images.lock";
/// Guards `containers.json` and the container layer directories.
pub const CONTAINERS_LOCK: &str = "containers.lock";

/// Directories holding each lock and its metadata file, relative to the graph root.
pub const LAYERS_DIR: &str = "overlay-layers";
pub const IMAGES_DIR: &str = "overlay-images";
pub const CONTAINERS_DIR: &str = "overlay-containers";
/// Layer contents: `overlay/<id>/diff`.
pub const OVERLAY_DIR: &str = "overlay";
/// Staged extractions and directories being deleted.
pub const STAGING_DIR: &str = "overlay/staging";

/// Lock files relative to the graph root.
pub const STORAGE_LOCK_PATH: &str = STORAGE_LOCK;
pub const LAYERS_LOCK_PATH: &str = "overlay-layers/layers.lock";
pub const IMAGES_LOCK_PATH: &str = "overlay-images/images.lock";
pub const CONTAINERS_LOCK_PATH: &str = "overlay-containers/containers.lock";

/// Metadata files relative to the graph root.
pub const LAYERS_JSON_PATH: &str = "overlay-layers/layers.json";
pub const IMAGES_JSON_PATH: &str = "overlay-images/images.json";
pub const CONTAINERS_JSON_PATH: &str = "overlay-containers/containers.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_directory_plus_basename() {
        assert_eq!(LAYERS_LOCK_PATH, format!("{LAYERS_DIR}/{LAYERS_LOCK}"));
        assert_eq!(IMAGES_LOCK_PATH, format!("{IMAGES_DIR}/{IMAGES_LOCK}"));
        assert_eq!(
            CONTAINERS_LOCK_PATH,
            format!("{CONTAINERS_DIR}/{CONTAINERS_LOCK}")
        );
        assert_eq!(LAYERS_JSON_PATH, format!("{LAYERS_DIR}/layers.json"));
        assert_eq!(IMAGES_JSON_PATH, format!("{IMAGES_DIR}/images.json"));
        assert_eq!(
            CONTAINERS_JSON_PATH,
            format!("{CONTAINERS_DIR}/containers.json")
        );
        assert_eq!(STAGING_DIR, format!("{OVERLAY_DIR}/staging"));
    }
}
