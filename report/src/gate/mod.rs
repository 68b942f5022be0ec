//! CI gate: latency budgets (`layers.lock:hold:p99<=50ms`) and regressions against a baseline report,
//! with per-check verdicts, text/JSON/JUnit output and a process exit code.
//!
//! Split by job: `budget` parses budgets, `evaluate` turns a report, budgets and a baseline into
//! checks, `check` holds the verdict types, `format` writes them out.

pub mod budget;
mod check;
mod evaluate;
mod format;

pub use crate::duration::parse_duration;
pub use budget::{Budget, CmpOp, Limit, MAX_BUDGETS_FILE_BYTES, load_budgets, parse_budgets};
pub use check::{Check, CheckKind, GateResult, LockMode, Subject, Verdict};
pub use evaluate::{Baseline, GateConfig, LOCK_ORDER_CHECK, evaluate};
