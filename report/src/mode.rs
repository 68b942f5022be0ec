//! The two lock modes, as reports and budgets name them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ReportError;

/// Shared lock (`F_RDLCK`) or exclusive lock (`F_WRLCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Read,
    Write,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Write => "write",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "read" | "r" | "shared" => Ok(Mode::Read),
            "write" | "w" | "exclusive" => Ok(Mode::Write),
            _ => Err(ReportError::Invalid(format!(
                "unknown lock mode {s:?} (expected read or write)"
            ))),
        }
    }
}
