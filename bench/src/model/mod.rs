//! The shared types every layer above speaks: what a run is asked to do (config, modes), what it
//! measured (report.json, podman-report.json, raw samples), and how locks are named.

pub mod config;
pub mod locks;
pub mod mode;
pub mod podman;
pub mod report;
pub mod samples;

pub use config::{PodmanConfig, PullConfig, READY_TIMEOUT, RunConfig};
pub use locks::{LAYERS_LOCK, LockStats, lock_name, lock_stats};
pub use mode::{BenchMode, TraceMode};
pub use podman::{PODMAN_SCHEMA, PodmanReport, Variant, VariantResult};
pub use report::{
    BenchReport, ImageFigures, Latency, ModeResult, Params, Phase, PullResult, ReaderFigures,
    SCHEMA, Source, Target, kernel_release, percentile, sources,
};
pub use samples::{LockSpan, ModeSamples, OpSample};
