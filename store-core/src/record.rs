//! The records kept in `layers.json`, `images.json` and `containers.json`.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// One range of an ID mapping: IDs `container_id..container_id+size` in the archive become
/// `host_id..host_id+size` on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// Maps an archive UID/GID to the on-disk one; an empty map is the identity. `None` when it does not
/// fit: outside every range, or (identity) above 32 bits or `u32::MAX`, which `chown` takes as "leave
/// unchanged", so the file would silently stay root's. Mapped ranges never reach it (see
/// `validate_map`: `host_id + size` fits in 32 bits).
pub(crate) fn map_id(maps: &[IdMap], id: u64) -> Option<u32> {
    if maps.is_empty() {
        return u32::try_from(id).ok().filter(|&id| id != u32::MAX);
    }
    maps.iter().find_map(|m| {
        let off = id.checked_sub(u64::from(m.container_id))?;
        (off < u64::from(m.size)).then(|| m.host_id + off as u32)
    })
}

/// What to create: all fields optional; a missing ID gets a random one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRequest {
    pub id: Option<String>,
    pub parent: Option<String>,
    pub names: Vec<String>,
    pub uid_map: Vec<IdMap>,
    pub gid_map: Vec<IdMap>,
}

/// A layer as recorded in `layers.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub id: String,
    pub parent: Option<String>,
    pub names: Vec<String>,
    /// `sha256:…` of the stream as given, when it was compressed.
    pub compressed_digest: Option<String>,
    pub compressed_size: Option<u64>,
    /// `sha256:…` of the uncompressed tar stream (the OCI diff ID).
    pub uncompressed_digest: String,
    /// Bytes in the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created: u64,
    pub uid_map: Vec<IdMap>,
    pub gid_map: Vec<IdMap>,
    /// Set while a locked-mode extraction is running; such records are removed by recovery.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) incomplete: bool,
}

/// An image as recorded in `images.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The config digest's hex for pulled images.
    pub id: String,
    pub names: Vec<String>,
    pub top_layer: Option<String>,
    /// `sha256:…` of the manifest.
    pub digest: Option<String>,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created: u64,
}

/// A container as recorded in `containers.json`: a writable layer on top of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub names: Vec<String>,
    /// The image's ID.
    pub image: String,
    /// The container layer's ID; its contents live in `overlay/<layer>/diff`.
    pub layer: String,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created: u64,
}

/// IDs become directory names, so keep them to a safe alphabet.
pub(crate) fn validate_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id != "staging"
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "ID {id:?} must be 1-128 characters of [A-Za-z0-9._-], not start with '.', and not be \"staging\""
        )))
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "name {name:?} is empty or has control characters"
        )));
    }
    Ok(())
}
