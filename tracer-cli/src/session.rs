//! A recording session (`locktrace record`): trace the system, or a command's process tree, until
//! it ends, with live output, and write the report.

use std::{
    fs::File,
    io::{BufWriter, Write},
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use locktrace_report::{
    Collection, Drops, Recorder, Report, ReportError, ReportMeta, Source, render_text,
};

use crate::{
    Error,
    attach::AttachRequest,
    child::{ChildError, HeldChild},
    exporter::{Exporter, ExporterError, ExporterOptions, TracerStats},
    filter::Filter,
    holders::Blocked,
    kernel,
    ledger::{Ledger, cstr},
    stacks::Stacks,
    summary,
    timeline::Timeline,
    tracer::{Capture, Counters, Record, Tracer},
};

/// Why a session failed; each renders as one line (the report error's cause follows as its source).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Trace(#[from] Error),
    #[error(transparent)]
    Command(#[from] ChildError),
    #[error(
        "--summary aggregates in the kernel, so it has no {0}, which needs every event; drop one of them"
    )]
    SummaryWithout(&'static str),
    #[error(
        "--summary hooks the kernel's lock code itself; --attach chooses event mode's hooks: drop --attach"
    )]
    SummaryAttach,
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Exporter(#[from] ExporterError),
    #[error("writing {}", path.display())]
    WriteReport {
        path: PathBuf,
        #[source]
        error: ReportError,
    },
    #[error("writing the timeline {}: {error}", path.display())]
    WriteTimeline {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LiveFormat {
    /// A per-lock table every interval.
    #[default]
    Text,
    /// A report snapshot (the JSON report schema) every interval, one per line.
    Json,
    /// Every lock and release event as it arrives, one JSON object per line; the final report is
    /// the last line (`"event": "report"`).
    Ndjson,
}

pub struct Options {
    pub filter: Filter,
    pub attach: AttachRequest,
    pub duration: Option<Duration>,
    pub interval: Option<Duration>,
    pub output: Option<PathBuf>,
    pub format: LiveFormat,
    pub quiet: bool,
    /// Capture and name the user stack of every lock call.
    pub stacks: bool,
    /// Aggregate in the kernel (no per-event data).
    pub summary: bool,
    /// Write every wait and hold to this Perfetto trace (`--timeline`).
    pub timeline: Option<PathBuf>,
    pub command: Vec<String>,
    /// Serve Prometheus `/metrics` here while recording.
    pub listen: Option<SocketAddr>,
    /// Drop an exported lock series after this long without a new sample.
    pub expire: Duration,
    /// Export at most this many lock series.
    pub max_series: usize,
}

/// The timeline being written, and the first error writing it (which stops it, not the recording).
struct TimelineOut {
    timeline: Timeline<BufWriter<File>>,
    error: Option<std::io::Error>,
}

impl TimelineOut {
    fn take(&mut self, ledger: &mut Ledger) {
        for interval in ledger.take_intervals() {
            if self.error.is_none()
                && let Err(e) = self.timeline.add(&interval)
            {
                self.error = Some(e);
            }
        }
    }
}

/// The kernel side wakes us only when its buffer fills up, so this is also the batching latency.
const POLL: Duration = Duration::from_millis(50);

static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static TERMS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGTERM {
        TERMS.fetch_add(1, Ordering::SeqCst);
    }
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Runs a recording; returns the exit code to leave with (the command's, when there is one).
/// Installs SIGINT and SIGTERM handlers for the process: the first stops the recording.
pub fn run(mut opts: Options) -> Result<i32, SessionError> {
    if opts.summary {
        if opts.stacks {
            return Err(SessionError::SummaryWithout("--stacks"));
        }
        if opts.format == LiveFormat::Ndjson {
            return Err(SessionError::SummaryWithout("--format ndjson event stream"));
        }
        if opts.timeline.is_some() {
            return Err(SessionError::SummaryWithout("--timeline"));
        }
        if opts.attach != AttachRequest::Auto {
            return Err(SessionError::SummaryAttach);
        }
    }
    // Before anything starts: a path that cannot be written costs no recording.
    let mut timeline = match &opts.timeline {
        Some(path) => Some(TimelineOut {
            timeline: Timeline::create(path).map_err(|error| SessionError::WriteTimeline {
                path: path.clone(),
                error,
            })?,
            error: None,
        }),
        None => None,
    };
    // Bound before anything is traced or run, so a taken port fails fast.
    let exporter = opts
        .listen
        .map(|listen| {
            Exporter::start(&ExporterOptions {
                listen,
                expire: opts.expire,
                max_series: opts.max_series,
            })
        })
        .transpose()?;
    let mut tracer_stats = TracerStats::default();
    let mut child = match opts.command.split_first() {
        Some((program, args)) => {
            let child = HeldChild::spawn(program, args)?;
            opts.filter.pids.push(child.id());
            Some(child)
        }
        None => None,
    };
    let capture = Capture {
        stacks: opts.stacks,
        summary: opts.summary,
    };
    let started = Tracer::start(&opts.filter, opts.attach, capture).and_then(|mut t| {
        let stacks = match opts.stacks {
            true => Some(Stacks::new(
                t.take_stacks().ok_or(Error::MapMissing("STACKS"))??,
            )),
            false => None,
        };
        Ok((t, stacks))
    });
    let (mut tracer, mut stacks) = match started {
        Ok(t) => t,
        Err(e) => {
            if let Some(c) = &mut child {
                c.kill(libc::SIGKILL);
                let _ = c.try_wait(true);
            }
            return Err(e.into());
        }
    };
    // SAFETY: on_signal is an extern "C" fn that only touches atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    if !opts.quiet {
        eprintln!("{}", banner(&tracer, &opts.command));
    }
    let started = Instant::now();
    if let Some(c) = &mut child {
        c.release()?;
    }
    let mut ledger = Ledger::with_paths(&opts.filter.paths);
    if timeline.is_some() {
        ledger = ledger.with_intervals();
    }
    let mut next_tick = opts.interval.map(|i| started + i);
    let mut exit_code = 0;
    let mut forwarded = 0;
    let stdout = std::io::stdout();
    let ndjson = opts.format == LiveFormat::Ndjson && !opts.quiet;
    let handle = |(ledger, stacks, timeline): (
        &mut Ledger,
        &mut Option<Stacks>,
        &mut Option<TimelineOut>,
    ),
                  rec: Record| {
        let stack = match (stacks, &rec) {
            (Some(stacks), Record::Lock(ev)) => stacks.of(ev),
            _ => None,
        };
        let blocked = ledger.handle(&rec, stack.clone());
        if let Some(t) = timeline.as_mut() {
            t.take(ledger);
        }
        if let (Record::Lock(ev), true) = (&rec, ndjson) {
            let line = event_json(ev, blocked.as_ref(), stack.as_deref());
            let _ = writeln!(stdout.lock(), "{line}");
        }
    };
    loop {
        tracer.poll(POLL, |rec| {
            tracer_stats.events += u64::from(matches!(rec, Record::Lock(_)));
            handle((&mut ledger, &mut stacks, &mut timeline), rec)
        });
        // Each batch reaches the file whole, so a recording that is killed leaves a valid trace.
        if let Some(TimelineOut {
            timeline,
            error: error @ None,
        }) = &mut timeline
            && let Err(e) = timeline.flush()
        {
            *error = Some(e);
        }
        if let Some(x) = exporter.as_ref().filter(|x| x.wanted()) {
            publish(
                x,
                &tracer,
                &opts,
                (&mut ledger, stacks.as_ref()),
                started,
                &mut tracer_stats,
            );
        }
        if let (Some(tick), Some(interval)) = (next_tick, opts.interval)
            && Instant::now() >= tick
        {
            if !opts.quiet && opts.format != LiveFormat::Ndjson {
                let counters = tracer.counters().unwrap_or_default();
                let snap = snapshot(
                    &tracer,
                    &opts,
                    (&mut ledger, stacks.as_ref()),
                    started,
                    counters,
                )?;
                print_report(&snap, opts.format);
            }
            next_tick = Some(tick + interval);
        }
        if let Some(c) = &mut child {
            if let Some(code) = c.try_wait(false)? {
                exit_code = code;
                break;
            }
            forward_signals(c, &mut forwarded);
        } else if SIGNALS.load(Ordering::SeqCst) > 0 {
            break;
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
    }
    // Events already in the ring buffer belong to this run.
    tracer.poll(Duration::ZERO, |rec| {
        handle((&mut ledger, &mut stacks, &mut timeline), rec)
    });
    let timeline_stats = match (timeline, &opts.timeline) {
        (Some(TimelineOut { timeline, error }), Some(path)) => {
            let stats = timeline.stats();
            if let Some(error) = error.or_else(|| timeline.finish().err()) {
                return Err(SessionError::WriteTimeline {
                    path: path.clone(),
                    error,
                });
            }
            Some((path, stats))
        }
        _ => None,
    };
    // A failed counter read must not cost the recording; say so instead.
    let counters = tracer.counters().unwrap_or_else(|e| {
        eprintln!("locktrace: warning: kernel drop counters unavailable: {e}");
        Counters::default()
    });
    let report = snapshot(
        &tracer,
        &opts,
        (&mut ledger, stacks.as_ref()),
        started,
        counters,
    )?;
    if let Some(path) = &opts.output {
        report
            .write(path)
            .map_err(|error| SessionError::WriteReport {
                path: path.clone(),
                error,
            })?;
    }
    if !opts.quiet {
        print_report(&report, opts.format);
        if let Some(path) = &opts.output {
            eprintln!("locktrace: report written to {}", path.display());
        }
        if let Some((path, stats)) = timeline_stats {
            eprintln!(
                "locktrace: timeline written to {} ({} waits and holds, {} flows{}); open it in https://ui.perfetto.dev",
                path.display(),
                stats.slices,
                stats.flows,
                match stats.flows_lost {
                    0 => String::new(),
                    n => format!(", {n} not drawn"),
                }
            );
        }
    }
    Ok(exit_code)
}

/// Hands the exporter a fresh snapshot of the same aggregates the report is written from.
fn publish(
    exporter: &Exporter,
    tracer: &Tracer,
    opts: &Options,
    aggregates: (&mut Ledger, Option<&Stacks>),
    started: Instant,
    stats: &mut TracerStats,
) {
    let counters = tracer.counters().unwrap_or_else(|_| {
        stats.counter_errors += 1;
        Counters::default()
    });
    // The same aggregates the report is written from: the ledger's, or the kernel's summary.
    match snapshot(tracer, opts, aggregates, started, counters) {
        Ok(report) => exporter.publish(report, *stats),
        Err(_) => stats.snapshot_errors += 1,
    }
}

/// The line that says tracing has begun (tools wait for it), with the hooks used and why preferred
/// ones were not.
fn banner(tracer: &Tracer, command: &[String]) -> String {
    let skipped = if tracer.skipped.is_empty() {
        String::new()
    } else {
        let why: Vec<String> = tracer.skipped.iter().map(ToString::to_string).collect();
        format!(" ({})", why.join("; "))
    };
    let following = match command {
        [] => String::new(),
        cmd => format!(", following `{}`", cmd.join(" ")),
    };
    format!(
        "locktrace: tracing with {} hooks{skipped}{following}; Ctrl-C to stop",
        tracer.mode
    )
}

/// The command shares our process group, so Ctrl-C already reached it: forwarding it again would
/// look like a second, forcing Ctrl-C to tools like podman. A SIGTERM sent to locktrace alone is
/// passed on; a second signal of any kind stops the command. `forwarded` counts signals handled.
fn forward_signals(child: &mut HeldChild, forwarded: &mut usize) {
    let signals = SIGNALS.load(Ordering::SeqCst);
    if signals > *forwarded {
        if signals >= 2 {
            child.kill(libc::SIGKILL);
        } else if TERMS.load(Ordering::SeqCst) > 0 {
            child.kill(libc::SIGTERM);
        }
        *forwarded = signals;
    }
}

/// The report as it stands: from the ledger's pairing of events, or in summary mode from the
/// kernel's aggregates (the ledger naming their files).
fn snapshot(
    tracer: &Tracer,
    opts: &Options,
    (ledger, stacks): (&mut Ledger, Option<&Stacks>),
    started: Instant,
    k: Counters,
) -> Result<Report, SessionError> {
    let mut own = ledger.drops();
    let summarized;
    let recorder = if opts.summary {
        let kernel = tracer.summary()?;
        own.still_held_at_end = kernel.held;
        summarized = summary::recorder(&kernel, ledger)?;
        &summarized
    } else {
        ledger.recorder()
    };
    let meta = meta(tracer, opts, own, stacks, started, k);
    Ok(Recorder::snapshot(recorder, meta))
}

fn meta(
    tracer: &Tracer,
    opts: &Options,
    own: Drops,
    stacks: Option<&Stacks>,
    started: Instant,
    k: Counters,
) -> ReportMeta {
    let unreadable = stacks.map_or(0, |s| s.unreadable);
    ReportMeta {
        tool: format!("locktrace {}", env!("CARGO_PKG_VERSION")),
        source: Source::Kernel,
        attach: Some(tracer.mode.to_string()),
        kernel: Some(kernel::release()),
        collection: Some(if opts.summary {
            Collection::Summary
        } else {
            Collection::Events
        }),
        command: opts.command.clone(),
        duration_ns: started.elapsed().as_nanos() as u64,
        drops: Drops {
            ringbuf_lost: k.ringbuf_full,
            map_full: k.map_full,
            unresolved_names: own.unresolved_names + k.read_failed,
            stacks_lost: k.stack_lost + unreadable,
            ..own
        },
        labels: Default::default(),
    }
}

/// A report on stdout in the live format, so a json or ndjson stream stays parseable to its end.
fn print_report(report: &Report, format: LiveFormat) {
    match format {
        LiveFormat::Text => println!("{}", render_text(report)),
        LiveFormat::Json => println!("{}", serde_json::to_string(report).unwrap_or_default()),
        LiveFormat::Ndjson => println!(
            "{}",
            serde_json::json!({ "event": "report", "report": report })
        ),
    }
}

/// One event as an ndjson line; a blocking lock call also carries the pids it was blocked by, and
/// a lock call its named user stack (leaf first) when stacks are recorded.
fn event_json(
    ev: &tracer_common::Event,
    blocked: Option<&Blocked>,
    stack: Option<&[String]>,
) -> serde_json::Value {
    use tracer_common::kind;
    let what = match ev.kind {
        kind::LOCK => "lock",
        kind::RELEASE_UNLOCK => "release_unlock",
        kind::RELEASE_CLOSE => "release_close",
        kind::RELEASE_EXIT => "release_exit",
        _ => "unknown",
    };
    let mut line = serde_json::json!({
        "event": what,
        "start_ns": ev.start_ns,
        "end_ns": ev.end_ns,
        "pid": ev.pid,
        "tid": ev.tid,
        "comm": cstr(&ev.comm),
        "fd": ev.fd,
        "cmd": ev.cmd,
        "lock_type": ev.lock_type,
        "ret": ev.ret,
        "dev": kernel::user_dev(ev.dev),
        "ino": ev.ino,
        "name": cstr(&ev.name),
        "owner": ev.owner,
    });
    if let Some(blocked) = blocked {
        let pids: Vec<u32> = match blocked {
            Blocked::By(holders) => holders.iter().map(|h| h.pid).collect(),
            Blocked::NotTraced | Blocked::Uncontended => Vec::new(),
        };
        line["blocked_by"] = pids.into();
        line["holder_not_traced"] = (*blocked == Blocked::NotTraced).into();
    }
    if let Some(frames) = stack {
        line["stack"] = frames.into();
    }
    line
}
