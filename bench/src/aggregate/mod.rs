//! A run's figures: each worker's events file read into one repetition's outcome, repetitions
//! added up per mode (store-clock lock report, pull and reader latencies, phases, kernel report),
//! and the targets checked against the result.

pub mod targets;

use std::collections::BTreeMap;

use locktrace_report::{Actor, LockKey, Metric, Mode, Recorder, ReportMeta, Source};
use store_core::EventKind;

use crate::error::{Context, Result};
use crate::model::{
    BenchMode, Latency, LockSpan, ModeResult, ModeSamples, OpSample, Phase, PullResult,
    ReaderFigures, RunConfig, kernel_release, lock_name, percentile,
};
use crate::protocol::{self, ReaderOp, Record, Role};
use crate::supervise::{Running, worker_problem};
use crate::text::one_line;

pub use targets::targets;

/// One repetition of one mode.
pub struct RunOutcome {
    pub makespan_ns: u64,
    pub pulls: Vec<PullResult>,
    pub ops: Vec<OpSample>,
    pub spans: Vec<LockSpan>,
    pub phases: BTreeMap<Phase, Vec<u64>>,
    pub failures: Vec<String>,
    pub kernel: Option<locktrace_report::Report>,
    pub kernel_note: Option<String>,
}

/// One mode's figures, accumulated over its repetitions.
pub struct ModeAcc {
    pub mode: BenchMode,
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
    pub fn new(mode: BenchMode) -> Self {
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

    pub fn add(&mut self, rep: usize, o: RunOutcome, repeat: usize) {
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

    pub fn finish(self, cfg: &RunConfig) -> Result<(ModeResult, ModeSamples)> {
        let mode = self.mode;
        let mut sorted = self.makespans.clone();
        sorted.sort_unstable();
        let makespan_median_ns = percentile(&sorted, 50.0);
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

/// Reads every worker's events file into one run's figures; a worker's problem becomes a failure
/// naming it and its image, and the other workers' results stay.
pub fn collect(workers: &[Running], t0: u64, rep: usize, mut failures: Vec<String>) -> RunOutcome {
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
                failures.push(format!("worker {}: {}", w.spec.label, one_line(&e)));
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
                        lock: lock_name(lock, &root),
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
