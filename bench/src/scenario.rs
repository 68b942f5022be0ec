//! `lockbench run`: per mode, P pull processes and R reader processes against one store (or, for
//! `isolated`, a store each), started together; then aggregation, report.json, plots, report.html.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lockbench::imagegen::{self, Compression, GenSet, GenSpec, ImageSpec};
use lockbench::size::ByteSize;
use locktrace_report::write_atomic;
use locktrace_report::{Actor, LockKey, Metric, Mode, Recorder, ReportMeta, Source};
use serde::{Deserialize, Serialize};
use store_core::{EventKind, ExtractMode, Store, StoreOptions, monotonic_ns};

use crate::protocol::{self, GO, READY, ReaderOp, Record, STOP};
use crate::results::{
    BenchReport, ImageFigures, Latency, ModeResult, Params, Phase, PullResult, ReaderFigures,
};
use crate::trace::{TraceMode, Tracer};
use crate::worker::Role;

/// Longest a mode may run before its remaining workers are killed and the run marked failed.
const MODE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default for how long workers get to open their store and print `ready`: normally well under a
/// second, so only a stuck worker (e.g. its store locked by another process) hits it. A worker in an
/// uninterruptible sleep (a hung filesystem) cannot be killed, and then nothing here can help.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long readers get to finish their round after `stop`.
const READER_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// All pulls into one store, layers extracted under layers.lock.
    Locked,
    /// All pulls into one store, layers extracted in staging and renamed under layers.lock.
    Staged,
    /// Each pull (and reader) in its own store: the no-contention bound.
    Isolated,
}

impl BenchMode {
    /// Isolated stores extract the staged way, so that isolated differs from staged only in not
    /// sharing a store (same extraction thread and priority, same commit).
    pub fn extract_mode(self) -> ExtractMode {
        match self {
            BenchMode::Locked => ExtractMode::Locked,
            BenchMode::Staged | BenchMode::Isolated => ExtractMode::Staged,
        }
    }
}

impl fmt::Display for BenchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BenchMode::Locked => "locked",
            BenchMode::Staged => "staged",
            BenchMode::Isolated => "isolated",
        })
    }
}

impl FromStr for BenchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "locked" => Ok(BenchMode::Locked),
            "staged" => Ok(BenchMode::Staged),
            "isolated" => Ok(BenchMode::Isolated),
            other => Err(format!(
                "unknown mode {other:?} (expected locked, staged or isolated)"
            )),
        }
    }
}

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
    /// Every worker's store is opened `durable`.
    pub durable: bool,
    /// How long workers get to print `ready` before they are killed (READY_TIMEOUT by default).
    pub ready_timeout: Duration,
}

/// A lock hold or wait seen by a worker, for the timeline plot.
#[derive(Debug, Clone)]
pub struct LockSpan {
    pub worker: String,
    pub pid: u32,
    pub lock: String,
    pub write: bool,
    pub metric: Metric,
    /// Relative to the go signal.
    pub start_ns: i64,
    pub duration_ns: u64,
}

/// A reader operation, for the latency-over-time plot.
#[derive(Debug, Clone)]
pub struct OpSample {
    pub op: ReaderOp,
    pub failed: bool,
    pub start_ns: i64,
    pub duration_ns: u64,
}

/// Per-mode raw samples for the time-based plots (first repetition).
pub struct ModeSamples {
    pub mode: BenchMode,
    pub spans: Vec<LockSpan>,
    pub ops: Vec<OpSample>,
}

struct WorkerSpec {
    label: String,
    role: Role,
    store: PathBuf,
    /// Pull: `DIR:TAG`. Read: store image id.
    image: String,
    /// What failure messages call the image.
    image_name: String,
}

struct Running {
    spec: WorkerSpec,
    child: Child,
    stdin: Option<ChildStdin>,
    events: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
    /// Why the parent killed it (a timeout); already in the failures, and its exit status adds
    /// nothing to it.
    killed: Option<String>,
}

/// One repetition of one mode.
struct RunOutcome {
    makespan_ns: u64,
    pulls: Vec<PullResult>,
    ops: Vec<OpSample>,
    spans: Vec<LockSpan>,
    phases: BTreeMap<Phase, Vec<u64>>,
    failures: Vec<String>,
    kernel: Option<locktrace_report::Report>,
    kernel_note: Option<String>,
}

pub fn run(cfg: &RunConfig) -> Result<bool> {
    fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let out = cfg.out.canonicalize()?;
    let tracer = Tracer::detect(cfg.trace)?;
    let images_dir = out.join("images");
    let bar = crate::byte_bar(cfg.images.total_bytes(), "generating", cfg.quiet);
    let started = Instant::now();
    let (set, cached) = imagegen::ensure(&images_dir, &cfg.images, &|n| bar.inc(n))
        .with_context(|| format!("generating images in {}", images_dir.display()))?;
    bar.finish_and_clear();
    say(
        cfg,
        format!(
            "images: {} x {} ({} layers, {}) in {}{}",
            set.images.len(),
            ByteSize(set.images[0].tar_bytes()),
            cfg.images.layers,
            cfg.images.compression,
            images_dir.display(),
            if cached {
                " (cached)".to_string()
            } else {
                format!(", generated in {:.1}s", started.elapsed().as_secs_f64())
            }
        ),
    );
    let base = base_image(&out)?;
    warm_page_cache(&set)?;

    // Repetitions interleave the modes (locked, staged, isolated, locked, …) so drift in the
    // machine's load spreads over all of them instead of biasing one.
    let mut accs: Vec<ModeAcc> = cfg.modes.iter().map(|&m| ModeAcc::new(m)).collect();
    for rep in 0..cfg.repeat {
        for acc in &mut accs {
            let o = run_once(cfg, &out, acc.mode, rep, &set, &base, tracer.as_ref())?;
            say(
                cfg,
                format!(
                    "{}{}: makespan {}{}",
                    acc.mode,
                    if cfg.repeat > 1 {
                        format!(" #{}", rep + 1)
                    } else {
                        String::new()
                    },
                    locktrace_report::human_duration(o.makespan_ns),
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
    let (results, samples): (Vec<ModeResult>, Vec<ModeSamples>) = accs
        .into_iter()
        .map(|a| a.finish(cfg))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();

    let failures: Vec<String> = results
        .iter()
        .flat_map(|r| r.failures.iter().map(move |f| format!("{}: {f}", r.mode)))
        .collect();
    let report = BenchReport {
        schema: crate::results::SCHEMA.to_string(),
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
            durable: cfg.durable,
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
        targets: crate::results::targets(&results),
        failed: !failures.is_empty(),
        failures,
        modes: results,
        sources: sources(),
    };
    report.write(&out.join("report.json"))?;
    // Each mode's lock figures also as plain locktrace reports, for `locktrace gate|compare|plot`.
    for m in &report.modes {
        m.store_report
            .write(&out.join(format!("{}.store.json", m.mode)))
            .context("writing the per-mode store report")?;
        if let Some(k) = &m.kernel_report {
            k.write(&out.join(format!("{}.kernel.json", m.mode)))
                .context("writing the per-mode kernel report")?;
        }
    }
    let plots = crate::plot::render_all(&report, &samples, &out)?;
    let table = crate::table::build(&report);
    write_atomic(
        &out.join("report.html"),
        crate::html::render(&report, &table, &plots).as_bytes(),
    )
    .context("writing report.html")?;
    println!("{}", table.to_text());
    for t in &report.targets {
        println!(
            "target {:<22} {:<5} {} (goal: {})",
            t.name,
            if t.met { "met" } else { "MISSED" },
            t.measured,
            t.goal
        );
    }
    for f in &report.failures {
        eprintln!("lockbench: failed: {f}");
    }
    println!(
        "report: {}  {}",
        out.join("report.json").display(),
        out.join("report.html").display()
    );
    if report.failed {
        eprintln!(
            "lockbench: run FAILED ({} failure(s))",
            report.failures.len()
        );
    }
    Ok(!report.failed)
}

fn say(cfg: &RunConfig, line: String) {
    if !cfg.quiet {
        eprintln!("{line}");
    }
}

fn sources() -> BTreeMap<String, String> {
    [
        (
            "makespan",
            "parent process, CLOCK_MONOTONIC from go signal to last pull end",
        ),
        (
            "pull_time",
            "worker process, CLOCK_MONOTONIC around store_core::oci::pull",
        ),
        (
            "throughput",
            "uncompressed layer bytes (PullOutcome.bytes) / makespan",
        ),
        (
            "reader",
            "reader process, CLOCK_MONOTONIC around each store-core call",
        ),
        (
            "store_report",
            "store-core observer (userspace clock, kernel fcntl locks only)",
        ),
        ("kernel_report", "locktrace record (eBPF, kernel clock)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn kernel_release() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The tiny image readers create containers from; pre-pulled into every reader store.
fn base_image(out: &Path) -> Result<imagegen::ImageInfo> {
    let dir = out.join("base-image");
    let _ = fs::remove_dir_all(&dir);
    let spec = ImageSpec {
        layers: 1,
        layer_size: ByteSize(256 << 10),
        files_per_layer: 8,
        compression: Compression::Gzip,
        seed: 0xba5e,
    };
    imagegen::generate_image(&dir, &spec, imagegen::TAG).context("generating the base image")
}

/// Reads every blob once so the first mode does not pay for cold reads the others skip.
pub(crate) fn warm_page_cache(set: &GenSet) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for image in &set.images {
        for layer in &image.layers {
            let path = image
                .dir
                .join("blobs/sha256")
                .join(layer.digest.trim_start_matches("sha256:"));
            let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            while f.read(&mut buf)? > 0 {}
        }
    }
    Ok(())
}

/// One mode's figures, accumulated over its repetitions.
struct ModeAcc {
    mode: BenchMode,
    recorder: Recorder,
    pulls: Vec<PullResult>,
    makespans: Vec<u64>,
    ops: Vec<OpSample>,
    failures: Vec<String>,
    /// One kernel report per traced repetition, keyed by store name.
    kernels: Vec<locktrace_report::Report>,
    kernel_note: Option<String>,
    samples: ModeSamples,
    phases: BTreeMap<Phase, Vec<u64>>,
    bytes: u64,
}

impl ModeAcc {
    fn new(mode: BenchMode) -> Self {
        ModeAcc {
            mode,
            recorder: Recorder::new(),
            pulls: Vec::new(),
            makespans: Vec::new(),
            ops: Vec::new(),
            failures: Vec::new(),
            kernels: Vec::new(),
            kernel_note: None,
            samples: ModeSamples {
                mode,
                spans: Vec::new(),
                ops: Vec::new(),
            },
            phases: BTreeMap::new(),
            bytes: 0,
        }
    }

    fn add(&mut self, rep: usize, o: RunOutcome, repeat: usize) {
        for sp in &o.spans {
            let lmode = if sp.write { Mode::Write } else { Mode::Read };
            let actor = Actor {
                pid: sp.pid,
                comm: sp.worker.clone(),
            };
            self.recorder.record(
                &LockKey::named(&sp.lock),
                lmode,
                sp.metric,
                sp.duration_ns,
                &actor,
            );
        }
        for (phase, mut d) in o.phases {
            self.phases.entry(phase).or_default().append(&mut d);
        }
        if rep == 0 {
            self.samples.spans = o.spans;
            self.samples.ops = o.ops.clone();
        }
        self.bytes += o
            .pulls
            .iter()
            .filter(|p| p.duration_ns.is_some())
            .map(|p| p.bytes)
            .sum::<u64>();
        self.pulls.extend(o.pulls);
        self.ops.extend(o.ops);
        self.makespans.push(o.makespan_ns);
        self.failures.extend(o.failures.into_iter().map(|f| {
            if repeat > 1 {
                format!("run {rep}: {f}")
            } else {
                f
            }
        }));
        self.kernels.extend(o.kernel);
        self.kernel_note = self.kernel_note.take().or(o.kernel_note);
    }

    fn finish(self, cfg: &RunConfig) -> Result<(ModeResult, ModeSamples)> {
        let mode = self.mode;
        let mut sorted = self.makespans.clone();
        sorted.sort_unstable();
        let makespan_median_ns = crate::results::percentile(&sorted, 50.0);
        let total_makespan: u64 = self.makespans.iter().sum();
        let pull_times: Vec<u64> = self.pulls.iter().filter_map(|p| p.duration_ns).collect();
        let mut meta = ReportMeta::new("lockbench", Source::Store);
        meta.command = cfg.command.clone();
        meta.kernel = kernel_release();
        meta.duration_ns = total_makespan;
        meta.labels.insert("mode".into(), mode.to_string());
        meta.labels
            .insert("extract_mode".into(), mode.extract_mode().to_string());
        meta.labels.insert("pulls".into(), cfg.pulls.to_string());
        meta.labels
            .insert("readers".into(), cfg.readers.to_string());
        meta.labels.insert("repeat".into(), cfg.repeat.to_string());
        let per_op = ReaderOp::ALL
            .iter()
            .map(|&op| {
                let d: Vec<u64> = self
                    .ops
                    .iter()
                    .filter(|s| s.op == op)
                    .map(|s| s.duration_ns)
                    .collect();
                (op, Latency::of(&d))
            })
            .filter(|(_, l)| l.count > 0)
            .collect();
        let all: Vec<u64> = self.ops.iter().map(|s| s.duration_ns).collect();
        let errors = self.ops.iter().filter(|s| s.failed).count() as u64;
        let kernel_report = crate::trace::combine(&self.kernels, &meta)
            .with_context(|| format!("{mode}: combining the kernel reports of its runs"))?;
        let result = ModeResult {
            mode,
            extract_mode: mode.extract_mode(),
            makespan_median_ns,
            makespan_ns: self.makespans,
            pull_time: Latency::of(&pull_times),
            throughput_mb_s: self.bytes as f64 / 1e6 / (total_makespan as f64 / 1e9).max(1e-9),
            pulls: self.pulls,
            reader: ReaderFigures {
                all: Latency::of(&all),
                errors,
                per_op,
            },
            phases: self
                .phases
                .iter()
                .map(|(phase, d)| (*phase, Latency::of(d)))
                .collect(),
            store_report: self.recorder.finish(meta),
            kernel_report,
            kernel_note: self.kernel_note,
            failures: self.failures,
        };
        Ok((result, self.samples))
    }
}

fn run_once(
    cfg: &RunConfig,
    out: &Path,
    mode: BenchMode,
    rep: usize,
    set: &GenSet,
    base: &imagegen::ImageInfo,
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
    let stores = stores.canonicalize()?;
    let specs = worker_specs(cfg, mode, set, base, &stores)?;
    let mut roots: Vec<PathBuf> = specs.iter().map(|s| s.store.clone()).collect();
    roots.sort();
    roots.dedup();

    let trace_file = run_dir.join("kernel-report.json");
    let mut kernel_note = tracer.is_none().then(|| cfg.trace.skip_note());
    let session = match tracer.map(|t| t.start(&trace_file, &run_dir.join("locktrace.log"))) {
        None => None,
        Some(Ok(session)) => Some(session),
        Some(Err(e)) if cfg.trace == TraceMode::On => return Err(e),
        Some(Err(e)) => {
            let note = format!(
                "kernel tracing failed to start, store-clock figures only: {}",
                crate::one_line(&e)
            );
            eprintln!("lockbench: note: {note}");
            kernel_note = Some(note);
            None
        }
    };
    let mut workers = Vec::new();
    for spec in specs {
        workers.push(spawn(spec, mode, cfg, &run_dir)?);
    }
    let mut failures = Vec::new();
    let t0 = drive(cfg, mode, rep, &mut workers, &mut failures)?;
    let kernel = match session.map(|s| {
        s.stop()
            .and_then(|report| crate::trace::by_store_name(report, &roots))
    }) {
        None => None,
        Some(Ok(report)) => Some(report),
        Some(Err(e)) => {
            let note = format!("kernel trace unavailable: {}", crate::one_line(&e));
            if cfg.trace == TraceMode::On {
                failures.push(note.clone());
            }
            kernel_note = Some(note);
            None
        }
    };
    let mut outcome = collect(&workers, t0, rep, failures);
    outcome.kernel = kernel;
    outcome.kernel_note = kernel_note;
    // Reclaim the space: the stores are the bulk of a run's disk use and are not inspected later.
    let _ = fs::remove_dir_all(&stores);
    // SAFETY: sync(2) has no preconditions; it flushes this run's writeback before the next mode.
    unsafe { libc::sync() };
    Ok(outcome)
}

/// P pullers (a different image each) and R readers; reader stores get the base image first.
fn worker_specs(
    cfg: &RunConfig,
    mode: BenchMode,
    set: &GenSet,
    base: &imagegen::ImageInfo,
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
                let id = prepull_base(&store, base)?;
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

/// Starts the workers together, waits for the pulls, stops the readers; returns the go time.
fn drive(
    cfg: &RunConfig,
    mode: BenchMode,
    rep: usize,
    workers: &mut [Running],
    failures: &mut Vec<String>,
) -> Result<u64> {
    // Wait until every worker has its store open, so the go signal starts them together.
    let ready = wait_ready(workers, cfg.ready_timeout, failures)?;
    let t0 = monotonic_ns();
    for (w, ok) in workers.iter_mut().zip(&ready) {
        if *ok {
            send(w, GO);
        }
    }
    let bar = pull_bar(cfg, mode, rep);
    let started = Instant::now();
    loop {
        let mut pending = 0;
        for w in workers.iter_mut().filter(|w| w.spec.role == Role::Pull) {
            if w.status.is_none() {
                match w.child.try_wait() {
                    Ok(Some(status)) => {
                        w.status = Some(status);
                        bar.inc(1);
                    }
                    Ok(None) => pending += 1,
                    Err(e) => bail!("waiting for worker {}: {e}", w.spec.label),
                }
            }
        }
        if pending == 0 {
            break;
        }
        if started.elapsed() > MODE_TIMEOUT {
            for w in workers.iter_mut().filter(|w| w.status.is_none()) {
                let why = format!(
                    "worker {} ({}) timed out after {}s and was killed",
                    w.spec.label,
                    w.spec.image_name,
                    MODE_TIMEOUT.as_secs()
                );
                give_up(w, why, failures)?;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bar.finish_and_clear();
    for w in workers.iter_mut() {
        if w.spec.role == Role::Read {
            send(w, STOP);
        }
        w.stdin = None;
    }
    let grace = Instant::now();
    for w in workers.iter_mut().filter(|w| w.status.is_none()) {
        loop {
            match w.child.try_wait()? {
                Some(status) => {
                    w.status = Some(status);
                    break;
                }
                None if grace.elapsed() > READER_GRACE => {
                    let why = format!(
                        "worker {} ({}) did not stop within {}s and was killed",
                        w.spec.label,
                        w.spec.image_name,
                        READER_GRACE.as_secs()
                    );
                    give_up(w, why, failures)?;
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    Ok(t0)
}

/// Reads every worker's events file into one run's figures; a worker's problem becomes a failure
/// naming it and its image, and the other workers' results stay.
fn collect(workers: &[Running], t0: u64, rep: usize, mut failures: Vec<String>) -> RunOutcome {
    let mut pulls = Vec::new();
    let mut ops = Vec::new();
    let mut spans = Vec::new();
    let mut phases: BTreeMap<Phase, Vec<u64>> = BTreeMap::new();
    let mut last_pull_end = t0;
    let as_offset = |ns: u64| ns as i64 - t0 as i64;
    for w in workers {
        let pid = w.child.id();
        // Store::open canonicalizes its root, and so are the lock paths it reports.
        let root = w
            .spec
            .store
            .canonicalize()
            .unwrap_or_else(|_| w.spec.store.clone());
        let records = match protocol::read_records(&w.events) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("worker {}: {}", w.spec.label, crate::one_line(&e)));
                Vec::new()
            }
        };
        let mut pull = None;
        let mut error = None;
        let mut op_errors = Vec::new();
        for r in records {
            match r {
                Record::Store { event } => {
                    let (lock, write, metric) = match &event.kind {
                        EventKind::LockWait { lock, write } => (lock, *write, Metric::Wait),
                        EventKind::LockHold { lock, write } => (lock, *write, Metric::Hold),
                        EventKind::Extract | EventKind::Commit => {
                            let phase = if matches!(event.kind, EventKind::Extract) {
                                Phase::Extract
                            } else {
                                Phase::Commit
                            };
                            phases.entry(phase).or_default().push(event.duration_ns);
                            continue;
                        }
                    };
                    spans.push(LockSpan {
                        worker: w.spec.label.clone(),
                        pid,
                        lock: crate::results::lock_name(lock, &root),
                        write,
                        metric,
                        start_ns: as_offset(event.start_mono_ns),
                        duration_ns: event.duration_ns,
                    });
                }
                Record::Pull {
                    start_mono_ns,
                    duration_ns,
                    bytes,
                    ..
                } => {
                    last_pull_end = last_pull_end.max(start_mono_ns + duration_ns);
                    pull = Some((duration_ns, bytes));
                }
                Record::Op {
                    op,
                    start_mono_ns,
                    duration_ns,
                    error,
                } => {
                    let failed = error.is_some();
                    if let Some(e) = error {
                        op_errors.push(format!("{}: {e}", op.name()));
                    }
                    ops.push(OpSample {
                        op,
                        failed,
                        start_ns: as_offset(start_mono_ns),
                        duration_ns,
                    });
                }
                Record::Error { message } => error = Some(message),
            }
        }
        let status = w.status.expect("every worker was waited for");
        let finished = pull.is_some() || w.spec.role == Role::Read;
        let problem = w
            .killed
            .clone()
            .or_else(|| worker_problem(w, status, error, finished));
        if let Some(first) = op_errors.first() {
            failures.push(format!(
                "worker {} ({}): {} store operation(s) failed, first: {first}",
                w.spec.label,
                w.spec.image_name,
                op_errors.len()
            ));
        } else if let Some(p) = problem.as_ref().filter(|_| w.killed.is_none()) {
            failures.push(p.clone());
        }
        if w.spec.role == Role::Pull {
            pulls.push(PullResult {
                worker: w.spec.label.clone(),
                image: w.spec.image_name.clone(),
                repeat: rep,
                pid,
                duration_ns: pull.map(|(d, _)| d),
                bytes: pull.map_or(0, |(_, b)| b),
                error: problem,
            });
        }
    }
    // Reader figures describe the contention window; rounds after the last pull are uncontended.
    let window = as_offset(last_pull_end);
    ops.retain(|o| o.start_ns <= window);
    RunOutcome {
        makespan_ns: last_pull_end - t0,
        pulls,
        ops,
        spans,
        phases,
        failures,
        kernel: None,
        kernel_note: None,
    }
}

fn pull_bar(cfg: &RunConfig, mode: BenchMode, rep: usize) -> ProgressBar {
    if cfg.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(cfg.pulls as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:30}] {pos}/{len} pulls {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(if cfg.repeat > 1 {
        format!("{mode} #{}", rep + 1)
    } else {
        mode.to_string()
    });
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Pulls the base image into `store` (from the parent, before any worker starts); returns its id.
fn prepull_base(store: &Path, base: &imagegen::ImageInfo) -> Result<String> {
    let s = Store::open(store, StoreOptions::default())
        .with_context(|| format!("opening store {}", store.display()))?;
    let outcome = store_core::oci::pull(&s, &base.dir, Some(&base.tag), ExtractMode::Staged)
        .with_context(|| format!("pulling the base image into {}", store.display()))?;
    Ok(outcome.image.id)
}

fn spawn(spec: WorkerSpec, mode: BenchMode, cfg: &RunConfig, run_dir: &Path) -> Result<Running> {
    let exe = std::env::current_exe().context("locating the lockbench binary")?;
    let events = run_dir.join(format!("{}.ndjson", spec.label));
    let stderr = run_dir.join(format!("{}.stderr", spec.label));
    let stderr_file =
        File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
    let role = match spec.role {
        Role::Pull => "pull",
        Role::Read => "read",
    };
    let child = Command::new(exe)
        .arg("worker")
        .args(["--role", role])
        .arg("--store")
        .arg(&spec.store)
        .args(["--mode", &mode.extract_mode().to_string()])
        .args(["--label", &spec.label])
        .arg("--events")
        .arg(&events)
        .args(["--image", &spec.image])
        .args(["--extract-nice", &cfg.extract_nice.to_string()])
        .args(cfg.durable.then_some("--durable"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr_file)
        .spawn()
        .with_context(|| format!("starting worker {}", spec.label))?;
    let mut running = Running {
        spec,
        child,
        stdin: None,
        events,
        stderr,
        status: None,
        killed: None,
    };
    running.stdin = running.child.stdin.take();
    Ok(running)
}

/// Per worker: whether it printed `ready` (false: it exited first). Workers still silent after
/// `timeout` are killed and become failures naming them, so a worker stuck opening its store
/// (locked by another process, say) cannot hang the run; the others still start.
fn wait_ready(
    workers: &mut [Running],
    timeout: Duration,
    failures: &mut Vec<String>,
) -> Result<Vec<bool>> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    let mut ready: Vec<Option<bool>> = vec![None; workers.len()];
    for (i, w) in workers.iter_mut().enumerate() {
        let Some(stdout) = w.child.stdout.take() else {
            ready[i] = Some(false);
            continue;
        };
        let tx = tx.clone();
        // A blocking read per worker: it ends with the worker's stdout, whether the worker
        // exits or is killed below, so the thread is not waited for.
        std::thread::Builder::new()
            .name(format!("ready-{}", w.spec.label))
            .spawn(move || {
                let mut line = String::new();
                let ok = matches!(BufReader::new(stdout).read_line(&mut line), Ok(n) if n > 0)
                    && line.trim() == READY;
                let _ = tx.send((i, ok));
            })
            .context("starting a thread to wait for a worker")?;
    }
    drop(tx);
    while ready.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, ok)) => ready[i] = Some(ok),
            Err(_) => break,
        }
    }
    for (w, r) in workers.iter_mut().zip(&ready) {
        if r.is_none() {
            let why = format!(
                "worker {} ({}) did not report ready within {}s (opening store {}) and was killed",
                w.spec.label,
                w.spec.image_name,
                timeout.as_secs_f64(),
                w.spec.store.display()
            );
            give_up(w, why, failures)?;
        }
    }
    Ok(ready.into_iter().map(|r| r == Some(true)).collect())
}

/// Kills a worker the parent stopped waiting for; `why` becomes its one failure.
fn give_up(w: &mut Running, why: String, failures: &mut Vec<String>) -> Result<()> {
    let _ = w.child.kill();
    w.status = Some(
        w.child
            .wait()
            .with_context(|| format!("waiting for worker {}", w.spec.label))?,
    );
    failures.push(why.clone());
    w.killed = Some(why);
    Ok(())
}

fn send(w: &mut Running, msg: &str) {
    if let Some(stdin) = w.stdin.as_mut() {
        // A worker that already died cannot read it; its exit status tells the story.
        let _ = writeln!(stdin, "{msg}").and_then(|_| stdin.flush());
    }
}

/// A one-line description of what went wrong with a worker, naming it and its image.
fn worker_problem(
    w: &Running,
    status: ExitStatus,
    error: Option<String>,
    finished: bool,
) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() && finished {
        return None;
    }
    let what = if let Some(e) = error {
        e
    } else if let Some(sig) = status.signal() {
        format!("killed by signal {sig}{}", crate::log_tail(&w.stderr))
    } else if status.success() {
        "exited without reporting a result".to_string()
    } else {
        format!("exited with {status}{}", crate::log_tail(&w.stderr))
    };
    Some(format!(
        "worker {} ({}): {what}",
        w.spec.label, w.spec.image_name
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// A worker stand-in: a real process that does what `script` says instead of lockbench's
    /// worker (printing `ready`, never getting to it, exiting early).
    fn worker(dir: &Path, label: &str, image: &str, script: &str) -> Running {
        let stderr = dir.join(format!("{label}.stderr"));
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Running {
            spec: WorkerSpec {
                label: label.to_string(),
                role: Role::Pull,
                store: dir.join("store"),
                image: String::new(),
                image_name: image.to_string(),
            },
            child,
            stdin: None,
            events: dir.join(format!("{label}.ndjson")),
            stderr,
            status: None,
            killed: None,
        }
    }

    #[test]
    fn a_worker_that_never_gets_ready_is_killed_and_named_and_the_others_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut workers = vec![
            worker(dir.path(), "pull-0", "img-00", "echo ready; exec sleep 60"),
            worker(dir.path(), "pull-1", "img-01", "exec sleep 60"),
            worker(dir.path(), "pull-2", "img-02", "exit 3"),
        ];
        // On a thread, so that a wait without a timeout fails the test instead of hanging it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let ready = wait_ready(&mut workers, Duration::from_millis(500), &mut failures);
            let _ = tx.send((ready.unwrap(), failures, workers));
        });
        let (ready, failures, mut workers) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("wait_ready did not return: no timeout");
        assert_eq!(ready, vec![true, false, false]);
        assert_eq!(failures.len(), 1, "{failures:#?}");
        assert!(
            failures[0].starts_with("worker pull-1 (img-01) did not report ready within 0.5s"),
            "{failures:#?}"
        );
        assert_eq!(workers[1].killed.as_ref(), Some(&failures[0]));
        let status = workers[1].status.expect("the stuck worker was reaped");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(workers[0].status.is_none() && workers[2].status.is_none());
        for w in &mut workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}
