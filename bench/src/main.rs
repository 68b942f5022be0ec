//! `lockbench`: generate images, pull them, and run the locked/staged/isolated contention demo.
//! Argument parsing only; everything else is the `lockbench` library.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use lockbench::cli::{ComparePodmanArgs, GenArgs, OverheadArgs, PullArgs, RunArgs};
use lockbench::scenario::{
    compare_podman, container, demo, generate, images, overhead, pull, worker,
};
use lockbench::text::one_line;

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
    /// List a store's images, as `podman images` does (what compare-podman's readers run).
    Images {
        /// Store graph root.
        #[arg(long)]
        store: std::path::PathBuf,
    },
    /// Create a container from an image in a store, as `podman create` does to the store.
    Create {
        /// Store graph root.
        #[arg(long)]
        store: std::path::PathBuf,
        /// Container name.
        #[arg(long)]
        name: String,
        /// Image ID or name.
        image: String,
    },
    /// Remove a container and its layer, as `podman rm` does.
    Rm {
        /// Store graph root.
        #[arg(long)]
        store: std::path::PathBuf,
        /// Container ID or name.
        name: String,
    },
    /// Run the demo: parallel pulls plus readers per mode, then table, report.json, plots, report.html.
    Run(RunArgs),
    /// The same parallel pulls with podman: one shared store vs a store each (kernel lock figures
    /// with locktrace).
    ComparePodman(ComparePodmanArgs),
    /// What tracing costs per lock call: one uncontended lock loop untraced, under a minimal
    /// bpftrace script, contrib/lockstats and locktrace, in interleaved rounds.
    Overhead(OverheadArgs),
    /// One pull or reader process of `run` (internal).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

fn main() -> ExitCode {
    match try_main(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lockbench: error: {}", one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn try_main(cli: Cli) -> Result<ExitCode> {
    let command = || std::env::args().collect();
    let ok = match cli.command {
        Command::Gen(args) => {
            generate::run(&args.out, &args.spec())?;
            true
        }
        Command::Pull(args) => {
            pull::run(&args.config()?)?;
            true
        }
        Command::Images { store } => {
            images::run(&store)?;
            true
        }
        Command::Create { store, name, image } => {
            container::create(&store, &image, &name)?;
            true
        }
        Command::Rm { store, name } => {
            container::remove(&store, &name)?;
            true
        }
        Command::Run(args) => demo::run(&args.config(command())?)?,
        Command::ComparePodman(args) => compare_podman::run(&args.config(command())?)?,
        Command::Overhead(args) => overhead::run(&args.config(command()))?,
        Command::Worker(args) => return Ok(worker::run(&args)?),
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
