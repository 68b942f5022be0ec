//! `locktrace record`: trace the system, or a command's process tree, until it ends.

use std::{
    ffi::CString,
    io::Write,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use locktrace_report::{Drops, Report, ReportMeta, Source, render_text};

use locktrace::{
    attach::AttachRequest,
    filter::Filter,
    kernel,
    ledger::{Ledger, cstr},
    tracer::{Counters, Record, Tracer},
};

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
    pub command: Vec<String>,
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
pub fn run(mut opts: Options) -> Result<i32> {
    let mut child = match opts.command.split_first() {
        Some((program, args)) => {
            let child = spawn_held(program, args)?;
            opts.filter.pids.push(child.id());
            Some(child)
        }
        None => None,
    };
    let mut tracer = match Tracer::start(&opts.filter, opts.attach) {
        Ok(t) => t,
        Err(e) => {
            if let Some(c) = &mut child {
                c.kill(libc::SIGKILL);
                let _ = c.try_wait(true);
            }
            return Err(e.into());
        }
    };
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    if !opts.quiet {
        eprintln!(
            "locktrace: tracing with {} hooks{}{}; Ctrl-C to stop",
            tracer.mode,
            if tracer.skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", tracer.skipped.join("; "))
            },
            match &opts.command[..] {
                [] => String::new(),
                cmd => format!(", following `{}`", cmd.join(" ")),
            }
        );
    }
    let started = Instant::now();
    if let Some(c) = &mut child {
        c.release()?;
    }
    let mut ledger = Ledger::with_paths(&opts.filter.paths);
    let mut next_tick = opts.interval.map(|i| started + i);
    let mut exit_code = 0;
    let mut forwarded = 0;
    let stdout = std::io::stdout();
    let ndjson = opts.format == LiveFormat::Ndjson && !opts.quiet;
    let handle = |ledger: &mut Ledger, rec: Record| {
        if let (Record::Lock(ev), true) = (&rec, ndjson) {
            let _ = writeln!(stdout.lock(), "{}", event_json(ev));
        }
        ledger.handle(&rec);
    };
    loop {
        tracer.poll(POLL, |rec| handle(&mut ledger, rec));
        if let (Some(tick), Some(interval)) = (next_tick, opts.interval)
            && Instant::now() >= tick
        {
            if !opts.quiet && opts.format != LiveFormat::Ndjson {
                let counters = tracer.counters().unwrap_or_default();
                let snap = ledger
                    .recorder()
                    .snapshot(meta(&tracer, &opts, &ledger, started, counters));
                print_report(&snap, opts.format);
            }
            next_tick = Some(tick + interval);
        }
        if let Some(c) = &mut child {
            if let Some(code) = c.try_wait(false)? {
                exit_code = code;
                break;
            }
            // The command shares our process group, so Ctrl-C already reached it: forwarding it
            // again would look like a second, forcing Ctrl-C to tools like podman. A SIGTERM sent
            // to locktrace alone is passed on; a second signal of any kind stops the command.
            let signals = SIGNALS.load(Ordering::SeqCst);
            if signals > forwarded {
                if signals >= 2 {
                    c.kill(libc::SIGKILL);
                } else if TERMS.load(Ordering::SeqCst) > 0 {
                    c.kill(libc::SIGTERM);
                }
                forwarded = signals;
            }
        } else if SIGNALS.load(Ordering::SeqCst) > 0 {
            break;
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
    }
    // Events already in the ring buffer belong to this run.
    tracer.poll(Duration::ZERO, |rec| handle(&mut ledger, rec));
    // A failed counter read must not cost the recording; say so instead.
    let counters = tracer.counters().unwrap_or_else(|e| {
        eprintln!("locktrace: warning: kernel drop counters unavailable: {e}");
        Counters::default()
    });
    let report = ledger
        .recorder()
        .snapshot(meta(&tracer, &opts, &ledger, started, counters));
    if let Some(path) = &opts.output {
        report
            .write(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !opts.quiet {
        print_report(&report, opts.format);
        if let Some(path) = &opts.output {
            eprintln!("locktrace: report written to {}", path.display());
        }
    }
    Ok(exit_code)
}

fn meta(
    tracer: &Tracer,
    opts: &Options,
    ledger: &Ledger,
    started: Instant,
    k: Counters,
) -> ReportMeta {
    let own = ledger.drops();
    ReportMeta {
        tool: format!("locktrace {}", env!("CARGO_PKG_VERSION")),
        source: Source::Kernel,
        attach: Some(tracer.mode.to_string()),
        kernel: Some(kernel::release()),
        command: opts.command.clone(),
        duration_ns: started.elapsed().as_nanos() as u64,
        drops: Drops {
            ringbuf_lost: k.ringbuf_full,
            map_full: k.map_full,
            unresolved_names: own.unresolved_names + k.read_failed,
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

fn event_json(ev: &tracer_common::Event) -> serde_json::Value {
    use tracer_common::kind;
    let what = match ev.kind {
        kind::LOCK => "lock",
        kind::RELEASE_UNLOCK => "release_unlock",
        kind::RELEASE_CLOSE => "release_close",
        kind::RELEASE_EXIT => "release_exit",
        _ => "unknown",
    };
    serde_json::json!({
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
    })
}

/// A command forked but held before `exec` until the tracer is attached, so its first lock is seen.
/// (`std::process::Command` cannot do this: `spawn` itself waits for the `exec`.)
struct HeldChild {
    pid: libc::pid_t,
    gate: Option<std::fs::File>,
}

impl HeldChild {
    fn id(&self) -> u32 {
        self.pid as u32
    }

    fn release(&mut self) -> Result<()> {
        if let Some(mut gate) = self.gate.take() {
            gate.write_all(b"go").context("starting the command")?;
        }
        Ok(())
    }

    fn kill(&mut self, signal: libc::c_int) {
        unsafe { libc::kill(self.pid, signal) };
    }

    /// The exit code (128 + signal for a killed command) once it has exited.
    fn try_wait(&mut self, block: bool) -> Result<Option<i32>> {
        let mut status = 0;
        let flags = if block { 0 } else { libc::WNOHANG };
        let rc = unsafe { libc::waitpid(self.pid, &mut status, flags) };
        if rc < 0 {
            bail!(
                "waiting for the command: {}",
                std::io::Error::last_os_error()
            );
        }
        if rc == 0 {
            return Ok(None);
        }
        Ok(Some(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }))
    }
}

/// Whether `program` names an executable, directly or through PATH (checked before forking, so a
/// typo is one clear error instead of a traced failure).
fn runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| executable(&dir.join(program)))
    })
}

fn spawn_held(program: &str, args: &[String]) -> Result<HeldChild> {
    if !runnable(program) {
        bail!("cannot run {program}: no such executable");
    }
    let argv: Vec<CString> = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| CString::new(a).with_context(|| format!("argument {a:?} contains a NUL byte")))
        .collect::<Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("creating a pipe: {}", std::io::Error::last_os_error());
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    // SAFETY: the child only calls async-signal-safe functions (close, read, execvp, write, _exit)
    // on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe {
            libc::close(write_end);
            let mut buf = [0u8; 2];
            // Blocks until the tracer is attached (or the parent died: EOF, run anyway).
            libc::read(read_end, buf.as_mut_ptr().cast(), buf.len());
            libc::execvp(argv_ptrs[0], argv_ptrs.as_ptr());
            let msg = b"locktrace: cannot run the command\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }
    unsafe { libc::close(read_end) };
    let gate = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(write_end) };
    Ok(HeldChild {
        pid,
        gate: Some(gate),
    })
}
