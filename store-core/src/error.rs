use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the store; each variant renders as one readable line: names and paths
/// from archives, layouts and requests are shown with control characters escaped (`\n`, `\u{1b}`), so
/// a crafted name can neither break the line nor reach the terminal as an escape sequence.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{}", Escaped(.context))]
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
    #[error("conflict: {}", Escaped(.0))]
    Conflict(String),
    /// The object is still referenced and cannot be deleted.
    #[error("{}", Escaped(.0))]
    InUse(String),
    /// The request itself is malformed (bad ID, bad name, unmappable ID, ...).
    #[error("invalid request: {}", Escaped(.0))]
    Invalid(String),
    /// A tar entry tried to write outside the layer directory.
    #[error("refusing archive entry {path:?}: {}", Escaped(.reason))]
    UnsafeEntry { path: String, reason: String },
    /// The layer stream is not a readable (optionally gzip/zstd compressed) tar archive.
    #[error("corrupt layer archive: {}", Escaped(.0))]
    Archive(String),
    /// Extraction stopped at a resource limit; the partial layer was removed.
    #[error("layer extraction stopped: {0}")]
    LimitExceeded(Limit),
    /// A metadata file (`layers.json`, ...) could not be parsed.
    #[error("corrupt metadata file {}", EscapedPath(.path))]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Two store locks were requested against the documented order (release builds; debug builds panic).
    #[error("lock order violation: {}", Escaped(.0))]
    LockOrder(String),
    /// The OCI layout is missing, incomplete or malformed.
    #[error("OCI layout {}: {}", EscapedPath(.dir), Escaped(.msg))]
    Oci { dir: PathBuf, msg: String },
    /// The reference matches no manifest in the layout's index.json.
    #[error("OCI layout {}: no image with reference {reference:?} (available: {})", EscapedPath(.dir), Escaped(.available))]
    UnknownReference {
        dir: PathBuf,
        reference: String,
        available: String,
    },
    /// A blob's content does not hash to (or is not the size of) its descriptor.
    #[error("blob {}: {}", Escaped(.blob), Escaped(.msg))]
    BlobMismatch { blob: String, msg: String },
}

/// The resource limit an extraction hit (see `StoreOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The uncompressed layer grew past `StoreOptions::max_layer_size`.
    LayerSize { max: u64 },
    /// Free space on the store's filesystem fell under `StoreOptions::free_space_reserve`.
    FreeSpace { reserve: u64, available: u64 },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::LayerSize { max } => write!(
                f,
                "the uncompressed layer is larger than the limit of {max} bytes (max_layer_size)"
            ),
            Limit::FreeSpace { reserve, available } => write!(
                f,
                "{available} bytes free on the store's filesystem, under the reserve of {reserve} bytes \
                 (free_space_reserve)"
            ),
        }
    }
}

/// Shows a string with its control characters escaped (`\n`, `\t`, `\u{1b}`); everything else as is.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// [`Escaped`] for a path (non-UTF-8 bytes shown as U+FFFD).
struct EscapedPath<'a>(&'a Path);

impl fmt::Display for EscapedPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(&self.0.to_string_lossy()).fmt(f)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_names_are_escaped_and_errors_stay_one_line() {
        let name = "evil\n\u{1b}[31mred\ttab é";
        let errors = [
            StoreError::Archive(format!("{name}: hard link target missing")),
            StoreError::io(format!("creating {name}"), io::Error::other("x")),
            StoreError::UnsafeEntry {
                path: name.into(),
                reason: format!("{name} is a symlink"),
            },
            StoreError::Oci {
                dir: PathBuf::from(name),
                msg: name.into(),
            },
            StoreError::Invalid(name.into()),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(
                !s.contains('\n') && !s.contains('\u{1b}') && !s.contains('\t'),
                "{s:?}"
            );
            assert!(s.contains(r"\u{1b}[31mred"), "{s}");
            assert!(
                s.contains('é'),
                "non-control characters stay as they are: {s}"
            );
        }
    }
}
