//! The hidden `lockbench worker` subcommand: one pull or one reader, in its own process, so lock
//! contention between workers goes through real kernel fcntl locks as between podman processes.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use store_core::{ExtractMode, Store, StoreOptions, SyncLevel, monotonic_ns};

use crate::error::{Context, Error, Result};
use crate::protocol::{GO, READY, ReaderOp, Record, Role, STOP, Sink};
use crate::reference::ImageRef;
use crate::text::one_line;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[arg(long)]
    pub role: Role,
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub mode: ExtractMode,
    /// Label used in file names and reports, e.g. `pull-0`.
    #[arg(long)]
    pub label: String,
    /// NDJSON events file.
    #[arg(long)]
    pub events: PathBuf,
    /// Pull: the OCI layout `DIR[:TAG]` or `DIR@sha256:…`. Read: the store image to create containers from.
    #[arg(long)]
    pub image: String,
    /// Nice increment for the extraction threads (store-core's `extract_nice`).
    #[arg(long, default_value_t = 0)]
    pub extract_nice: u8,
    /// store-core's `sync` level.
    #[arg(long, default_value = "none")]
    pub sync: SyncLevel,
    /// store-core's `max_layer_size`, in bytes.
    #[arg(long, default_value_t = store_core::DEFAULT_MAX_LAYER_SIZE)]
    pub max_layer_size: u64,
    /// Reader think time between rounds, so readers sample the store rather than saturate the CPU.
    #[arg(long, default_value_t = 10)]
    pub pause_ms: u64,
}

/// Runs one worker; its fatal error is also the last record of its events file.
pub fn run(args: &WorkerArgs) -> Result<ExitCode> {
    let sink = Arc::new(Sink::create(&args.events)?);
    let result = work(args, &sink);
    if let Err(e) = &result {
        sink.write(Record::Error {
            message: one_line(e),
        });
    }
    // Even after a failure the events so far are worth keeping.
    let flushed = sink.finish();
    result?;
    flushed?;
    Ok(ExitCode::SUCCESS)
}

fn work(args: &WorkerArgs, sink: &Arc<Sink>) -> Result<()> {
    let observer: Arc<dyn store_core::Observer> = sink.clone();
    let opts = StoreOptions {
        extract_mode: args.mode,
        sync: args.sync,
        extract_nice: args.extract_nice,
        observer: Some(observer),
        max_layer_size: Some(args.max_layer_size),
        ..StoreOptions::default()
    };
    let store = Store::open(&args.store, opts)
        .with_context(|| format!("opening store {}", args.store.display()))?;
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{READY}")
        .and_then(|()| stdout.flush())
        .context("telling the parent the store is open")?;
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .context("waiting for the parent's start signal")?;
    if line.trim() != GO {
        return Err(Error::Worker(
            "parent went away before the start signal".into(),
        ));
    }
    match args.role {
        Role::Pull => pull(args, &store, sink),
        Role::Read => {
            drop(stdin);
            read(args, &store, sink)
        }
    }
}

fn pull(args: &WorkerArgs, store: &Store, sink: &Sink) -> Result<()> {
    let image: ImageRef = args.image.parse()?;
    let start = monotonic_ns();
    let outcome = store_core::oci::pull(store, &image.dir, image.reference.as_deref(), args.mode)
        .with_context(|| format!("pulling {}", args.image))?;
    sink.write(Record::Pull {
        image: args.image.clone(),
        start_mono_ns: start,
        duration_ns: monotonic_ns() - start,
        bytes: outcome.bytes,
        layers_created: outcome.layers_created,
        layers_reused: outcome.layers_reused,
    });
    Ok(())
}

/// Until the parent says `stop`: create a container (what `podman run` does to the store), list
/// layers, delete the container; each call timed.
fn read(args: &WorkerArgs, store: &Store, sink: &Sink) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            if line.map(|l| l.trim() == STOP).unwrap_or(true) {
                break;
            }
        }
        // EOF counts as stop too: the parent is gone.
        flag.store(true, Ordering::SeqCst);
    });
    let mut errors = 0u64;
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("{}-{round}", args.label);
        let created = timed(sink, ReaderOp::CreateContainer, &mut errors, || {
            store
                .create_container(&args.image, Some(&name))
                .map(|c| c.id)
        });
        timed(sink, ReaderOp::ListLayers, &mut errors, || {
            store.layers().map(|_| ())
        });
        if let Some(id) = created {
            timed(sink, ReaderOp::DeleteContainer, &mut errors, || {
                store.delete_container(&id)
            });
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(args.pause_ms));
    }
    if errors > 0 {
        return Err(Error::Worker(format!(
            "{errors} of the reader's store operations failed (see its events file)"
        )));
    }
    Ok(())
}

fn timed<T>(
    sink: &Sink,
    op: ReaderOp,
    errors: &mut u64,
    f: impl FnOnce() -> Result<T, store_core::StoreError>,
) -> Option<T> {
    let start = monotonic_ns();
    let result = f();
    let duration_ns = monotonic_ns() - start;
    let error = result.as_ref().err().map(|e| e.to_string());
    *errors += u64::from(error.is_some());
    sink.write(Record::Op {
        op,
        start_mono_ns: start,
        duration_ns,
        error,
    });
    result.ok()
}
