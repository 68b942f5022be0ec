use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the store; each variant renders as one readable line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// No layer has this ID or name.
    #[error("layer {0:?} not found")]
    LayerNotFound(String),
    /// No image has this ID or name.
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    /// No container has this ID or name.
    #[error("container {0:?} not found")]
    ContainerNotFound(String),
    /// The request clashes with what is already in the store (name taken, different parent, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The object is still referenced and cannot be deleted.
    #[error("{0}")]
    InUse(String),
    /// The request itself is malformed (bad ID, bad name, unmappable ID, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A tar entry tried to write outside the layer directory.
    #[error("refusing archive entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },
    /// The layer stream is not a readable (optionally gzip/zstd compressed) tar archive.
    #[error("corrupt layer archive: {0}")]
    Archive(String),
    /// A metadata file (`layers.json`, ...) could not be parsed.
    #[error("corrupt metadata file {path}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Two store locks were requested against the documented order (release builds; debug builds panic).
    #[error("lock order violation: {0}")]
    LockOrder(String),
    /// The OCI layout is missing, incomplete or malformed.
    #[error("OCI layout {dir}: {msg}")]
    Oci { dir: PathBuf, msg: String },
    /// The reference matches no manifest in the layout's index.json.
    #[error("OCI layout {dir}: no image with reference {reference:?} (available: {available})")]
    UnknownReference {
        dir: PathBuf,
        reference: String,
        available: String,
    },
    /// A blob's content does not hash to (or is not the size of) its descriptor.
    #[error("blob {blob}: {msg}")]
    BlobMismatch { blob: String, msg: String },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Attaches a context line to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(f(), e))
    }
}
