//! Reading reports: bounded in size, version-checked, and validated against their own histograms,
//! so no tool shows, exports or gates on numbers a report's histograms cannot back.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::blockers;
use crate::error::ReportError;
use crate::histogram;
use crate::lock_order;
use crate::model::{Metric, MetricReport, Report, SCHEMA_VERSION, Statistic, Summary};
use crate::stacks;

/// The largest report file read (64 MiB). A report holds a few KiB per lock file, so this leaves
/// room for tens of thousands of lock files while keeping a hostile input from exhausting memory.
pub const MAX_REPORT_BYTES: u64 = 64 << 20;

impl Report {
    /// Reads and validates the report at `path`, reading at most [`MAX_REPORT_BYTES`] whatever
    /// the file claims to be (pipes and devices included).
    pub fn read(path: &Path) -> Result<Report, ReportError> {
        let io_err = |e| ReportError::io(path, e);
        let mut bytes = Vec::new();
        File::open(path)
            .map_err(io_err)?
            .take(MAX_REPORT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        Report::from_json(&bytes, path)
    }

    /// Parses and validates report JSON from memory; errors name the input `<input>`.
    pub fn from_slice(bytes: &[u8]) -> Result<Report, ReportError> {
        Report::from_json(bytes, Path::new("<input>"))
    }

    /// Parses and validates report JSON; `origin` only names the input in errors.
    pub fn from_json(bytes: &[u8], origin: &Path) -> Result<Report, ReportError> {
        if bytes.len() as u64 > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge {
                path: origin.to_path_buf(),
                limit: MAX_REPORT_BYTES,
            });
        }
        let parse_err = |reason: String| ReportError::Parse {
            path: origin.to_path_buf(),
            reason,
        };
        // Look at the version before the shape: a newer report may have a shape we cannot parse, and
        // "upgrade" is the useful message then, not "missing field".
        let probe: VersionProbe =
            serde_json::from_slice(bytes).map_err(|e| parse_err(e.to_string()))?;
        let version = match probe.schema_version {
            None => return Err(parse_err("no schema_version field".into())),
            Some(Version::Other) => {
                return Err(parse_err("schema_version is not a positive integer".into()));
            }
            Some(Version::Number(v)) => v,
        };
        if version == 0 {
            return Err(parse_err("schema_version 0 does not exist".into()));
        }
        if version > u64::from(SCHEMA_VERSION) {
            return Err(ReportError::UnsupportedSchema {
                path: origin.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let report: Report = serde_json::from_slice(bytes).map_err(|e| parse_err(e.to_string()))?;
        report.validate(origin)?;
        Ok(report)
    }

    /// Checks that every histogram decodes and every summary agrees with its histogram: count
    /// exactly, min and max within the histogram's bucket of its lowest and highest sample, the
    /// total within what the buckets allow, the mean as total / count, percentiles within the
    /// bucket the histogram gives; blockers consistent with themselves and the mode's waits. The
    /// first disagreement is the error.
    pub fn validate(&self, origin: &Path) -> Result<(), ReportError> {
        for lock in &self.locks {
            for (mode, mode_report) in &lock.modes {
                for metric in Metric::ALL {
                    check_metric(mode_report.metric(metric)).map_err(|reason| {
                        ReportError::Corrupt {
                            path: origin.to_path_buf(),
                            reason: format!("{} {mode} {metric}: {reason}", lock.key),
                        }
                    })?;
                }
                let tries = &mode_report.tries;
                if tries.edeadlk > tries.errors {
                    return Err(ReportError::Corrupt {
                        path: origin.to_path_buf(),
                        reason: format!(
                            "{} {mode} tries: {} EDEADLK results but only {} errors",
                            lock.key, tries.edeadlk, tries.errors
                        ),
                    });
                }
                let wait = &mode_report.wait.summary;
                blockers::check(
                    &mode_report.blockers,
                    mode_report.blockers_others.as_ref(),
                    mode_report.holder_not_traced,
                    wait.count,
                    wait.max,
                )
                .map_err(|reason| ReportError::Corrupt {
                    path: origin.to_path_buf(),
                    reason: format!("{} {mode} blockers: {reason}", lock.key),
                })?;
                for metric in Metric::ALL {
                    let s = &mode_report.metric(metric).summary;
                    stacks::check(mode_report.stacks(metric), s.count, s.max).map_err(
                        |reason| ReportError::Corrupt {
                            path: origin.to_path_buf(),
                            reason: format!("{} {mode} {metric} stacks: {reason}", lock.key),
                        },
                    )?;
                }
            }
        }
        lock_order::check(&self.lock_order).map_err(|reason| ReportError::Corrupt {
            path: origin.to_path_buf(),
            reason: format!("lock order: {reason}"),
        })
    }
}

fn check_metric(metric: &MetricReport) -> Result<(), String> {
    let hist = histogram::decode(&metric.histogram)?;
    let s = &metric.summary;
    if hist.len() != s.count {
        return Err(format!(
            "summary count {} but the histogram holds {} samples",
            s.count,
            hist.len()
        ));
    }
    if s.count == 0 {
        if *s != Summary::default() {
            return Err("no samples, but the summary is not all zero".into());
        }
        return Ok(());
    }
    if s.min > s.max {
        return Err(format!("summary min {} is above its max {}", s.min, s.max));
    }
    for (name, exact, recorded) in [("min", s.min, hist.min()), ("max", s.max, hist.max())] {
        if !hist.equivalent(exact, recorded) {
            return Err(format!(
                "summary {name} {exact} is not in the bucket of the histogram's {name} ({}..={})",
                hist.lowest_equivalent(recorded),
                hist.highest_equivalent(recorded)
            ));
        }
    }
    let (low, high) = total_range(&hist);
    if !(low..=high).contains(&u128::from(s.total)) {
        return Err(format!(
            "summary total {} is outside what the histogram allows ({low}..={high})",
            s.total
        ));
    }
    if s.mean != s.total / s.count {
        return Err(format!(
            "summary mean {} is not total / count ({})",
            s.mean,
            s.total / s.count
        ));
    }
    let expected = Summary::from_histogram(&hist, s.total, s.min, s.max);
    for stat in [
        Statistic::P50,
        Statistic::P90,
        Statistic::P99,
        Statistic::P999,
    ] {
        let (stored, derived) = (stat.of(s), stat.of(&expected));
        if stored != derived && !hist.equivalent(stored, derived) {
            return Err(format!(
                "summary {stat} {stored} disagrees with the histogram's {derived}"
            ));
        }
    }
    Ok(())
}

/// The least and the most the samples of `hist` can add up to, given its buckets.
fn total_range(hist: &Histogram<u64>) -> (u128, u128) {
    hist.iter_recorded().fold((0, 0), |(low, high), v| {
        let n = u128::from(v.count_at_value());
        let top = v.value_iterated_to();
        (
            low + n * u128::from(hist.lowest_equivalent(top)),
            high + n * u128::from(hist.highest_equivalent(top)),
        )
    })
}

/// Only `schema_version` of a report; every other field is skipped without being kept.
#[derive(Deserialize)]
struct VersionProbe {
    #[serde(default)]
    schema_version: Option<Version>,
}

enum Version {
    Number(u64),
    Other,
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(VersionVisitor)
    }
}

struct VersionVisitor;

impl<'de> Visitor<'de> for VersionVisitor {
    type Value = Version;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a schema version")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Version, E> {
        Ok(Version::Number(v))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Version, E> {
        Ok(Version::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Version, E> {
        Ok(Version::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Version, E> {
        Ok(Version::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Version, E> {
        Ok(Version::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Version, E> {
        Ok(Version::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Version, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Version::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Version, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Version::Other)
    }
}
