//! `podman-report.json`: what `compare-podman` measured, per variant (which client pulled) and
//! store layout.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use locktrace_report::Report;
use serde::Serialize;

use crate::model::report::{Latency, PullResult};

pub const PODMAN_SCHEMA: &str = "lockbench-podman/2";

/// Who pulls: podman before and after staged layer creation, and store-core both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The host's podman (4.3 on Debian 12): layers extracted under layers.lock.
    PodmanOld,
    /// podman >= 5.8 from the Debian sid rootfs (`cargo xtask setup-podman`): staged layer creation.
    PodmanStaged,
    /// `lockbench pull --mode locked`.
    StoreLocked,
    /// `lockbench pull --mode staged`.
    StoreStaged,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::PodmanOld,
        Variant::PodmanStaged,
        Variant::StoreLocked,
        Variant::StoreStaged,
    ];
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variant::PodmanOld => "podman-old",
            Variant::PodmanStaged => "podman-staged",
            Variant::StoreLocked => "store-locked",
            Variant::StoreStaged => "store-staged",
        })
    }
}

impl FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Variant::ALL
            .into_iter()
            .find(|v| v.to_string() == s)
            .ok_or_else(|| {
                format!(
                    "unknown variant {s:?} (expected podman-old, podman-staged, store-locked or \
                     store-staged)"
                )
            })
    }
}

#[derive(Serialize)]
pub struct PodmanReport {
    pub schema: &'static str,
    pub driver: String,
    /// store-core's sync level (podman's own default is containers/storage's `metadata`).
    pub sync: String,
    pub repeat: usize,
    pub command: Vec<String>,
    pub variants: Vec<VariantResult>,
    pub failed: bool,
    pub failures: Vec<String>,
}

#[derive(Serialize)]
pub struct VariantResult {
    pub variant: Variant,
    /// `shared`: all pulls into one store; `isolated`: a store each.
    pub layout: &'static str,
    /// What pulled, with its version (`podman version 5.8.6`, `store-core 0.1.0`).
    pub client: String,
    /// Parent clock per repetition, from starting the first pull to the last one exiting.
    pub makespans_ns: Vec<u64>,
    /// Median of `makespans_ns`.
    pub makespan_ns: u64,
    /// Parent clock per pull process (podman reports no timings itself), all repetitions.
    pub pulls: Vec<PullResult>,
    pub pull_time: Latency,
    pub throughput_mb_s: f64,
    /// Per reader command (`images`, `create`, `rm`: podman's, or lockbench's for store-core), its
    /// runs while the pulls ran, parent clock, process start to exit, successful runs only.
    pub readers: BTreeMap<String, Latency>,
    pub reader_errors: u64,
    /// All repetitions' kernel figures added up, locks named relative to their store.
    pub kernel_report: Option<Report>,
    pub kernel_note: Option<String>,
}

impl VariantResult {
    /// `podman-staged`, or `podman-staged isolated` for a store each: the table's column and the
    /// kernel report's file name.
    pub fn label(&self) -> String {
        match self.layout {
            "shared" => self.variant.to_string(),
            layout => format!("{}-{layout}", self.variant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_from_their_names() {
        for v in Variant::ALL {
            assert_eq!(v.to_string().parse::<Variant>(), Ok(v));
        }
        assert!(
            "podman"
                .parse::<Variant>()
                .unwrap_err()
                .contains("store-staged")
        );
    }
}
