//! The processes of `lockbench overhead`: one `lockload cycles` loop, untraced or under a tracer
//! that is attached before the loop starts and stopped after it ends, and how many lock calls the
//! tracer says it saw (the proof that it traced the loop at all).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use locktrace_report::{Mode, Report};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::process;
use crate::text::log_tail;
use crate::tools;

/// The loop's lock file: the name contrib/lockstats traces by default.
pub const LOCK_FILE: &str = "layers.lock";

/// How long a tracer gets to compile and attach its programs (bpftrace compiles with LLVM, which
/// takes seconds on a busy 2-core machine).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a tracer gets to print or write its figures after SIGINT. Generous: bpftrace detaches
/// its probes before printing, and on a loaded machine one such stop took over 30 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// The minimal bpftrace script, for the cost of the cheapest wait and hold histograms one can write:
/// three probes on the loop's path (fcntl entry and exit, close), one map update each, two log2
/// histograms, no file filter (every F_SETLKW on the machine, keyed by thread). BEGIN runs once,
/// after bpftrace attached the others: its line is the attach signal.
pub const BPFTRACE_MIN: &str = r#"BEGIN { printf("Tracing F_SETLKW waits and holds\n"); }
tracepoint:syscalls:sys_enter_fcntl /args->cmd == 7/ { @start[tid] = nsecs; }
tracepoint:syscalls:sys_exit_fcntl /@start[tid]/ {
	@wait_ns = hist(nsecs - @start[tid]);
	delete(@start[tid]);
	if (args->ret == 0) { @held[tid] = nsecs; }
}
tracepoint:syscalls:sys_enter_close /@held[tid]/ {
	@hold_ns = hist(nsecs - @held[tid]);
	delete(@held[tid]);
}
END { clear(@start); clear(@held); }
"#;

/// What the loop runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// No tracer.
    Untraced,
    /// [`BPFTRACE_MIN`].
    BpftraceMin,
    /// contrib/lockstats' tracepoint script (`lockstats -t`).
    Lockstats,
    /// `locktrace record --path FILE -- lockload …`.
    Locktrace,
    /// `locktrace record --all-locks -- lockload …`.
    LocktraceAllLocks,
    /// `locktrace record --stacks --path FILE -- lockload …`: the added cost of user stacks.
    LocktraceStacks,
    /// `locktrace record --summary --path FILE -- lockload …`: aggregated in the kernel.
    LocktraceSummary,
}

impl Variant {
    pub const ALL: [Variant; 7] = [
        Variant::Untraced,
        Variant::BpftraceMin,
        Variant::Lockstats,
        Variant::Locktrace,
        Variant::LocktraceSummary,
        Variant::LocktraceAllLocks,
        Variant::LocktraceStacks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Untraced => "untraced",
            Variant::BpftraceMin => "bpftrace-min",
            Variant::Lockstats => "lockstats",
            Variant::Locktrace => "locktrace",
            Variant::LocktraceAllLocks => "locktrace-all-locks",
            Variant::LocktraceStacks => "locktrace-stacks",
            Variant::LocktraceSummary => "locktrace-summary",
        }
    }

    /// Whether the tracer sees only the loop, so its count must equal the loop's lock calls; the
    /// system-wide ones may also count other processes' locks, so theirs must be at least that.
    pub fn counts_only_the_loop(self) -> bool {
        matches!(
            self,
            Variant::Locktrace
                | Variant::LocktraceAllLocks
                | Variant::LocktraceStacks
                | Variant::LocktraceSummary
        )
    }
}

/// The programs the variants need, or why each one is not there.
pub struct Tools {
    lockload: PathBuf,
    locktrace: std::result::Result<PathBuf, String>,
    bpftrace: std::result::Result<PathBuf, String>,
    lockstats: std::result::Result<PathBuf, String>,
    root: bool,
}

impl Tools {
    /// Finds `lockload` and `locktrace` next to this binary or on PATH, bpftrace on PATH and
    /// contrib/lockstats in `contrib` or above this binary (a workspace's target/*/ directory) or the
    /// current directory. Only `lockload`, which every variant runs, is required.
    pub fn detect(contrib: Option<&Path>) -> Result<Tools> {
        let lockload = tools::find("lockload").ok_or_else(|| {
            Error::Invalid(
                "the lockload binary is neither next to lockbench nor on PATH \
                 (build it with `cargo build -p locktrace`)"
                    .into(),
            )
        })?;
        let locktrace = tools::find("locktrace").ok_or_else(|| {
            "the locktrace binary is neither next to lockbench nor on PATH \
             (build it with `cargo build -p locktrace`)"
                .to_string()
        });
        let bpftrace = which::which("bpftrace")
            .map_err(|_| "bpftrace is not on PATH (`cargo xtask setup` installs it)".to_string());
        let lockstats = lockstats_script(contrib);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Ok(Tools {
            lockload,
            locktrace,
            bpftrace,
            lockstats,
            root,
        })
    }

    /// Why `variant` cannot run here, if it cannot.
    pub fn unavailable(&self, variant: Variant) -> Option<String> {
        let needs = |tool: &std::result::Result<PathBuf, String>| tool.as_ref().err().cloned();
        let missing = match variant {
            Variant::Untraced => None,
            Variant::BpftraceMin => needs(&self.bpftrace),
            Variant::Lockstats => needs(&self.lockstats).or_else(|| needs(&self.bpftrace)),
            Variant::Locktrace
            | Variant::LocktraceAllLocks
            | Variant::LocktraceStacks
            | Variant::LocktraceSummary => needs(&self.locktrace),
        };
        missing.or_else(|| {
            (variant != Variant::Untraced && !self.root)
                .then(|| "tracing needs root (eBPF)".to_string())
        })
    }
}

/// contrib/lockstats' wrapper (`lockstats`), which runs `lockstats-tp.bt` with `-t`, with the
/// tracepoint fields renamed on kernels before 6.9.
fn lockstats_script(contrib: Option<&Path>) -> std::result::Result<PathBuf, String> {
    let wrapper = |dir: &Path| dir.join("lockstats/lockstats");
    if let Some(dir) = contrib {
        let script = wrapper(dir);
        return match script.is_file() && dir.join("lockstats/lockstats-tp.bt").is_file() {
            true => Ok(script),
            false => Err(format!(
                "--contrib {}: no lockstats/lockstats and lockstats/lockstats-tp.bt in it",
                dir.display()
            )),
        };
    }
    let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
    starts
        .iter()
        .flatten()
        .flat_map(|start| start.ancestors())
        .map(|dir| wrapper(&dir.join("contrib")))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "contrib/lockstats not found above lockbench or the current directory \
             (give --contrib DIR)"
                .to_string()
        })
}

/// What one loop measured, and what its tracer counted.
#[derive(Debug, Clone, Deserialize)]
pub struct LoopRun {
    pub cycles: u64,
    pub warmup: u64,
    pub ns_per_cycle: f64,
    /// Blocking lock calls the tracer saw (None untraced).
    #[serde(skip)]
    pub events: Option<u64>,
    /// How locktrace attached (`fentry`, `tracepoint`), from its report.
    #[serde(skip)]
    pub attach: Option<String>,
}

impl LoopRun {
    /// The loop's lock calls, warm-up included: what a tracer that traced it must have seen.
    pub fn lock_calls(&self) -> u64 {
        self.cycles + self.warmup
    }
}

/// Runs `cycles` cycles on `work/layers.lock` under `variant`; tracer scripts, logs and reports go
/// into `work`, named after the variant. A tracer that fails, or that did not count the loop's lock
/// calls, is an error.
pub fn run(variant: Variant, tools: &Tools, work: &Path, cycles: u64) -> Result<LoopRun> {
    let lock = work.join(LOCK_FILE);
    let lockload = || {
        let mut cmd = Command::new(&tools.lockload);
        cmd.arg("cycles")
            .arg("--path")
            .arg(&lock)
            .arg("--cycles")
            .arg(cycles.to_string());
        cmd
    };
    let log = work.join(format!("{}.log", variant.name()));
    let run = match variant {
        Variant::Untraced => run_loop(lockload(), &log)?,
        Variant::BpftraceMin => {
            let script = work.join("bpftrace-min.bt");
            fs::write(&script, BPFTRACE_MIN)
                .with_context(|| format!("writing {}", script.display()))?;
            let mut cmd = Command::new(found(&tools.bpftrace)?);
            cmd.arg(&script);
            under_bpftrace(cmd, lockload(), &log, "bpftrace", bpftrace_min_count)?
        }
        Variant::Lockstats => {
            let mut cmd = Command::new("sh");
            cmd.arg(found(&tools.lockstats)?).arg("-t");
            under_bpftrace(cmd, lockload(), &log, "lockstats", lockstats_count)?
        }
        Variant::Locktrace
        | Variant::LocktraceAllLocks
        | Variant::LocktraceStacks
        | Variant::LocktraceSummary => {
            let report = work.join(format!("{}.json", variant.name()));
            // An earlier round's report must not stand in for a missing one.
            let _ = fs::remove_file(&report);
            let mut cmd = Command::new(found(&tools.locktrace)?);
            cmd.args(["record", "-q", "-o"]).arg(&report);
            match variant {
                Variant::Locktrace => cmd.arg("--path").arg(&lock),
                Variant::LocktraceStacks => cmd.arg("--stacks").arg("--path").arg(&lock),
                Variant::LocktraceSummary => cmd.arg("--summary").arg("--path").arg(&lock),
                _ => cmd.arg("--all-locks"),
            };
            let lockload = lockload();
            cmd.arg("--")
                .arg(lockload.get_program())
                .args(lockload.get_args());
            let mut run =
                run_loop(cmd, &log).map_err(|e| Error::Tracer(format!("locktrace record: {e}")))?;
            let report = Report::read(&report)
                .with_context(|| format!("reading locktrace's report {}", report.display()))?;
            run.events = Some(write_waits(&report));
            run.attach = report.meta.attach;
            run
        }
    };
    check_count(variant, &run)?;
    Ok(run)
}

/// The tool's path, or why it is missing (`unavailable` says so before anything runs).
fn found(tool: &std::result::Result<PathBuf, String>) -> Result<&Path> {
    tool.as_deref().map_err(|why| Error::Invalid(why.clone()))
}

/// A traced loop must have been seen: all of its lock calls (a tracer that only sees the loop),
/// or at least those (a system-wide one).
fn check_count(variant: Variant, run: &LoopRun) -> Result<()> {
    let Some(seen) = run.events else {
        return Ok(());
    };
    let want = run.lock_calls();
    let ok = match variant.counts_only_the_loop() {
        true => seen == want,
        false => seen >= want,
    };
    if ok {
        return Ok(());
    }
    Err(Error::Tracer(format!(
        "{} counted {seen} lock calls, the loop made {want} ({} warm-up + {}): it did not trace the loop",
        variant.name(),
        run.warmup,
        run.cycles
    )))
}

/// Runs `lockload cycles` to its end and reads its result line; stderr goes to `log`.
fn run_loop(mut cmd: Command, log: &Path) -> Result<LoopRun> {
    let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let out = cmd
        .stdin(Stdio::null())
        .stderr(log_file)
        .output()
        .with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))?;
    if !out.status.success() {
        return Err(Error::Worker(format!(
            "lockload cycles failed ({}){}",
            out.status,
            log_tail(log)
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("reading lockload's result {line:?}"))
}

/// Starts a bpftrace script (`tracer`), waits for its BEGIN line (printed once every probe is
/// attached), runs the loop, stops the script with SIGINT and counts the lock calls in the maps it
/// prints. The script's output goes to `log`.
fn under_bpftrace(
    tracer: Command,
    lockload: Command,
    log: &Path,
    name: &str,
    count: fn(&str) -> Option<u64>,
) -> Result<LoopRun> {
    let mut session = Script::start(tracer, log, name)?;
    let loop_log = log.with_extension("lockload.log");
    let mut run = run_loop(lockload, &loop_log)?;
    let output = session.stop()?;
    run.events = Some(count(&output).ok_or_else(|| {
        Error::Tracer(format!(
            "{name} printed no F_SETLKW count for {LOCK_FILE} (see {})",
            log.display()
        ))
    })?);
    Ok(run)
}

/// A running bpftrace script.
struct Script {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Script {
    fn start(mut cmd: Command, log: &Path, name: &str) -> Result<Script> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut script = Script {
            child,
            log: log.to_path_buf(),
            name: name.to_string(),
        };
        let started = Instant::now();
        while started.elapsed() < ATTACH_TIMEOUT {
            if let Some(status) = script.try_wait()? {
                return Err(script.failed(&format!("exited before attaching ({status})")));
            }
            let text = fs::read_to_string(log).unwrap_or_default();
            // "Attaching N probes..." comes before the attach; the BEGIN line after it.
            let attached = text
                .split_once("Attaching ")
                .is_some_and(|(_, after)| after.contains("\nTracing"));
            if attached {
                return Ok(script);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(script.failed(&format!(
            "did not attach within {}s",
            ATTACH_TIMEOUT.as_secs()
        )))
    }

    /// SIGINT: bpftrace prints its maps and exits. Returns everything the script printed.
    fn stop(&mut self) -> Result<String> {
        process::interrupt(&self.child);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let waited = process::wait_until(&mut self.child, deadline, Duration::from_millis(20))
            .with_context(|| format!("waiting for {}", self.name))?;
        let Some(status) = waited else {
            return Err(self.failed(&format!("did not stop within {}s", STOP_TIMEOUT.as_secs())));
        };
        if !status.success() {
            return Err(self.failed(&format!("failed ({status})")));
        }
        fs::read_to_string(&self.log).with_context(|| format!("reading {}", self.log.display()))
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("waiting for {}", self.name))
    }

    fn failed(&self, what: &str) -> Error {
        Error::Tracer(format!("{} {what}{}", self.name, log_tail(&self.log)))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        // Never leave a system-wide tracer behind when a run aborts.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The samples in [`BPFTRACE_MIN`]'s `@wait_ns` histogram: its F_SETLKW calls.
fn bpftrace_min_count(output: &str) -> Option<u64> {
    let (_, hist) = output.split_once("@wait_ns:")?;
    let counts = hist
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('['))
        // `[256, 512)   100 |@@@@|`, or `[0]   1 |@|` for the first buckets.
        .map(|l| {
            let (_, rest) = l.split_once([')', ']'])?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        });
    counts.sum()
}

/// lockstats' `@wait_count[layers.lock, write]`: the blocking write-lock calls on files of that name.
fn lockstats_count(output: &str) -> Option<u64> {
    let key = format!("@wait_count[{LOCK_FILE}, write]:");
    output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|n| n.trim().parse().ok())
}

/// locktrace's blocking write-lock calls (waits), over all the locks in its report.
fn write_waits(report: &Report) -> u64 {
    report
        .locks
        .iter()
        .filter_map(|l| l.modes.get(&Mode::Write))
        .map(|m| m.wait.summary.count)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftrace_min_count_adds_up_the_wait_histogram_only() {
        let output = "Attaching 5 probes...\nTracing F_SETLKW waits and holds\n\n\n\
            @hold_ns: \n[512, 1K)              7 |@@@@|\n\n\
            @wait_ns: \n[1]                    2 |@|\n\
            [256, 512)           100 |@@@@@@|\n[512, 1K)             20 |@|\n\
            [1K, 2K)               0 |     |\n[8K, 16K)              3 |@|\n\n";
        assert_eq!(bpftrace_min_count(output), Some(125));
        assert_eq!(bpftrace_min_count("Attaching 5 probes...\n"), None);
    }

    #[test]
    fn lockstats_count_reads_the_layers_lock_write_waits() {
        let output = "@wait_count[images.lock, write]: 4\n@wait_count[layers.lock, read]: 9\n\
            @wait_count[layers.lock, write]: 201000\n@wait_max_ns[layers.lock, write]: 5\n";
        assert_eq!(lockstats_count(output), Some(201_000));
        assert_eq!(
            lockstats_count("@wait_count[images.lock, write]: 4\n"),
            None
        );
    }

    #[test]
    fn a_tracer_that_missed_lock_calls_is_an_error() {
        let run = |events| LoopRun {
            cycles: 100,
            warmup: 10,
            ns_per_cycle: 10.0,
            events,
            attach: None,
        };
        assert!(check_count(Variant::Untraced, &run(None)).is_ok());
        assert!(check_count(Variant::Locktrace, &run(Some(110))).is_ok());
        // The loop's own tracer must see exactly its calls; a system-wide one at least those.
        assert!(check_count(Variant::Locktrace, &run(Some(111))).is_err());
        assert!(check_count(Variant::Lockstats, &run(Some(111))).is_ok());
        for variant in [Variant::BpftraceMin, Variant::Lockstats, Variant::Locktrace] {
            let err = check_count(variant, &run(Some(0))).unwrap_err().to_string();
            assert!(err.contains("counted 0 lock calls"), "{err}");
            assert!(check_count(variant, &run(Some(109))).is_err());
        }
    }
}
