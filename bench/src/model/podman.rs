//! `podman-report.json`: what `compare-podman` measured.

use locktrace_report::Report;
use serde::Serialize;

use crate::model::report::{Latency, PullResult};

pub const PODMAN_SCHEMA: &str = "lockbench-podman/1";

#[derive(Serialize)]
pub struct PodmanReport {
    pub schema: &'static str,
    pub podman_version: String,
    pub driver: String,
    pub command: Vec<String>,
    pub modes: Vec<PodmanMode>,
    pub failed: bool,
    pub failures: Vec<String>,
}

#[derive(Serialize)]
pub struct PodmanMode {
    /// `shared`: all pulls into one store; `isolated`: a store each.
    pub mode: &'static str,
    /// Parent clock, from starting the first podman to the last one exiting.
    pub makespan_ns: u64,
    /// Parent clock per podman process (podman reports no timings itself).
    pub pulls: Vec<PullResult>,
    pub pull_time: Latency,
    pub throughput_mb_s: f64,
    pub kernel_report: Option<Report>,
    pub kernel_note: Option<String>,
}
