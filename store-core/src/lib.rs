//! A container layer/image/container store that mirrors containers/storage's on-disk layout and lock
//! discipline, so lock-contention results measured against it transfer to podman, buildah and CRI-O.
//!
//! Layout under the graph root, lock order, extraction modes and crash recovery: see `README.md` and
//! [`lockfile`] (where the lock order is enforced).

mod archive;
mod compression;
mod digest;
mod durability;
mod error;
pub mod layout;
pub mod lockfile;
mod observer;
pub mod oci;
mod options;
mod record;
mod record_file;
mod replacement;
pub mod staging;
mod store;
mod sys;

pub use compression::{Compression, UnknownCompression};
pub use error::{Limit, StoreError};
pub use observer::{EventKind, Observer, Op, StoreEvent, monotonic_ns};
pub use options::{DEFAULT_MAX_LAYER_SIZE, ExtractMode, FreeSpaceReserve, StoreOptions, SyncLevel};
pub use record::{Container, IdMap, Image, Layer, LayerRequest};
pub use store::Store;
