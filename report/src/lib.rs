//! locktrace-report: the one report model shared by the tracer (`locktrace`), the bench
//! (`lockbench`) and the gate. A report maps lock → mode → wait/hold HdrHistograms (the lossless
//! source of truth) plus derived summaries, try-lock outcomes, top actors and drop accounting.
//!
//! Modules depend downward only: `duration`, `pattern`, `markup`, `output`, `error`, `histogram`,
//! `mode`, `blockers`, `stacks` and `lock_order` at the bottom; `model` (the types) on them; `load`
//! (reading and validating) and `recorder` on the model; `merge` on the recorder; `profile` (the
//! stack walk and pprof) on `merge`; `render`, `compare`, `export` (on `profile`), `gate` and
//! `plot` on top; `perfetto` (the timeline trace format, written from the tracer's intervals, not
//! from a report) stands alone.

mod blockers;
pub mod compare;
mod duration;
mod error;
pub mod export;
pub mod gate;
mod histogram;
mod load;
mod lock_order;
pub mod markup;
pub mod merge;
mod mode;
mod model;
mod output;
mod pattern;
pub mod perfetto;
pub mod plot;
mod profile;
mod recorder;
mod render;
mod stacks;

pub use blockers::{Blocker, BlockerOthers, Holder, TOP_BLOCKERS, is_container_id};
pub use duration::human_duration;
pub use error::ReportError;
pub use histogram::{SIGNIFICANT_DIGITS, new_histogram};
pub use load::MAX_REPORT_BYTES;
pub use lock_order::{LockOrder, MAX_ORDER_EDGES, OrderEdge, OrderExample, describe_cycle};
pub use model::{
    Actor, ActorStat, Collection, Drops, LockKey, LockReport, Metric, MetricReport, Mode,
    ModeReport, Report, ReportMeta, SCHEMA_VERSION, Source, Statistic, Summary, TOP_ACTORS,
    TryCounts, TryOutcome,
};
pub use output::write_atomic;
pub use pattern::glob_match;
pub use recorder::Recorder;
pub use render::render_text;
pub use stacks::{
    Frames, LOST_STACK, MAX_TRACKED_STACKS, MetricStacks, StackOthers, StackStat, Stacks,
    TOP_STACKS,
};

pub use hdrhistogram::Histogram;
pub use merge::merge;
pub use plot::plot_cdf;
