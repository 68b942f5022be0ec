//! `lockbench compare-podman`: the same parallel pulls done by podman before staged layer creation
//! (the host's), by podman with it (>= 5.8, from a Debian sid rootfs), and by store-core locked and
//! staged, in one run on the same images, interleaved across repetitions so drift hits all alike.
//! podman reports no lock timings of its own, so lock figures come only from locktrace (kernel),
//! for every variant alike.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use locktrace_report::{Report, ReportMeta, Source, human_duration};
use store_core::ExtractMode;

use crate::error::{Context, Error, Result};
use crate::imagegen::{GenSet, ImageInfo};
use crate::model::{
    Latency, PODMAN_SCHEMA, PodmanConfig, PodmanReport, PullResult, TraceMode, Variant,
    VariantResult,
};
use crate::output;
use crate::prepare;
use crate::supervise::MODE_TIMEOUT;
use crate::supervise::chroot::RootFs;
use crate::supervise::podman::{self as pulls, Client, ROOTFS_PODMAN};
use crate::supervise::reader::{ReaderSamples, read_until};
use crate::text::one_line;
use crate::trace::{Session, Tracer, by_store_name, combine};

/// The first podman release with staged layer creation (containers/storage PR #378, backported);
/// `cargo xtask setup-podman` refuses an older one with the same bound (xtask/src/podman.rs).
const STAGED_PODMAN: (u32, u32) = (5, 8);

/// One variant in one store layout, over all repetitions.
struct Cell {
    variant: Variant,
    layout: &'static str,
    client: Client,
    version: String,
    makespans: Vec<u64>,
    pulls: Vec<PullResult>,
    bytes: u64,
    kernel: Vec<Report>,
    kernel_note: Option<String>,
    readers: ReaderSamples,
}

/// Runs every variant `repeat` times; false when a pull failed (the report is written either way).
pub fn run(cfg: &PodmanConfig) -> Result<bool> {
    let out = prepare::out_dir(&cfg.out)?;
    let out = out
        .canonicalize()
        .with_context(|| format!("resolving {}", out.display()))?;
    // The staged podman's /run: one for the whole run, fresh each run.
    let run_dir = out.join("podman").join("rootfs-run");
    let _ = fs::remove_dir_all(&run_dir);
    let mut cells = Vec::new();
    for &variant in &cfg.variants {
        let client = client(cfg, variant, &run_dir)?;
        let version = client
            .version(&out)
            .map_err(|e| Error::Invalid(format!("{variant}: {e}")))?;
        if variant == Variant::PodmanStaged {
            check_staged(&version)?;
        }
        for layout in layouts(cfg) {
            cells.push(Cell {
                variant,
                layout,
                client: client.clone(),
                version: version.clone(),
                makespans: Vec::new(),
                pulls: Vec::new(),
                bytes: 0,
                kernel: Vec::new(),
                kernel_note: None,
                readers: ReaderSamples::default(),
            });
        }
    }
    let tracer = Tracer::detect(cfg.trace)?;
    let (set, _) = prepare::images(&out.join("images"), &cfg.images, cfg.quiet)?;
    prepare::warm_page_cache(&set)?;
    // What the readers create containers from, pulled into each store before the clock starts.
    let readers_image = prepare::base_image(&out)?;

    let mut failures = Vec::new();
    for repeat in 0..cfg.repeat {
        // Rotated each repetition: no variant always runs first (cold) or right after another.
        let n = cells.len();
        for i in 0..n {
            let cell = &mut cells[(i + repeat) % n];
            let errs = run_cell(
                cfg,
                &out,
                cell,
                repeat,
                &set,
                &readers_image,
                tracer.as_ref(),
            )?;
            if !cfg.quiet {
                eprintln!(
                    "{} {} #{}: makespan {}",
                    cell.variant,
                    cell.layout,
                    repeat + 1,
                    human_duration(*cell.makespans.last().unwrap_or(&0))
                );
            }
            failures.extend(errs);
        }
    }
    for cell in &cells {
        if let Some(why) = &cell.readers.first_error {
            failures.push(format!(
                "{} {} readers: {} of {} runs failed, the first {why}",
                cell.variant,
                cell.layout,
                cell.readers.errors,
                cell.readers.runs()
            ));
        }
    }
    let variants = cells
        .into_iter()
        .map(|c| finish(c, cfg))
        .collect::<Result<Vec<_>>>()?;
    let report = PodmanReport {
        schema: PODMAN_SCHEMA,
        driver: cfg.driver.clone(),
        sync: cfg.sync.to_string(),
        repeat: cfg.repeat,
        command: cfg.command.clone(),
        failed: !failures.is_empty(),
        failures,
        variants,
    };
    output::podman(&report, &out)?;
    Ok(!report.failed)
}

fn layouts(cfg: &PodmanConfig) -> Vec<&'static str> {
    if cfg.isolated {
        vec!["shared", "isolated"]
    } else {
        vec!["shared"]
    }
}

/// The client of `variant`, checked to be there.
fn client(cfg: &PodmanConfig, variant: Variant, run_dir: &Path) -> Result<Client> {
    match variant {
        Variant::PodmanOld => {
            let bin = which::which(&cfg.podman).map_err(|_| {
                Error::Invalid(format!(
                    "{} not found; podman-old is the host's podman (e.g. apt-get install podman)",
                    cfg.podman
                ))
            })?;
            Ok(Client::Podman {
                bin,
                rootfs: None,
                driver: cfg.driver.clone(),
            })
        }
        Variant::PodmanStaged => {
            let root = cfg.rootfs.as_ref().ok_or_else(|| {
                Error::Invalid(
                    "podman-staged needs a rootfs with podman >= 5.8: run `cargo xtask \
                     setup-podman` or pass --podman-rootfs"
                        .into(),
                )
            })?;
            let rootfs = RootFs::open(root, ROOTFS_PODMAN)
                .map_err(|e| Error::Invalid(format!("podman-staged: {e}")))?
                .with_run_dir(run_dir)?;
            Ok(Client::Podman {
                bin: PathBuf::from(ROOTFS_PODMAN),
                rootfs: Some(rootfs),
                driver: cfg.driver.clone(),
            })
        }
        Variant::StoreLocked | Variant::StoreStaged => Ok(Client::Store {
            exe: std::env::current_exe().context("finding lockbench's own executable")?,
            mode: if variant == Variant::StoreLocked {
                ExtractMode::Locked
            } else {
                ExtractMode::Staged
            },
            sync: cfg.sync,
            max_layer_size: cfg.max_layer_size,
        }),
    }
}

/// Refuses a podman without staged layer creation for the podman-staged variant.
fn check_staged(version: &str) -> Result<()> {
    let number = version.rsplit(' ').next().unwrap_or(version);
    let mut parts = number.split(['.', '-', '+', '~']);
    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (next(), next()) {
        (Some(major), Some(minor)) if (major, minor) >= STAGED_PODMAN => Ok(()),
        (Some(_), Some(_)) => Err(Error::Invalid(format!(
            "podman-staged: {version} has no staged layer creation (needs {}.{} or newer; \
             `cargo xtask setup-podman --refresh`)",
            STAGED_PODMAN.0, STAGED_PODMAN.1
        ))),
        _ => Err(Error::Invalid(format!(
            "podman-staged: cannot read the version in {version:?}"
        ))),
    }
}

/// One repetition of one cell: the pulls in parallel, traced; the errors of failed pulls.
fn run_cell(
    cfg: &PodmanConfig,
    out: &Path,
    cell: &mut Cell,
    repeat: usize,
    set: &GenSet,
    readers_image: &ImageInfo,
    tracer: Option<&Tracer>,
) -> Result<Vec<String>> {
    let base = out
        .join("podman")
        .join(cell.variant.to_string())
        .join(cell.layout);
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    if tracer.is_none() {
        cell.kernel_note = Some(cfg.trace.skip_note());
    }
    let shared = cell.layout == "shared";
    let stores: Vec<String> = (0..cfg.pulls)
        .map(|i| {
            if shared {
                "store".to_string()
            } else {
                format!("store-{i}")
            }
        })
        .collect();
    let _scratch = Scratch {
        base: base.clone(),
        stores: stores.clone(),
        client: cell.client.clone(),
    };
    let create_from = if cfg.readers > 0 {
        prepull(cell, out, &base, &stores[0], readers_image)?
    } else {
        String::new()
    };
    // One per variant (and layout, past the shared one) next to podman-report.html.
    let name = match cell.layout {
        "shared" => cell.variant.to_string(),
        layout => format!("{}-{layout}", cell.variant),
    };
    let timeline = out.join(super::demo::timeline_name(&name, repeat));
    let session = start_trace(cfg, tracer, (&base, &timeline), &mut cell.kernel_note)?;
    let started = Instant::now();
    let mut running = Vec::new();
    for (i, image) in set.images.iter().take(cfg.pulls).enumerate() {
        let label = format!("{} pull-{i}", cell.variant);
        match cell.client.spawn(out, &base, label, &stores[i], image) {
            Ok(p) => running.push(p),
            Err(e) => {
                // Those already started are waited for (and killed at the timeout) below.
                pulls::wait_all(&mut running, started, MODE_TIMEOUT)?;
                return Err(e);
            }
        }
    }
    // Readers look at the (first) store while the pulls run, and stop when the last pull ends.
    let done = AtomicBool::new(false);
    let client = &cell.client;
    let (waited, readers) = std::thread::scope(|s| {
        let loops: Vec<_> = (0..cfg.readers)
            .map(|i| {
                let (done, base, store) = (&done, &base, &stores[0]);
                let label = format!("reader-{i}");
                let image = create_from.as_str();
                s.spawn(move || read_until(done, client, out, base, store, &label, image))
            })
            .collect();
        let waited = pulls::wait_all(&mut running, started, MODE_TIMEOUT);
        let makespan = started.elapsed();
        done.store(true, Ordering::SeqCst);
        let mut readers = ReaderSamples::default();
        for l in loops {
            readers.add(l.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        (waited.map(|()| makespan), readers)
    });
    cell.makespans.push(waited?.as_nanos() as u64);
    cell.readers.add(readers);
    let roots: Vec<PathBuf> = stores.iter().map(|s| base.join(s)).collect();
    if let Some(report) = stop_trace(session, &roots, &mut cell.kernel_note) {
        cell.kernel.push(report);
    }
    let (mut results, errors) = pulls::collect(running);
    for r in &mut results {
        r.repeat = repeat;
    }
    cell.bytes += results.iter().map(|r| r.bytes).sum::<u64>();
    cell.pulls.extend(results);
    Ok(errors)
}

/// A repetition's stores (and podman runroots): large and not looked at again, so removed when the
/// repetition ends, however it ends.
struct Scratch {
    base: PathBuf,
    stores: Vec<String>,
    client: Client,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for store in &self.stores {
            let _ = fs::remove_dir_all(self.base.join(store));
            if let Some(runroot) = self.client.host_runroot(store) {
                let _ = fs::remove_dir_all(runroot);
            }
        }
    }
}

/// Pulls the readers' image into `base/<store>` with the cell's client, untimed and untraced;
/// returns what to create containers from.
fn prepull(cell: &Cell, out: &Path, base: &Path, store: &str, image: &ImageInfo) -> Result<String> {
    let label = format!("{} readers' image", cell.variant);
    let mut pull = vec![cell.client.spawn(out, base, label, store, image)?];
    pulls::wait_all(&mut pull, Instant::now(), MODE_TIMEOUT)?;
    if let Some(e) = pulls::collect(pull).1.into_iter().next() {
        return Err(Error::Invalid(format!("pulling the readers' image: {e}")));
    }
    cell.client.image_to_create_from(out, base, store, image)
}

/// The cell's figures over all repetitions.
fn finish(cell: Cell, cfg: &PodmanConfig) -> Result<VariantResult> {
    let times: Vec<u64> = cell.pulls.iter().filter_map(|p| p.duration_ns).collect();
    let total_ns: u64 = cell.makespans.iter().sum();
    let mut meta = ReportMeta::new("lockbench", Source::Kernel);
    meta.command = cfg.command.clone();
    meta.labels = [
        ("variant".to_string(), cell.variant.to_string()),
        ("layout".to_string(), cell.layout.to_string()),
        ("client".to_string(), cell.version.clone()),
    ]
    .into();
    let kernel_report = combine(&cell.kernel, &meta).context("adding up the kernel reports")?;
    Ok(VariantResult {
        readers: cell
            .readers
            .ops
            .iter()
            .map(|(op, d)| (op.to_string(), Latency::of(d)))
            .collect(),
        reader_errors: cell.readers.errors,
        variant: cell.variant,
        layout: cell.layout,
        client: cell.version,
        makespan_ns: Latency::of(&cell.makespans).p50_ns,
        makespans_ns: cell.makespans,
        pull_time: Latency::of(&times),
        throughput_mb_s: cell.bytes as f64 / 1e6 / (total_ns as f64 / 1e9).max(1e-9),
        pulls: cell.pulls,
        kernel_report,
        kernel_note: cell.kernel_note,
    })
}

/// Starts `locktrace record` into `base`; with `--trace auto` a tracer that fails to start becomes
/// a note, with `on` an error.
fn start_trace(
    cfg: &PodmanConfig,
    tracer: Option<&Tracer>,
    (base, timeline): (&Path, &Path),
    kernel_note: &mut Option<String>,
) -> Result<Option<Session>> {
    match tracer.map(|t| {
        t.start(
            &base.join("kernel-report.json"),
            timeline,
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

/// Stops the tracer and keeps only this cell's stores' locks, named relative to their store; a
/// trace that cannot be read becomes a note.
fn stop_trace(
    session: Option<Session>,
    roots: &[PathBuf],
    kernel_note: &mut Option<String>,
) -> Option<Report> {
    let report = session.map(|s| s.stop().and_then(|r| by_store_name(r, roots)));
    match report {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            *kernel_note = Some(format!("kernel trace unavailable: {}", one_line(&e)));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_podman_5_8_and_newer_counts_as_staged() {
        assert!(check_staged("podman version 5.8.6").is_ok());
        assert!(check_staged("podman version 6.0.0~rc1").is_ok());
        let old = check_staged("podman version 4.3.1")
            .unwrap_err()
            .to_string();
        assert!(old.contains("no staged layer creation"), "{old}");
        assert!(check_staged("podman version 5.7.9").is_err());
        assert!(
            check_staged("podman")
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }
}
