//! `lockbench compare-podman`: the same parallel pulls done by real podman (containers/storage),
//! into one shared store and into a store each, as a reality check for the store-core demo.
//! podman reports no lock timings of its own, so lock figures come only from locktrace (kernel).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use locktrace_report::{Report, human_duration};

use crate::error::{Context, Result};
use crate::imagegen::GenSet;
use crate::model::{Latency, PODMAN_SCHEMA, PodmanConfig, PodmanMode, PodmanReport, TraceMode};
use crate::output;
use crate::prepare;
use crate::supervise::MODE_TIMEOUT;
use crate::supervise::podman::{self as pulls, PodmanCommand};
use crate::text::one_line;
use crate::trace::{Session, Tracer, only_under};

/// Runs both modes; false when a pull failed (the report is written either way).
pub fn run(cfg: &PodmanConfig) -> Result<bool> {
    let podman = which::which(&cfg.podman).with_context(|| {
        format!(
            "{} not found; compare-podman needs podman (e.g. apt-get install podman)",
            cfg.podman
        )
    })?;
    let version = Command::new(&podman)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", podman.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let tracer = Tracer::detect(cfg.trace)?;
    let out = prepare::out_dir(&cfg.out)?;
    let (set, _) = prepare::images(&out.join("images"), &cfg.images, cfg.quiet)?;
    prepare::warm_page_cache(&set)?;

    let mut modes = Vec::new();
    let mut failures = Vec::new();
    for shared in [true, false] {
        let (mode, mut errs) = run_mode(cfg, &podman, &out, shared, &set, tracer.as_ref())?;
        if !cfg.quiet {
            eprintln!(
                "podman {}: makespan {}",
                mode.mode,
                human_duration(mode.makespan_ns)
            );
        }
        failures.extend(errs.drain(..).map(|e| format!("{}: {e}", mode.mode)));
        modes.push(mode);
    }
    let report = PodmanReport {
        schema: PODMAN_SCHEMA,
        podman_version: version,
        driver: cfg.driver.clone(),
        command: cfg.command.clone(),
        failed: !failures.is_empty(),
        failures,
        modes,
    };
    output::podman(&report, &out)?;
    Ok(!report.failed)
}

fn run_mode(
    cfg: &PodmanConfig,
    podman: &Path,
    out: &Path,
    shared: bool,
    set: &GenSet,
    tracer: Option<&Tracer>,
) -> Result<(PodmanMode, Vec<String>)> {
    let name = if shared { "shared" } else { "isolated" };
    let base = out.join("podman").join(name);
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let mut kernel_note = tracer.is_none().then(|| cfg.trace.skip_note());
    let session = start_trace(cfg, tracer, &base, &mut kernel_note)?;
    let command = PodmanCommand {
        podman,
        driver: &cfg.driver,
        base: &base,
    };
    let started = Instant::now();
    let mut running = Vec::new();
    for (i, image) in set.images.iter().take(cfg.pulls).enumerate() {
        let store = if shared {
            "store".to_string()
        } else {
            format!("store-{i}")
        };
        running.push(command.spawn(format!("pull-{i}"), &store, image)?);
    }
    pulls::wait_all(&mut running, started, MODE_TIMEOUT)?;
    let makespan = started.elapsed();
    let kernel_report = stop_trace(session, &base, &mut kernel_note);
    let (results, errors) = pulls::collect(running);
    let bytes: u64 = results.iter().map(|r| r.bytes).sum();
    // The stores are large and not looked at again.
    let stores =
        std::iter::once("store".to_string()).chain((0..cfg.pulls).map(|i| format!("store-{i}")));
    for store in stores {
        let _ = fs::remove_dir_all(base.join(&store));
        let _ = fs::remove_dir_all(pulls::runroot(&store));
    }
    let times: Vec<u64> = results.iter().filter_map(|r| r.duration_ns).collect();
    Ok((
        PodmanMode {
            mode: name,
            makespan_ns: makespan.as_nanos() as u64,
            pull_time: Latency::of(&times),
            throughput_mb_s: bytes as f64 / 1e6 / makespan.as_secs_f64().max(1e-9),
            pulls: results,
            kernel_report,
            kernel_note,
        },
        errors,
    ))
}

/// Starts `locktrace record` into `base`; with `--trace auto` a tracer that fails to start becomes
/// a note, with `on` an error.
fn start_trace(
    cfg: &PodmanConfig,
    tracer: Option<&Tracer>,
    base: &Path,
    kernel_note: &mut Option<String>,
) -> Result<Option<Session>> {
    match tracer.map(|t| {
        t.start(
            &base.join("kernel-report.json"),
            &base.join("locktrace.log"),
        )
    }) {
        None => Ok(None),
        Some(Ok(s)) => Ok(Some(s)),
        Some(Err(e)) if cfg.trace == TraceMode::On => Err(e),
        Some(Err(e)) => {
            *kernel_note = Some(format!("kernel tracing failed to start: {}", one_line(&e)));
            Ok(None)
        }
    }
}

/// Stops the tracer and keeps only this mode's locks; a trace that cannot be read becomes a note.
fn stop_trace(
    session: Option<Session>,
    base: &Path,
    kernel_note: &mut Option<String>,
) -> Option<Report> {
    match session.map(|s| s.stop()) {
        None => None,
        Some(Ok(r)) => Some(only_under(r, base)),
        Some(Err(e)) => {
            *kernel_note = Some(format!("kernel trace unavailable: {}", one_line(&e)));
            None
        }
    }
}
