//! locktrace: per-lock-file wait and hold times, traced with eBPF.
//!
//! The binary is a thin shell over this library: [`session::run`] records, with
//! [`tracer::Tracer`] loading and attaching the embedded eBPF object and [`ledger::Ledger`] pairing
//! its events into waits and holds for a [`locktrace_report::Recorder`].
//!
//! Modules depend downward only: `kernel` (what the running kernel offers) ← `filter`, `attach` ←
//! `tracer` ← `ledger`, `doctor` ← `summary` (summary mode's aggregates as a report), `timeline`
//! (a ledger's intervals as a Perfetto trace), `exporter` (Prometheus `/metrics` from the session's
//! report snapshots) ← `session`; `holders` (who held a file when) and `process` (holders' command
//! lines and containers) under `ledger`; `child` (the held command) and `reports` (saved reports,
//! for the commands that need no tracing) stand alone; `symbolize` (names for user stack
//! addresses: ELF/DWARF, Go's pclntab) ← `stacks` (the stack map read and named) ← `session`.

pub mod attach;
pub mod child;
pub mod doctor;
pub mod exporter;
pub mod filter;
pub mod holders;
pub mod kernel;
pub mod ledger;
pub mod process;
pub mod reports;
pub mod session;
pub mod stacks;
pub mod summary;
pub mod symbolize;
pub mod timeline;
pub mod tracer;

/// Errors of the tracing library; each renders as one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tracing needs root or CAP_BPF+CAP_PERFMON (try: sudo locktrace ...)")]
    Privileges,
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error(transparent)]
    Load(#[from] tracer::LoadError),
    #[error("attach mode {mode} is not available here: {error}")]
    Attach {
        mode: attach::AttachMode,
        error: attach::AttachError,
    },
    #[error("no attach mode is available here: {}", join(.0))]
    NoAttachMode(Vec<attach::Skipped>),
    #[error("eBPF map {0}: missing")]
    MapMissing(&'static str),
    #[error("eBPF map {map}: {}", attach::one_line(.error))]
    Map {
        map: &'static str,
        error: aya::maps::MapError,
    },
    #[error("{0}: {1}")]
    Filter(String, String),
}

fn join(skipped: &[attach::Skipped]) -> String {
    let lines: Vec<String> = skipped.iter().map(ToString::to_string).collect();
    lines.join("; ")
}
