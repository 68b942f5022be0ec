//! `lockbench`: generate images, pull them, and run the locked/staged/isolated contention demo.

mod html;
mod plot;
mod podman;
mod protocol;
mod results;
mod scenario;
mod table;
mod trace;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lockbench::imagegen::{self, Compression, GenSpec};
use lockbench::size::ByteSize;
use store_core::ExtractMode;

use crate::scenario::{BenchMode, RunConfig};
use crate::trace::TraceMode;

/// Overrides how long `run` waits for a worker's `ready` (seconds).
const READY_TIMEOUT_ENV: &str = "LOCKBENCH_READY_TIMEOUT";

#[derive(Parser)]
#[command(
    name = "lockbench",
    version,
    about = "Parallel-pull lock contention demo for store-core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write deterministic OCI image layouts: DIR/img-00, DIR/img-01, … each tagged `latest`.
    Gen(GenArgs),
    /// Pull one OCI image layout into a store.
    Pull(PullArgs),
    /// Run the demo: parallel pulls plus readers per mode, then table, report.json, plots, report.html.
    Run(RunArgs),
    /// The same parallel pulls with podman: one shared store vs a store each (kernel lock figures
    /// with locktrace).
    ComparePodman(ComparePodmanArgs),
    /// One pull or reader process of `run` (internal).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

#[derive(Args)]
struct GenArgs {
    /// Directory to write the image layouts into.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    shape: ImageShape,
    /// Number of images.
    #[arg(long, default_value_t = 4)]
    images: usize,
    /// Uncompressed file content per layer (512K, 64M, 1G, …).
    #[arg(long, default_value = "40M")]
    layer_size: ByteSize,
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
}

#[derive(Args)]
struct PullArgs {
    /// Store graph root.
    #[arg(long)]
    store: PathBuf,
    /// Layer creation mode.
    #[arg(long, default_value = "staged")]
    mode: ExtractMode,
    /// OCI layout directory, optionally with `:TAG`.
    image: String,
    #[command(flatten)]
    tuning: StoreTuning,
}

#[derive(Args)]
struct StoreTuning {
    /// Nice increment for the threads that decompress and write layers; the thread that takes the
    /// store locks keeps normal priority, so commits are not stuck behind extractions for a CPU (0: off).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=19))]
    extract_nice: u8,
    /// fsync layer contents and metadata (store-core's `durable`, as containers/storage syncs its
    /// metadata). Off by default: the demo is about lock contention, not the disk's flush latency.
    #[arg(long)]
    durable: bool,
}

#[derive(Args)]
struct RunArgs {
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

#[derive(Args)]
struct ComparePodmanArgs {
    /// Parallel `podman pull` processes (each pulls a different image).
    #[arg(long, default_value_t = 4)]
    pulls: usize,
    /// Uncompressed size of each image (split evenly over its layers).
    #[arg(long, default_value = "192M")]
    image_size: ByteSize,
    #[command(flatten)]
    shape: ImageShape,
    /// podman storage driver.
    #[arg(long, default_value = "overlay")]
    driver: String,
    /// podman binary.
    #[arg(long, default_value = "podman")]
    podman: String,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gen(args) => gen_cmd(args),
        Command::Pull(args) => pull_cmd(args),
        Command::Run(args) => run_cmd(args),
        Command::ComparePodman(args) => compare_podman_cmd(args),
        Command::Worker(args) => worker::main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lockbench: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn gen_cmd(args: GenArgs) -> Result<ExitCode> {
    let spec = args.shape.spec(args.images, args.layer_size);
    let started = Instant::now();
    let bar = byte_bar(spec.total_bytes(), "generating", false);
    let (set, cached) = imagegen::ensure(&args.out, &spec, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    let note = if cached { " (cached)" } else { "" };
    for image in &set.images {
        println!(
            "{}  {} uncompressed, {} compressed",
            image.reference(),
            ByteSize(image.tar_bytes()),
            ByteSize(image.compressed_bytes())
        );
    }
    println!(
        "{} images in {}{note}, {:.1}s",
        set.images.len(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn pull_cmd(args: PullArgs) -> Result<ExitCode> {
    let (dir, tag) = worker::split_reference(&args.image);
    let opts = store_core::StoreOptions {
        extract_nice: args.tuning.extract_nice,
        durable: args.tuning.durable,
        ..Default::default()
    };
    let store = store_core::Store::open(&args.store, opts)
        .with_context(|| format!("opening store {}", args.store.display()))?;
    let started = Instant::now();
    let outcome = store_core::oci::pull(&store, &dir, tag.as_deref(), args.mode)
        .with_context(|| format!("pulling {}", args.image))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "image {} ({} layers created, {} reused, {} in {:.2}s, {:.1} MB/s, mode {})",
        outcome.image.id,
        outcome.layers_created,
        outcome.layers_reused,
        ByteSize(outcome.bytes),
        secs,
        outcome.bytes as f64 / 1e6 / secs.max(1e-9),
        args.mode
    );
    Ok(ExitCode::SUCCESS)
}

fn run_cmd(args: RunArgs) -> Result<ExitCode> {
    if args.pulls == 0 {
        anyhow::bail!("--pulls must be at least 1");
    }
    if args.repeat == 0 {
        anyhow::bail!("--repeat must be at least 1");
    }
    if args.modes.is_empty() {
        anyhow::bail!("--modes must name at least one of locked, staged, isolated");
    }
    let layer_size = ByteSize(args.image_size.0 / args.shape.layers.max(1) as u64);
    let config = RunConfig {
        pulls: args.pulls,
        readers: args.readers,
        modes: args.modes,
        images: args.shape.spec(args.pulls, layer_size),
        repeat: args.repeat,
        trace: args.trace,
        out: args.out,
        stores: args.stores,
        quiet: args.quiet,
        command: std::env::args().collect(),
        extract_nice: args.tuning.extract_nice,
        durable: args.tuning.durable,
        ready_timeout: ready_timeout()?,
    };
    let ok = scenario::run(&config)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn compare_podman_cmd(args: ComparePodmanArgs) -> Result<ExitCode> {
    if args.pulls == 0 {
        anyhow::bail!("--pulls must be at least 1");
    }
    let layer_size = ByteSize(args.image_size.0 / args.shape.layers.max(1) as u64);
    let ok = podman::run(&podman::PodmanConfig {
        pulls: args.pulls,
        images: args.shape.spec(args.pulls, layer_size),
        driver: args.driver,
        podman: args.podman,
        trace: args.trace,
        out: args.out,
        quiet: args.quiet,
        command: std::env::args().collect(),
    })?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How long `run` waits for its workers' `ready`: `scenario::READY_TIMEOUT`, or whole seconds from
/// the environment, so a test can stall a worker on purpose without waiting a minute.
fn ready_timeout() -> Result<Duration> {
    let Some(value) = std::env::var_os(READY_TIMEOUT_ENV) else {
        return Ok(scenario::READY_TIMEOUT);
    };
    value
        .to_str()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&secs| secs > 0)
        .map(Duration::from_secs)
        .with_context(|| {
            format!(
                "{READY_TIMEOUT_ENV}={}: expected a whole number of seconds above 0",
                value.to_string_lossy()
            )
        })
}

/// A byte progress bar on stderr; hidden with `quiet` (indicatif also hides it off a terminal).
fn byte_bar(total: u64, msg: &'static str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(msg);
    bar
}

/// `": <last non-empty line>"` of a log file, or nothing: the most useful part of a child's stderr.
fn log_tail(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .map(|l| format!(": {l}"))
        .unwrap_or_default()
}

/// The error and its causes on one line, skipping a cause whose text the message before it already
/// ends with (errors that print their source themselves would otherwise repeat it).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug)]
    struct Repeats(std::io::Error);
    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "writing f.dat: {}", self.0)
        }
    }
    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn one_line_keeps_context_and_drops_repeated_causes() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(Repeats(io)).context("pulling img-00");
        assert_eq!(one_line(&e), "pulling img-00: writing f.dat: disk full");
    }
}
