//! `lockbench run`: per mode, P pull processes and R reader processes against one store (or, for
//! `isolated`, a store each), started together; then aggregation, report.json, plots, report.html.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use locktrace_report::human_duration;
use store_core::SyncLevel;

use crate::aggregate::{self, ModeAcc, RunOutcome};
use crate::error::{Context, Result};
use crate::imagegen::{GenSet, ImageInfo};
use crate::model::{
    BenchMode, BenchReport, ImageFigures, ModeResult, ModeSamples, Params, RunConfig, SCHEMA,
    TraceMode, kernel_release, sources,
};
use crate::output;
use crate::prepare;
use crate::progress::pull_bar;
use crate::protocol::Role;
use crate::size::ByteSize;
use crate::supervise::{self, WorkerSpec};
use crate::text::one_line;
use crate::trace::{self, Session, Tracer};

/// Runs the demo; false when a worker or the tracer failed (the reports are written either way).
pub fn run(cfg: &RunConfig) -> Result<bool> {
    let out = prepare::out_dir(&cfg.out)?;
    // Before generating images: `--trace on` without a tracer fails at once.
    let tracer = Tracer::detect(cfg.trace)?;
    let set = images(cfg, &out)?;
    let base = prepare::base_image(&out)?;
    prepare::warm_page_cache(&set)?;
    let (results, samples) = run_modes(cfg, &out, &set, &base, tracer.as_ref())?;
    let report = bench_report(cfg, &set, results);
    let table = output::write_run(&report, &samples, &out)?;
    output::print_run(&report, &table, &out);
    Ok(!report.failed)
}

fn say(cfg: &RunConfig, line: String) {
    if !cfg.quiet {
        eprintln!("{line}");
    }
}

/// The run's image set in `out/images`, one image per pull.
fn images(cfg: &RunConfig, out: &Path) -> Result<GenSet> {
    let dir = out.join("images");
    let started = Instant::now();
    let (set, cached) = prepare::images(&dir, &cfg.images, cfg.quiet)?;
    say(
        cfg,
        format!(
            "images: {} x {} ({} layers, {}) in {}{}",
            set.images.len(),
            ByteSize(set.images[0].tar_bytes()),
            cfg.images.layers,
            cfg.images.compression,
            dir.display(),
            if cached {
                " (cached)".to_string()
            } else {
                format!(", generated in {:.1}s", started.elapsed().as_secs_f64())
            }
        ),
    );
    Ok(set)
}

/// Every repetition of every mode. Repetitions interleave the modes (locked, staged, isolated,
/// locked, …) so drift in the machine's load spreads over all of them instead of biasing one.
fn run_modes(
    cfg: &RunConfig,
    out: &Path,
    set: &GenSet,
    base: &ImageInfo,
    tracer: Option<&Tracer>,
) -> Result<(Vec<ModeResult>, Vec<ModeSamples>)> {
    let mut accs: Vec<ModeAcc> = cfg.modes.iter().map(|&m| ModeAcc::new(m)).collect();
    for rep in 0..cfg.repeat {
        for acc in &mut accs {
            let o = run_once(cfg, out, acc.mode, rep, set, base, tracer)?;
            say(
                cfg,
                format!(
                    "{}{}: makespan {}{}",
                    acc.mode,
                    repetition(cfg, rep),
                    human_duration(o.makespan_ns),
                    if o.failures.is_empty() {
                        String::new()
                    } else {
                        format!(", {} failure(s)", o.failures.len())
                    }
                ),
            );
            acc.add(rep, o, cfg.repeat);
        }
    }
    Ok(accs
        .into_iter()
        .map(|a| a.finish(cfg))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip())
}

/// ` #2` for the second of several repetitions; nothing when there is one.
fn repetition(cfg: &RunConfig, rep: usize) -> String {
    if cfg.repeat > 1 {
        format!(" #{}", rep + 1)
    } else {
        String::new()
    }
}

/// report.json's contents.
fn bench_report(cfg: &RunConfig, set: &GenSet, results: Vec<ModeResult>) -> BenchReport {
    let failures: Vec<String> = results
        .iter()
        .flat_map(|r| r.failures.iter().map(move |f| format!("{}: {f}", r.mode)))
        .collect();
    BenchReport {
        schema: SCHEMA.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        command: cfg.command.clone(),
        kernel: kernel_release(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        params: Params {
            pulls: cfg.pulls,
            readers: cfg.readers,
            layers: cfg.images.layers,
            image_size: cfg.images.layer_size.0 * cfg.images.layers as u64,
            compression: cfg.images.compression.to_string(),
            seed: cfg.images.seed,
            repeat: cfg.repeat,
            trace: cfg.trace.to_string(),
            extract_nice: cfg.extract_nice,
            sync: cfg.sync,
            durable: cfg.sync == SyncLevel::Filesystem,
        },
        images: set
            .images
            .iter()
            .map(|i| ImageFigures {
                name: i.name.clone(),
                reference: i.reference(),
                uncompressed_bytes: i.tar_bytes(),
                compressed_bytes: i.compressed_bytes(),
            })
            .collect(),
        targets: aggregate::targets(&results),
        failed: !failures.is_empty(),
        failures,
        modes: results,
        sources: sources(),
    }
}

/// One repetition of one mode: fresh stores, the tracer around the workers, the workers' figures.
fn run_once(
    cfg: &RunConfig,
    out: &Path,
    mode: BenchMode,
    rep: usize,
    set: &GenSet,
    base: &ImageInfo,
    tracer: Option<&Tracer>,
) -> Result<RunOutcome> {
    let run_dir = out.join("runs").join(format!("{mode}-{rep}"));
    let stores = cfg
        .stores
        .clone()
        .unwrap_or_else(|| out.join("stores"))
        .join(mode.to_string());
    for dir in [&run_dir, &stores] {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Absolute, as the kernel reports lock paths.
    let stores = stores
        .canonicalize()
        .with_context(|| format!("resolving {}", stores.display()))?;
    let specs = worker_specs(cfg, mode, set, base, &stores)?;
    let mut roots: Vec<PathBuf> = specs.iter().map(|s| s.store.clone()).collect();
    roots.sort();
    roots.dedup();

    let mut kernel_note = tracer.is_none().then(|| cfg.trace.skip_note());
    let timeline = out.join(timeline_name(&mode.to_string(), rep));
    let session = start_trace(cfg, tracer, (&run_dir, &timeline), &mut kernel_note)?;
    let mut workers = Vec::new();
    for spec in specs {
        workers.push(supervise::spawn(spec, mode, cfg, &run_dir)?);
    }
    let mut failures = Vec::new();
    let bar = pull_bar(
        cfg.pulls,
        format!("{mode}{}", repetition(cfg, rep)),
        cfg.quiet,
    );
    let t0 = supervise::drive(&mut workers, cfg.ready_timeout, &bar, &mut failures)?;
    let kernel = stop_trace(cfg, session, &roots, &mut failures, &mut kernel_note);
    let mut outcome = aggregate::collect(&workers, t0, rep, failures);
    outcome.kernel = kernel;
    outcome.kernel_note = kernel_note;
    // Reclaim the space: the stores are the bulk of a run's disk use and are not inspected later.
    let _ = fs::remove_dir_all(&stores);
    // SAFETY: sync(2) has no preconditions; it flushes this run's writeback before the next mode.
    unsafe { libc::sync() };
    Ok(outcome)
}

/// The Perfetto timeline of a mode's (or variant's) repetition, next to the HTML report:
/// `locked.pftrace`, then `locked-2.pftrace` for the second repetition, and so on.
pub fn timeline_name(mode: &str, rep: usize) -> String {
    match rep {
        0 => format!("{mode}.pftrace"),
        n => format!("{mode}-{}.pftrace", n + 1),
    }
}

/// Starts `locktrace record` into `run_dir` (its timeline into `timeline`); with `--trace auto` a
/// tracer that fails to start becomes a note, with `on` an error.
fn start_trace(
    cfg: &RunConfig,
    tracer: Option<&Tracer>,
    (run_dir, timeline): (&Path, &Path),
    kernel_note: &mut Option<String>,
) -> Result<Option<Session>> {
    let trace_file = run_dir.join("kernel-report.json");
    match tracer.map(|t| t.start(&trace_file, timeline, &run_dir.join("locktrace.log"))) {
        None => Ok(None),
        Some(Ok(session)) => Ok(Some(session)),
        Some(Err(e)) if cfg.trace == TraceMode::On => Err(e),
        Some(Err(e)) => {
            let note = format!(
                "kernel tracing failed to start, store-clock figures only: {}",
                one_line(&e)
            );
            eprintln!("lockbench: note: {note}");
            *kernel_note = Some(note);
            Ok(None)
        }
    }
}

/// Stops the tracer and names its locks as the store report does; a trace that cannot be read
/// becomes a note (and, with `--trace on`, a failure).
fn stop_trace(
    cfg: &RunConfig,
    session: Option<Session>,
    roots: &[PathBuf],
    failures: &mut Vec<String>,
    kernel_note: &mut Option<String>,
) -> Option<locktrace_report::Report> {
    match session.map(|s| {
        s.stop()
            .and_then(|report| trace::by_store_name(report, roots))
    }) {
        None => None,
        Some(Ok(report)) => Some(report),
        Some(Err(e)) => {
            let note = format!("kernel trace unavailable: {}", one_line(&e));
            if cfg.trace == TraceMode::On {
                failures.push(note.clone());
            }
            *kernel_note = Some(note);
            None
        }
    }
}

/// P pullers (a different image each) and R readers; reader stores get the base image first.
fn worker_specs(
    cfg: &RunConfig,
    mode: BenchMode,
    set: &GenSet,
    base: &ImageInfo,
    stores: &Path,
) -> Result<Vec<WorkerSpec>> {
    let store_for = |label: &str| match mode {
        BenchMode::Isolated => stores.join(label),
        BenchMode::Locked | BenchMode::Staged => stores.join("store"),
    };
    let mut specs: Vec<WorkerSpec> = set
        .images
        .iter()
        .take(cfg.pulls)
        .enumerate()
        .map(|(i, image)| {
            let label = format!("pull-{i}");
            WorkerSpec {
                store: store_for(&label),
                label,
                role: Role::Pull,
                image: image.reference(),
                image_name: image.name.clone(),
            }
        })
        .collect();
    let mut base_ids: BTreeMap<PathBuf, String> = BTreeMap::new();
    for j in 0..cfg.readers {
        let label = format!("read-{j}");
        let store = store_for(&label);
        let id = match base_ids.get(&store) {
            Some(id) => id.clone(),
            None => {
                let id = prepare::prepull_base(&store, base)?;
                base_ids.insert(store.clone(), id.clone());
                id
            }
        };
        specs.push(WorkerSpec {
            label,
            role: Role::Read,
            store,
            image: id,
            image_name: "base-image".to_string(),
        });
    }
    Ok(specs)
}
