//! locktrace-report: the one report model shared by the tracer (`locktrace`), the bench
//! (`lockbench`) and the gate. A report maps lock → mode → wait/hold HdrHistograms (the lossless
//! source of truth) plus derived summaries, try-lock outcomes, top actors and drop accounting.

pub mod compare;
mod error;
pub mod export;
pub mod gate;
mod histogram;
pub mod markup;
pub mod merge;
mod model;
mod output;
mod pattern;
pub mod plot;
mod recorder;
mod render;

pub use error::ReportError;
pub use histogram::{SIGNIFICANT_DIGITS, new_histogram};
pub use model::{
    Actor, ActorStat, Drops, LockKey, LockReport, Metric, MetricReport, Mode, ModeReport, Report,
    ReportMeta, SCHEMA_VERSION, Source, Statistic, Summary, TOP_ACTORS, TryCounts, TryOutcome,
};
pub use output::write_atomic;
pub use pattern::glob_match;
pub use recorder::Recorder;
pub use render::{human_duration, render_text};

pub use hdrhistogram::Histogram;
pub use merge::merge;
pub use plot::plot_cdf;
