//! `locktrace`: per-lock-file wait and hold times with percentiles, traced with eBPF. Argument
//! parsing only: recording is [`locktrace::session`], the saved-report commands are in `offline`.

mod offline;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use locktrace::{
    attach::AttachRequest,
    doctor, exporter, filter,
    session::{self, LiveFormat},
};

#[derive(Parser)]
#[command(name = "locktrace", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace fcntl lock waits and holds system-wide, or of COMMAND's process tree until it exits.
    Record(RecordArgs),
    /// Show what this kernel allows and which attach mode `record` would use.
    Doctor,
    #[command(flatten)]
    Offline(offline::OfflineCommand),
}

#[derive(Args)]
struct RecordArgs {
    #[arg(long = "lock", value_name = "NAME", help = lock_help())]
    locks: Vec<String>,
    /// Trace exactly this file (repeatable); equally named files elsewhere stay out.
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Trace exactly this DEV:INO (as `stat -c %d:%i` prints; repeatable).
    #[arg(long = "inode", value_name = "DEV:INO", value_parser = parse_inode)]
    inodes: Vec<(u64, u64)>,
    /// Trace every fcntl-locked file.
    #[arg(long, conflicts_with_all = ["locks", "paths", "inodes"])]
    all_locks: bool,
    /// Only this process and the children it starts from now on (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Only tasks in this cgroup v2 directory.
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,
    /// Lock-call hooks of event mode; auto tries fentry, then tracepoints (--summary hooks the
    /// kernel's lock code instead).
    #[arg(long, value_enum, default_value_t = AttachRequest::Auto)]
    attach: AttachRequest,
    /// Stop after this long (e.g. 10s, 2m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print live figures this often (e.g. 1s).
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// Write the JSON report here.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Format of the live output.
    #[arg(long, value_enum, default_value_t = LiveFormat::Text)]
    format: LiveFormat,
    /// No live output and no summary (the report file is still written).
    #[arg(short, long)]
    quiet: bool,
    /// Capture the user stack of every lock call and report the top code paths by wait and hold
    /// (ELF/DWARF symbols, Go's pclntab for stripped Go binaries).
    #[arg(long)]
    stacks: bool,
    /// Aggregate waits and holds in the kernel (log-linear histograms, percentiles within 1.6 %;
    /// counts, totals and maxima exact): the cheapest mode, without blockers, lock order, stacks
    /// or the ndjson event stream.
    #[arg(long)]
    summary: bool,
    /// Also write every wait and hold as a Perfetto trace here (open it in
    /// https://ui.perfetto.dev): a track per lock file and per process, flows from holder to
    /// waiter.
    #[arg(long, value_name = "FILE.pftrace")]
    timeline: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics while recording.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// With --listen: drop a lock's series after this long without a new sample.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10m", requires = "listen")]
    expire: Duration,
    /// With --listen: export at most N lock series (lock × mode); more are counted as overflow.
    #[arg(long, value_name = "N", default_value_t = exporter::DEFAULT_MAX_SERIES, requires = "listen")]
    max_series: usize,
    /// Command to run and trace (with its children); its exit code becomes locktrace's.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The default lock names come from the one list the filter uses.
fn lock_help() -> String {
    format!(
        "Lock file basename to trace (repeatable). Default: {}",
        filter::DEFAULT_LOCKS.join(", ")
    )
}

fn parse_inode(s: &str) -> Result<(u64, u64), String> {
    filter::parse_inode(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match try_main(Cli::parse()) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("locktrace: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn try_main(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Record(a) => Ok(session::run(session::Options {
            filter: filter::Filter {
                all_locks: a.all_locks,
                names: a.locks,
                paths: a.paths,
                inodes: a.inodes,
                pids: a.pids,
                cgroup: a.cgroup,
            },
            attach: a.attach,
            duration: a.duration,
            interval: a.interval,
            output: a.output,
            format: a.format,
            quiet: a.quiet,
            stacks: a.stacks,
            summary: a.summary,
            timeline: a.timeline,
            command: a.command,
            listen: a.listen,
            expire: a.expire,
            max_series: a.max_series,
        })?),
        Command::Offline(c) => c.run(),
        Command::Doctor => {
            let diagnosis = doctor::diagnose();
            print!("{diagnosis}");
            Ok(diagnosis.exit_code())
        }
    }
}
