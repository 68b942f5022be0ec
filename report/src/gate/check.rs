//! What the gate decided: one [`Check`] per budget and lock mode or per baseline statistic, each
//! with the figures its kind of check has, and the [`GateResult`] over all of them.

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::model::{Metric, Mode, Statistic};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Inconclusive,
    Fail,
    /// The check could not be evaluated (e.g. its lock pattern matched nothing).
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
        }
    }
}

/// Where a check comes from: a budget, or the comparison with the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Budget,
    Regression,
    /// `--fail-on-inversion`: the report's lock order must have no cycle.
    #[serde(rename = "lock_order")]
    LockOrder,
}

/// One lock name and mode as a check saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockMode {
    pub lock: String,
    /// How many lock files with this name the report has; above one, the statistics are over all
    /// of them merged.
    pub files: usize,
    pub mode: Mode,
}

/// What a check is about, one variant per kind of check, each with exactly the figures it has.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// A budget measured on one lock name and mode.
    Budget {
        at: LockMode,
        metric: Metric,
        statistic: Statistic,
        samples: u64,
        measured: u64,
        /// Nanoseconds for durations, a plain number for `count`.
        limit: u64,
    },
    /// A budget with nothing to measure: its pattern or mode matched no lock, or the matching
    /// lock files could not be merged.
    UnmeasuredBudget {
        /// The budget's mode, if it names one.
        mode: Option<Mode>,
        metric: Metric,
        statistic: Statistic,
        /// `None` for a relative budget, whose limit comes from a reference it could not use.
        limit: Option<u64>,
    },
    /// One statistic of one lock name and mode against the baseline's.
    Regression {
        at: LockMode,
        metric: Metric,
        statistic: Statistic,
        samples: u64,
        measured: u64,
        /// The baseline's value; `None` when the baseline lacks this lock mode.
        baseline: Option<u64>,
        /// The most `measured` may be; `None` when there was no baseline value or too few
        /// samples to compare.
        limit: Option<u64>,
    },
    /// A lock mode of the baseline that this report lacks.
    Vanished { lock: String, mode: Mode },
    /// The lock-order check: one per cycle (failed), or one with no cycle (passed) over `edges`
    /// lock-order edges.
    LockOrder {
        cycle: Option<Vec<String>>,
        edges: usize,
    },
    /// A gate that could not be set up: nothing to check, or reports whose locks would not line up.
    Setup(CheckKind),
}

/// The verdict on one budget for one lock mode, on one statistic against the baseline, or on a
/// gate that could not be set up.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The budget expression, or `regression:LOCK:MODE:METRIC:STAT`.
    pub name: String,
    pub verdict: Verdict,
    /// One line that names the budget, the measured value and the limit.
    pub message: String,
    pub subject: Subject,
}

impl Check {
    pub fn kind(&self) -> CheckKind {
        match self.subject {
            Subject::Budget { .. } | Subject::UnmeasuredBudget { .. } => CheckKind::Budget,
            Subject::Regression { .. } | Subject::Vanished { .. } => CheckKind::Regression,
            Subject::LockOrder { .. } => CheckKind::LockOrder,
            Subject::Setup(kind) => kind,
        }
    }

    fn at(&self) -> Option<&LockMode> {
        match &self.subject {
            Subject::Budget { at, .. } | Subject::Regression { at, .. } => Some(at),
            _ => None,
        }
    }

    /// The lock name checked, if the check is about one.
    pub fn lock(&self) -> Option<&str> {
        match &self.subject {
            Subject::Vanished { lock, .. } => Some(lock),
            _ => self.at().map(|at| at.lock.as_str()),
        }
    }

    /// How many lock files of that name the report has (0 for a lock mode that vanished).
    pub fn files(&self) -> Option<usize> {
        match &self.subject {
            Subject::Vanished { .. } => Some(0),
            _ => self.at().map(|at| at.files),
        }
    }

    pub fn mode(&self) -> Option<Mode> {
        match &self.subject {
            Subject::UnmeasuredBudget { mode, .. } => *mode,
            Subject::Vanished { mode, .. } => Some(*mode),
            _ => self.at().map(|at| at.mode),
        }
    }

    pub fn metric(&self) -> Option<Metric> {
        match self.subject {
            Subject::Budget { metric, .. }
            | Subject::UnmeasuredBudget { metric, .. }
            | Subject::Regression { metric, .. } => Some(metric),
            _ => None,
        }
    }

    pub fn statistic(&self) -> Option<Statistic> {
        match self.subject {
            Subject::Budget { statistic, .. }
            | Subject::UnmeasuredBudget { statistic, .. }
            | Subject::Regression { statistic, .. } => Some(statistic),
            _ => None,
        }
    }

    /// How many samples the statistic is over.
    pub fn samples(&self) -> Option<u64> {
        match self.subject {
            Subject::Budget { samples, .. } | Subject::Regression { samples, .. } => Some(samples),
            Subject::Vanished { .. } => Some(0),
            _ => None,
        }
    }

    pub fn measured(&self) -> Option<u64> {
        match self.subject {
            Subject::Budget { measured, .. } | Subject::Regression { measured, .. } => {
                Some(measured)
            }
            _ => None,
        }
    }

    pub fn limit(&self) -> Option<u64> {
        match self.subject {
            Subject::Budget { limit, .. } => Some(limit),
            Subject::UnmeasuredBudget { limit, .. } => limit,
            Subject::Regression { limit, .. } => limit,
            _ => None,
        }
    }

    /// The lock-order cycle a failed lock-order check is about.
    pub fn cycle(&self) -> Option<&[String]> {
        match &self.subject {
            Subject::LockOrder { cycle, .. } => cycle.as_deref(),
            _ => None,
        }
    }

    pub fn baseline(&self) -> Option<u64> {
        match self.subject {
            Subject::Regression { baseline, .. } => baseline,
            _ => None,
        }
    }
}

/// The JSON form is one flat object per check, every field present (`null` where the kind of
/// check has no such figure), as the gate has always written it; lock-order checks add `cycle`.
impl Serialize for Check {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct(
            "Check",
            13 + usize::from(self.kind() == CheckKind::LockOrder),
        )?;
        s.serialize_field("kind", &self.kind())?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("lock", &self.lock())?;
        s.serialize_field("files", &self.files())?;
        s.serialize_field("mode", &self.mode())?;
        s.serialize_field("metric", &self.metric())?;
        s.serialize_field("statistic", &self.statistic())?;
        s.serialize_field("samples", &self.samples())?;
        s.serialize_field("measured", &self.measured())?;
        s.serialize_field("limit", &self.limit())?;
        s.serialize_field("baseline", &self.baseline())?;
        if self.kind() == CheckKind::LockOrder {
            s.serialize_field("cycle", &self.cycle())?;
        }
        s.serialize_field("verdict", &self.verdict)?;
        s.serialize_field("message", &self.message)?;
        s.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateResult {
    pub verdict: Verdict,
    pub exit_code: i32,
    pub checks: Vec<Check>,
    /// Caveats about the inputs (dropped events, clock source mismatch).
    pub warnings: Vec<String>,
}

impl GateResult {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }
}
