//! What a run compares (`locked`, `staged`, `isolated`) and whether it traces the kernel side.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use store_core::ExtractMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// All pulls into one store, layers extracted under layers.lock.
    Locked,
    /// All pulls into one store, layers extracted in staging and renamed under layers.lock.
    Staged,
    /// Each pull (and reader) in its own store: the no-contention bound.
    Isolated,
}

impl BenchMode {
    /// Isolated stores extract the staged way, so that isolated differs from staged only in not
    /// sharing a store (same extraction thread and priority, same commit).
    pub fn extract_mode(self) -> ExtractMode {
        match self {
            BenchMode::Locked => ExtractMode::Locked,
            BenchMode::Staged | BenchMode::Isolated => ExtractMode::Staged,
        }
    }
}

impl fmt::Display for BenchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BenchMode::Locked => "locked",
            BenchMode::Staged => "staged",
            BenchMode::Isolated => "isolated",
        })
    }
}

impl FromStr for BenchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "locked" => Ok(BenchMode::Locked),
            "staged" => Ok(BenchMode::Staged),
            "isolated" => Ok(BenchMode::Isolated),
            other => Err(format!(
                "unknown mode {other:?} (expected locked, staged or isolated)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMode {
    /// Trace when `locktrace` is there and we are root; otherwise say so and go on.
    Auto,
    /// Trace or fail.
    On,
    Off,
}

impl FromStr for TraceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TraceMode::Auto),
            "on" => Ok(TraceMode::On),
            "off" => Ok(TraceMode::Off),
            other => Err(format!(
                "unknown trace mode {other:?} (expected auto, on or off)"
            )),
        }
    }
}

impl fmt::Display for TraceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceMode::Auto => "auto",
            TraceMode::On => "on",
            TraceMode::Off => "off",
        })
    }
}

impl TraceMode {
    /// Why there are no kernel figures when no tracer ran.
    pub fn skip_note(self) -> String {
        match self {
            TraceMode::Off => "kernel tracing off (--trace off)".to_string(),
            TraceMode::Auto | TraceMode::On => {
                "kernel tracing skipped (locktrace missing or not root)".to_string()
            }
        }
    }
}
