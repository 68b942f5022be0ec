//! The commands' arguments (clap) and the configs they make: `gen`, `pull`, `run`,
//! `compare-podman`, `overhead`. The hidden worker's arguments live with it, in `scenario::worker`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use store_core::{ExtractMode, SyncLevel};

use crate::error::{Error, Result};
use crate::imagegen::{Compression, GenSpec};
use crate::model::{
    BenchMode, PodmanConfig, PullConfig, READY_TIMEOUT, RunConfig, TraceMode, Variant,
};
use crate::scenario::overhead::OverheadConfig;
use crate::size::ByteSize;
use crate::supervise::overhead;

/// Overrides how long `run` waits for a worker's `ready` (seconds).
pub const READY_TIMEOUT_ENV: &str = "LOCKBENCH_READY_TIMEOUT";

#[derive(Args)]
pub struct GenArgs {
    /// Directory to write the image layouts into.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    shape: ImageShape,
    /// Number of images.
    #[arg(long, default_value_t = 4)]
    images: usize,
    /// Uncompressed file content per layer (512K, 64M, 1G, …).
    #[arg(long, default_value = "40M")]
    layer_size: ByteSize,
}

impl GenArgs {
    pub fn spec(&self) -> GenSpec {
        self.shape.spec(self.images, self.layer_size)
    }
}

/// Image parameters shared by `gen` and `run`.
#[derive(Args, Clone, Copy)]
struct ImageShape {
    /// Layers per image.
    #[arg(long, default_value_t = 3)]
    layers: usize,
    /// Files per layer (0 = one per 512 KiB of content).
    #[arg(long, default_value_t = 0)]
    files_per_layer: usize,
    /// Layer compression.
    #[arg(long, default_value = "gzip")]
    compression: Compression,
    /// Seed of the content generator; each image derives its own seed from it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl ImageShape {
    fn spec(&self, images: usize, layer_size: ByteSize) -> GenSpec {
        let files = if self.files_per_layer == 0 {
            (layer_size.0 / (512 << 10)).clamp(1, 4096) as usize
        } else {
            self.files_per_layer
        };
        GenSpec {
            images,
            layers: self.layers,
            layer_size,
            files_per_layer: files,
            compression: self.compression,
            seed: self.seed,
        }
    }

    /// One image per pull, `image_size` split evenly over its layers.
    fn per_pull(&self, pulls: usize, image_size: ByteSize) -> GenSpec {
        let layer_size = ByteSize(image_size.0 / self.layers.max(1) as u64);
        self.spec(pulls, layer_size)
    }
}

#[derive(Args)]
pub struct PullArgs {
    /// Store graph root.
    #[arg(long)]
    store: PathBuf,
    /// Layer creation mode.
    #[arg(long, default_value = "staged")]
    mode: ExtractMode,
    /// OCI layout directory, optionally with `:TAG` or `@sha256:DIGEST`.
    image: String,
    #[command(flatten)]
    tuning: StoreTuning,
}

impl PullArgs {
    pub fn config(self) -> Result<PullConfig> {
        Ok(PullConfig {
            sync: self.tuning.sync()?,
            store: self.store,
            mode: self.mode,
            image: self.image,
            extract_nice: self.tuning.extract_nice,
            max_layer_size: self.tuning.max_layer_size(),
        })
    }
}

#[derive(Args)]
struct StoreTuning {
    /// Nice increment for the threads that decompress and write layers; the thread that takes the
    /// store locks keeps normal priority, so commits are not stuck behind extractions for a CPU (0: off).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=19))]
    extract_nice: u8,
    /// What the stores sync to disk, as containers/storage: none; metadata (each metadata file
    /// fdatasync'ed before its rename, containers/storage's default); filesystem (also syncfs of
    /// layer contents before they are recorded). none by default: the demo is about lock
    /// contention, not the disk's flush latency [default: none].
    #[arg(long, value_name = "none|metadata|filesystem")]
    sync: Option<String>,
    /// Same as `--sync filesystem`.
    #[arg(long)]
    durable: bool,
    /// Largest uncompressed tar stream one layer may have; a larger one (a decompression bomb) is
    /// refused and its partial layer removed [default: store-core's, 32G].
    #[arg(long, value_name = "SIZE")]
    max_layer_size: Option<ByteSize>,
}

impl StoreTuning {
    /// The `--sync` level, `filesystem` for `--durable`; a bad or contradicting value is an error.
    fn sync(&self) -> Result<SyncLevel> {
        let level = match &self.sync {
            Some(s) => s
                .parse()
                .map_err(|e| Error::Invalid(format!("--sync: {e}")))?,
            None if self.durable => SyncLevel::Filesystem,
            None => SyncLevel::None,
        };
        if self.durable && level != SyncLevel::Filesystem {
            return Err(Error::Invalid(format!(
                "--durable means --sync filesystem, not --sync {level}"
            )));
        }
        Ok(level)
    }

    fn max_layer_size(&self) -> u64 {
        self.max_layer_size
            .map_or(store_core::DEFAULT_MAX_LAYER_SIZE, |s| s.0)
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Parallel pull processes per mode (each pulls a different image).
    #[arg(long, default_value_t = 4)]
    pulls: usize,
    /// Reader processes doing what `podman run` does to the store, meanwhile.
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Modes to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "locked,staged,isolated")]
    modes: Vec<BenchMode>,
    /// Uncompressed size of each image (split evenly over its layers).
    #[arg(long, default_value = "192M")]
    image_size: ByteSize,
    #[command(flatten)]
    shape: ImageShape,
    #[command(flatten)]
    tuning: StoreTuning,
    /// Runs per mode; figures aggregate over all of them.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Kernel-side tracing with `locktrace record` around the workers.
    #[arg(long, default_value = "auto")]
    trace: TraceMode,
    /// Output directory: images (cached), stores, worker logs, report.json, report.html, plots.
    #[arg(long, default_value = "lockbench-out")]
    out: PathBuf,
    /// Put the stores here instead of OUT/stores (e.g. on another filesystem).
    #[arg(long)]
    stores: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    /// The run's config; `command` is the command line for the reports.
    pub fn config(self, command: Vec<String>) -> Result<RunConfig> {
        if self.pulls == 0 {
            return Err(Error::Invalid("--pulls must be at least 1".into()));
        }
        if self.repeat == 0 {
            return Err(Error::Invalid("--repeat must be at least 1".into()));
        }
        if self.modes.is_empty() {
            return Err(Error::Invalid(
                "--modes must name at least one of locked, staged, isolated".into(),
            ));
        }
        Ok(RunConfig {
            pulls: self.pulls,
            readers: self.readers,
            modes: self.modes,
            images: self.shape.per_pull(self.pulls, self.image_size),
            repeat: self.repeat,
            trace: self.trace,
            out: self.out,
            stores: self.stores,
            quiet: self.quiet,
            command,
            extract_nice: self.tuning.extract_nice,
            sync: self.tuning.sync()?,
            max_layer_size: self.tuning.max_layer_size(),
            ready_timeout: ready_timeout()?,
        })
    }
}

#[derive(Args)]
pub struct ComparePodmanArgs {
    /// Parallel pull processes per variant (each pulls a different image).
    #[arg(long, default_value_t = 4)]
    pulls: usize,
    /// Uncompressed size of each image (split evenly over its layers).
    #[arg(long, default_value = "192M")]
    image_size: ByteSize,
    #[command(flatten)]
    shape: ImageShape,
    /// Who pulls, in this order: podman-old (the host's podman), podman-staged (podman >= 5.8
    /// from --podman-rootfs), store-locked, store-staged (lockbench pull) [default: all four].
    #[arg(long, value_delimiter = ',')]
    variants: Vec<Variant>,
    /// Runs of every variant, interleaved (rotated) so that drift hits all alike.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Also pull into a store each, besides the shared store.
    #[arg(long)]
    isolated: bool,
    /// Reader loops per variant while the pulls run, each running what a user would (`podman
    /// images`; `lockbench images` for store-core) again and again, timed.
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// podman storage driver (both podmans).
    #[arg(long, default_value = "overlay")]
    driver: String,
    /// The host's podman binary: podman-old.
    #[arg(long, default_value = "podman")]
    podman: String,
    /// Rootfs with podman >= 5.8 in /usr/bin: podman-staged, run chrooted [default: the one
    /// `cargo xtask setup-podman` builds, target/podman-sid/rootfs beside lockbench's target dir].
    #[arg(long, value_name = "DIR")]
    podman_rootfs: Option<PathBuf>,
    /// What store-core syncs (none, metadata, filesystem): metadata is podman's default, so both
    /// pay the same durability.
    #[arg(long, default_value = "metadata")]
    sync: SyncLevel,
    /// Largest uncompressed layer store-core accepts [default: store-core's, 32G].
    #[arg(long, value_name = "SIZE")]
    max_layer_size: Option<ByteSize>,
    /// Kernel-side tracing with `locktrace record` around the pulls.
    #[arg(long, default_value = "auto")]
    trace: TraceMode,
    /// Output directory (images are shared with `run` when the parameters match).
    #[arg(long, default_value = "lockbench-out")]
    out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl ComparePodmanArgs {
    /// The comparison's config; `command` is the command line for the report.
    pub fn config(self, command: Vec<String>) -> Result<PodmanConfig> {
        if self.pulls == 0 {
            return Err(Error::Invalid("--pulls must be at least 1".into()));
        }
        if self.repeat == 0 {
            return Err(Error::Invalid("--repeat must be at least 1".into()));
        }
        let mut variants = self.variants;
        if variants.is_empty() {
            variants = Variant::ALL.to_vec();
        }
        let mut seen = std::collections::HashSet::new();
        variants.retain(|v| seen.insert(*v));
        Ok(PodmanConfig {
            pulls: self.pulls,
            images: self.shape.per_pull(self.pulls, self.image_size),
            variants,
            repeat: self.repeat,
            isolated: self.isolated,
            readers: self.readers,
            driver: self.driver,
            podman: self.podman,
            rootfs: self.podman_rootfs.or_else(setup_podman_rootfs),
            sync: self.sync,
            max_layer_size: self
                .max_layer_size
                .map_or(store_core::DEFAULT_MAX_LAYER_SIZE, |s| s.0),
            trace: self.trace,
            out: self.out,
            quiet: self.quiet,
            command,
        })
    }
}

/// The rootfs `cargo xtask setup-podman` leaves in the target dir this lockbench was built into
/// (`target/<profile>/lockbench` → `target/podman-sid/rootfs`), when it is there.
fn setup_podman_rootfs() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let rootfs = exe.parent()?.parent()?.join("podman-sid").join("rootfs");
    rootfs.is_dir().then_some(rootfs)
}

#[derive(Args)]
pub struct OverheadArgs {
    /// Timed cycles (open, F_SETLKW write lock, close) per loop.
    #[arg(long, default_value_t = 200_000)]
    cycles: u64,
    /// Rounds; each runs every variant once, in a rotated order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Variants to run [default: all; those that cannot run here are listed as unavailable, while
    /// one named here that cannot run is an error].
    #[arg(long, value_delimiter = ',')]
    variants: Vec<overhead::Variant>,
    /// Directory with lockstats/ (contrib/lockstats) [default: the contrib/ above lockbench or
    /// the current directory].
    #[arg(long)]
    contrib: Option<PathBuf>,
    /// Output directory: overhead.json, and the tracers' scripts, logs and reports in overhead/.
    #[arg(long, default_value = "lockbench-out")]
    out: PathBuf,
}

impl OverheadArgs {
    /// The benchmark's config; `command` is the command line for overhead.json.
    pub fn config(self, command: Vec<String>) -> OverheadConfig {
        let explicit = !self.variants.is_empty();
        OverheadConfig {
            cycles: self.cycles,
            rounds: self.rounds,
            variants: if explicit {
                self.variants
            } else {
                overhead::Variant::ALL.to_vec()
            },
            explicit,
            contrib: self.contrib,
            out: self.out,
            command,
        }
    }
}

/// How long `run` waits for its workers' `ready`: READY_TIMEOUT, or whole seconds from the
/// environment, so a test can stall a worker on purpose without waiting a minute.
fn ready_timeout() -> Result<Duration> {
    let Some(value) = std::env::var_os(READY_TIMEOUT_ENV) else {
        return Ok(READY_TIMEOUT);
    };
    value
        .to_str()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&secs| secs > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{READY_TIMEOUT_ENV}={}: expected a whole number of seconds above 0",
                value.to_string_lossy()
            ))
        })
}
