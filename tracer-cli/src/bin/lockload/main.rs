//! lockload: a lock workload with its own clock, the ground truth the tracer is checked against.
//!
//! `lockload hold` takes one fcntl lock, holds it for a set time, releases it one of the four ways the
//! kernel knows, and prints what it measured itself as one JSON line. `lockload scenario` runs a fixed
//! contention pattern of such processes and writes every process's figures to a truth file.
//! `lockload blockers` is one known holder that makes read-lock `hold` processes wait behind it.
//! `lockload nest` takes --first, then --second while holding it (a lock order); `lockload deadlock`
//! gets a request refused with EDEADLK, and `hold --give-up-after` a wait cut short by a signal.
//! `lockload cycles` is the uncontended open + lock + close loop `lockbench overhead` times.
//!
//!     lockload hold --path /tmp/x.lock --hold 20ms
//!     sudo locktrace record --path /tmp/x.lock -- lockload scenario --path /tmp/x.lock --truth t.json

mod workload;

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::{Parser, Subcommand};

use workload::{
    HoldArgs, blockers, deadlock, exit_hold, hold, lock_cycles, lock_loop, nest, scenario,
    thread_exec,
};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Take one lock, hold it, release it, print own timings.
    Hold(HoldArgs),
    /// Run `hold --release exit` as a child and bound the release by the moment the child is reaped.
    ExitHold {
        #[arg(long)]
        path: PathBuf,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30ms")]
        hold: Duration,
    },
    /// Lock and unlock an uncontended file in a tight loop; print the cost per pair (tracer overhead).
    Loop {
        #[arg(long)]
        path: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
    },
    /// N times: open --path, take a write lock on the whole file (F_SETLKW), close it; after
    /// WARMUP_CYCLES untimed ones. Prints its own elapsed time for the N as one JSON line (the
    /// loop `lockbench overhead` runs untraced and under each tracer).
    Cycles {
        #[arg(long)]
        path: PathBuf,
        #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
        cycles: u64,
    },
    /// Take a write lock on --first, then one on --second while still holding the first, then
    /// release both (second, then first). Prints this process's pid as one JSON line.
    Nest {
        #[arg(long)]
        first: PathBuf,
        #[arg(long)]
        second: PathBuf,
    },
    /// Make the kernel refuse a lock with EDEADLK: write-lock --first, let a child take --second and
    /// wait for --first, then ask for --second. Prints this process's pid as one JSON line.
    Deadlock {
        #[arg(long)]
        first: PathBuf,
        #[arg(long)]
        second: PathBuf,
    },
    /// Exec COMMAND from a second thread after writing that thread's ID to --tid-file: the kernel
    /// hands the thread the process's PID and frees the ID it had (what a Go program like podman
    /// can do).
    ThreadExec {
        #[arg(long)]
        tid_file: PathBuf,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Run a contention scenario of `hold` processes and write their timings to --truth.
    Scenario {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        truth: PathBuf,
        /// Hold durations of the contended rounds.
        #[arg(long, value_delimiter = ',', default_value = "1ms,20ms,200ms", value_parser = humantime::parse_duration)]
        holds: Vec<Duration>,
    },
    /// Be the one holder: for each hold duration take a write lock, start --waiters read-lock
    /// `hold` processes, wait until every one is blocked on the lock, hold for the duration and
    /// unlock. Writes this process's pid and the waiters' own figures to --truth.
    Blockers {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        truth: PathBuf,
        #[arg(long, default_value_t = 3)]
        waiters: usize,
        #[arg(long, value_delimiter = ',', default_value = "20ms,100ms", value_parser = humantime::parse_duration)]
        holds: Vec<Duration>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Hold(a) => hold(&a),
        Cmd::Scenario { path, truth, holds } => scenario(&path, &truth, &holds),
        Cmd::Blockers {
            path,
            truth,
            waiters,
            holds,
        } => blockers(&path, &truth, waiters, &holds),
        Cmd::ExitHold { path, hold } => exit_hold(&path, hold),
        Cmd::Loop { path, count } => lock_loop(&path, count),
        Cmd::Cycles { path, cycles } => lock_cycles(&path, cycles),
        Cmd::ThreadExec { tid_file, command } => thread_exec(tid_file, &command),
        Cmd::Nest { first, second } => nest(&first, &second),
        Cmd::Deadlock { first, second } => deadlock(&first, &second),
    }
}
