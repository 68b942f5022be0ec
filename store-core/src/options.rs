//! How a store behaves: extraction mode, durability, priority, resource limits, observer.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::observer::Observer;

/// Default [`StoreOptions::max_layer_size`]: 32 GiB of uncompressed tar stream, above the largest layers
/// public registries serve, far below what fills a disk from a few MB of gzip.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 32 << 30;

/// Free space a layer extraction must leave on the store's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeSpaceReserve {
    /// No check: extraction runs until the filesystem is full (`ENOSPC`).
    Off,
    /// At least this many bytes.
    Bytes(u64),
    /// At least this percentage of the filesystem's size. Relative, so that a small filesystem (a test
    /// tmpfs) stays usable and a large one keeps room for everything else.
    Percent(u8),
}

/// The default: 1% of the filesystem's size left free.
impl Default for FreeSpaceReserve {
    fn default() -> Self {
        FreeSpaceReserve::Percent(1)
    }
}

/// Where a new layer's tar stream is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractMode {
    /// Into the layer directory while holding `layers.lock` for writing (containers/storage today).
    Locked,
    /// Into a private staging directory with no store lock held; `layers.lock` only for a short
    /// pre-check and an O(1) commit.
    #[default]
    Staged,
}

impl fmt::Display for ExtractMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtractMode::Locked => "locked",
            ExtractMode::Staged => "staged",
        })
    }
}

impl FromStr for ExtractMode {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "locked" => Ok(ExtractMode::Locked),
            "staged" => Ok(ExtractMode::Staged),
            _ => Err(StoreError::Invalid(format!(
                "extract mode {s:?} is not \"locked\" or \"staged\""
            ))),
        }
    }
}

/// How much a store syncs to disk, as containers/storage has it. Every level replaces metadata files
/// atomically (temp file, rename), so a killed process never loses or tears a record; the levels differ
/// in what survives a power loss or kernel crash (see the README's table).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SyncLevel {
    /// Nothing is synced.
    #[default]
    None,
    /// Each metadata file's temp copy is fdatasync'ed before the rename (containers/storage's default,
    /// `AtomicWriteFileWithOpts`); layer contents are not synced.
    Metadata,
    /// Also `syncfs` of the layers' filesystem before a layer is recorded (containers/storage's overlay
    /// `sync=filesystem`), and an fsync of the directory after each rename into it.
    Filesystem,
}

impl fmt::Display for SyncLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncLevel::None => "none",
            SyncLevel::Metadata => "metadata",
            SyncLevel::Filesystem => "filesystem",
        })
    }
}

impl FromStr for SyncLevel {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(SyncLevel::None),
            "metadata" => Ok(SyncLevel::Metadata),
            "filesystem" => Ok(SyncLevel::Filesystem),
            _ => Err(StoreError::Invalid(format!(
                "sync level {s:?} is not \"none\", \"metadata\" or \"filesystem\""
            ))),
        }
    }
}

/// How a store behaves.
#[derive(Clone)]
pub struct StoreOptions {
    /// Mode used by [`crate::Store::create_layer`].
    pub extract_mode: ExtractMode,
    /// What is synced to disk, and when (default: nothing).
    pub sync: SyncLevel,
    /// Nice increment for the threads that decompress, hash and write a staged layer's files (0 leaves
    /// them at the caller's priority). Staged extraction is CPU-bound work done without store locks;
    /// when it saturates the CPUs, a lock holder that sleeps for a moment (a directory lock, a metadata
    /// read) otherwise waits milliseconds for a CPU before it can finish and release. The thread that
    /// takes and releases the store locks keeps the caller's priority, and so does locked extraction,
    /// which runs under layers.lock.
    pub extract_nice: u8,
    /// Most bytes of uncompressed tar stream (and of file content written) one layer may have;
    /// extraction stops with [`crate::Limit::LayerSize`] past it. `None`: no limit, only when asked for.
    pub max_layer_size: Option<u64>,
    /// Free space that must stay on the store's filesystem: extraction checks it (statvfs) before it
    /// starts and every 8 MiB read or written, and stops with [`crate::Limit::FreeSpace`] under it.
    pub free_space_reserve: FreeSpaceReserve,
    /// Receives lock, extraction and commit timings.
    pub observer: Option<Arc<dyn Observer>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            extract_mode: ExtractMode::default(),
            sync: SyncLevel::default(),
            extract_nice: 0,
            max_layer_size: Some(DEFAULT_MAX_LAYER_SIZE),
            free_space_reserve: FreeSpaceReserve::default(),
            observer: None,
        }
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("extract_mode", &self.extract_mode)
            .field("sync", &self.sync)
            .field("extract_nice", &self.extract_nice)
            .field("max_layer_size", &self.max_layer_size)
            .field("free_space_reserve", &self.free_space_reserve)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}
