//! lockbench: the parallel-pull lock contention demo for store-core, as a library. The binary
//! only parses arguments ([`cli`]) and calls a [`scenario`].
//!
//! Modules depend downward only:
//! - at the bottom, shared types and helpers: [`text`], [`progress`], [`size`], [`reference`],
//!   [`imagegen`], [`protocol`] (parent ↔ worker), [`model`] (configs, modes, report types);
//! - above them, the parts of a run: [`prepare`] (images), [`supervise`] (worker and podman
//!   processes, timeouts), [`trace`] (`locktrace record`), [`aggregate`] (figures, targets) and
//!   [`output`] (report.json, table, plots, report.html);
//! - on top, [`cli`] (arguments → configs) and [`scenario`] (gen, pull, run, compare-podman,
//!   worker).

pub mod aggregate;
pub mod cli;
pub mod error;
pub mod imagegen;
pub mod model;
pub mod output;
pub mod prepare;
pub mod process;
pub mod progress;
pub mod protocol;
pub mod reference;
pub mod scenario;
pub mod size;
pub mod supervise;
pub mod text;
pub mod tools;
pub mod trace;
