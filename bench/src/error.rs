//! lockbench's error: what was being done, in words a user can act on, with the cause kept as the
//! error's source. [`crate::text::one_line`] prints the whole chain on one line.

use std::io;

use locktrace_report::ReportError;
use store_core::StoreError;

use crate::imagegen::GenError;
use crate::reference::ReferenceError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, directory or child-process operation failed.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// store-core refused or failed an operation.
    #[error("{what}: {source}")]
    Store { what: String, source: StoreError },
    /// Reading, writing or merging a locktrace report failed.
    #[error("{what}: {source}")]
    Report { what: String, source: ReportError },
    /// A report did not serialize, or a worker's events file holds a bad record.
    #[error("{what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    /// Generating the images failed.
    #[error("{what}: {source}")]
    Generate { what: String, source: GenError },
    /// A program lockbench runs is not installed.
    #[error("{what}: {source}")]
    Missing { what: String, source: which::Error },
    #[error(transparent)]
    Gen(#[from] GenError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Bad arguments or environment.
    #[error("{0}")]
    Invalid(String),
    /// `locktrace` could not be found, started, or stopped with a report.
    #[error("{0}")]
    Tracer(String),
    /// A worker process could not do its job (its parent went away, its store calls failed).
    #[error("{0}")]
    Worker(String),
    /// A plot could not be drawn.
    #[error("plotting: {0}")]
    Plot(String),
}

/// Says what was being done when a lower-level error happened, as [`Error`]'s message.
pub trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

/// An error [`Context`] can wrap.
pub trait Cause {
    fn doing(self, what: String) -> Error;
}

impl<T, E: Cause> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| e.doing(what.to_string()))
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.doing(what()))
    }
}

impl Cause for io::Error {
    fn doing(self, what: String) -> Error {
        Error::Io { what, source: self }
    }
}

impl Cause for StoreError {
    fn doing(self, what: String) -> Error {
        Error::Store { what, source: self }
    }
}

impl Cause for ReportError {
    fn doing(self, what: String) -> Error {
        Error::Report { what, source: self }
    }
}

impl Cause for serde_json::Error {
    fn doing(self, what: String) -> Error {
        Error::Json { what, source: self }
    }
}

impl Cause for GenError {
    fn doing(self, what: String) -> Error {
        Error::Generate { what, source: self }
    }
}

impl Cause for which::Error {
    fn doing(self, what: String) -> Error {
        Error::Missing { what, source: self }
    }
}
