//! locktrace: per-lock-file wait and hold times, traced with eBPF.
//!
//! The binary is a thin shell over this library: [`tracer::Tracer`] loads and attaches the embedded
//! eBPF object, [`ledger::Ledger`] pairs its events into waits and holds and feeds a
//! [`locktrace_report::Recorder`].

pub mod attach;
pub mod doctor;
pub mod filter;
pub mod kernel;
pub mod ledger;
pub mod tracer;

/// Errors of the tracing library; each renders as one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tracing needs root or CAP_BPF+CAP_PERFMON (try: sudo locktrace ...)")]
    Privileges,
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0}")]
    Tracefs(std::io::Error),
    #[error("cannot read tracepoint format {0}: {1}")]
    Format(String, std::io::Error),
    #[error("tracepoint {0} has no field {1} on this kernel")]
    Field(String, String),
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux); locktrace needs it to find struct offsets \
         (kernels built with CONFIG_DEBUG_INFO_BTF=y have it)"
    )]
    NoBtf,
    #[error("reading kernel BTF: {0}")]
    Btf(String),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("attach mode {mode} is not available here: {reason}")]
    Attach {
        mode: attach::AttachMode,
        reason: String,
    },
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, String),
    #[error("{0}: {1}")]
    Filter(String, String),
}
