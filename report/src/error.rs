use std::path::PathBuf;

/// Every failure of the report library; each renders as one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a locktrace report: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error(
        "{}: report schema_version {found} is newer than this locktrace understands (up to {supported}); upgrade locktrace",
        path.display()
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
    /// A report that parses but cannot be right: a histogram that does not decode, or a summary
    /// the histogram does not back.
    #[error("{}: corrupt report: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: larger than the {limit}-byte limit for reports", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    /// `at` names the lock, mode and metric: `layers.lock write hold`.
    #[error("histogram of {at}: {reason}")]
    Histogram { at: String, reason: String },
    #[error("cannot encode histogram: {0}")]
    Encode(String),
    #[error("lock {lock} has no {mode} samples")]
    NoSuchMode { lock: String, mode: String },
    #[error("invalid budget {expr:?}: {reason}")]
    Budget { expr: String, reason: String },
    #[error("{}: bad budgets file: {reason}", path.display())]
    BudgetsFile { path: PathBuf, reason: String },
    #[error("cannot merge: {0}")]
    Merge(String),
    #[error("cannot plot to {}: {reason}", path.display())]
    Plot { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }
}
