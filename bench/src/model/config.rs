//! What a scenario is asked to do, as the command line said it.

use std::path::PathBuf;
use std::time::Duration;

use store_core::{ExtractMode, SyncLevel};

use crate::imagegen::GenSpec;
use crate::model::mode::{BenchMode, TraceMode};
use crate::model::podman::Variant;

/// Default for how long workers get to open their store and print `ready`: normally well under a
/// second, so only a stuck worker (e.g. its store locked by another process) hits it. A worker in an
/// uninterruptible sleep (a hung filesystem) cannot be killed, and then nothing here can help.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `lockbench run`.
pub struct RunConfig {
    pub pulls: usize,
    pub readers: usize,
    pub modes: Vec<BenchMode>,
    pub images: GenSpec,
    pub repeat: usize,
    pub trace: TraceMode,
    pub out: PathBuf,
    /// Where the stores go; default `OUT/stores`. Another filesystem (tmpfs, xfs) shows how much
    /// of the staged commit is the filesystem's metadata path.
    pub stores: Option<PathBuf>,
    pub quiet: bool,
    pub command: Vec<String>,
    /// Passed to every pull worker's store as `extract_nice`.
    pub extract_nice: u8,
    /// Every worker's store's `sync` level.
    pub sync: SyncLevel,
    /// Every worker's store's `max_layer_size` (bytes).
    pub max_layer_size: u64,
    /// How long workers get to print `ready` before they are killed (READY_TIMEOUT by default).
    pub ready_timeout: Duration,
}

/// `lockbench compare-podman`.
pub struct PodmanConfig {
    pub pulls: usize,
    pub images: GenSpec,
    /// In this order; each runs `repeat` times, rotated.
    pub variants: Vec<Variant>,
    pub repeat: usize,
    /// Also a store per pull for each variant, besides the shared store.
    pub isolated: bool,
    /// Reader loops per variant during the pulls.
    pub readers: usize,
    /// podman's storage driver, both podmans.
    pub driver: String,
    /// The host's podman (podman-old).
    pub podman: String,
    /// The rootfs whose `/usr/bin/podman` is podman-staged.
    pub rootfs: Option<PathBuf>,
    /// store-core's sync level: `metadata` is what podman does by default.
    pub sync: SyncLevel,
    pub max_layer_size: u64,
    pub trace: TraceMode,
    pub out: PathBuf,
    pub quiet: bool,
    pub command: Vec<String>,
}

/// `lockbench pull`.
pub struct PullConfig {
    /// Store graph root.
    pub store: PathBuf,
    pub mode: ExtractMode,
    /// `DIR`, `DIR:TAG` or `DIR@sha256:…`, as given.
    pub image: String,
    pub extract_nice: u8,
    pub sync: SyncLevel,
    /// store-core's `max_layer_size` (bytes).
    pub max_layer_size: u64,
}
