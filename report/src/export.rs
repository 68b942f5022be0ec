//! Exports for other tools: Bencher Metric Format JSON and HdrHistogram's classic
//! percentile-distribution text (readable by the HdrHistogram plotter).

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::ReportError;
use crate::histogram::SIGNIFICANT_DIGITS;
use crate::merge::by_name;
use crate::model::{Metric, Report};

#[derive(Serialize)]
struct BmfValue {
    value: f64,
}

/// Bencher Metric Format: one benchmark per `LOCK:MODE:METRIC` (lock by name, so runs line up;
/// same-named lock files merged), with `p50`, `p99` and `max` measures in nanoseconds. Metrics
/// without samples are left out rather than reported as zero latency.
pub fn bmf(report: &Report) -> Result<String, ReportError> {
    let mut out: BTreeMap<String, BTreeMap<&str, BmfValue>> = BTreeMap::new();
    for (name, named) in by_name(&report.locks)? {
        for (mode, mode_report) in &named.lock.modes {
            for metric in Metric::ALL {
                let s = &mode_report.metric(metric).summary;
                if s.count == 0 {
                    continue;
                }
                let measures = [("p50", s.p50), ("p99", s.p99), ("max", s.max)]
                    .into_iter()
                    .map(|(name, v)| (name, BmfValue { value: v as f64 }))
                    .collect();
                out.insert(format!("{name}:{mode}:{metric}"), measures);
            }
        }
    }
    Ok(serde_json::to_string_pretty(&out).expect("BMF serializes to JSON"))
}

/// Nanoseconds per unit of the values in [`hdr_text`].
pub const HDR_VALUE_UNIT_NS: f64 = 1_000.0;

/// Percentile distribution of every lock (by name, same-named lock files merged), mode and metric
/// with samples, each block preceded by a `#` line naming it. Values are in microseconds.
pub fn hdr_text(report: &Report) -> Result<String, ReportError> {
    let mut out = String::new();
    for (name, named) in by_name(&report.locks)? {
        let merged = if named.files > 1 {
            format!("; {} lock files merged", named.files)
        } else {
            String::new()
        };
        for (mode, mode_report) in &named.lock.modes {
            for metric in Metric::ALL {
                if mode_report.metric(metric).summary.count == 0 {
                    continue;
                }
                let hist = named.lock.histogram(*mode, metric)?;
                let _ = writeln!(
                    out,
                    "# {name} {mode} {metric} (values in microseconds{merged})"
                );
                out.push_str(&percentile_distribution(&hist, HDR_VALUE_UNIT_NS));
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// The format of Java HdrHistogram's `outputPercentileDistribution` (5 ticks per half distance),
/// with values divided by `unit_ratio`.
pub fn percentile_distribution(hist: &Histogram<u64>, unit_ratio: f64) -> String {
    let d = usize::from(SIGNIFICANT_DIGITS);
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in hist.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / unit_ratio;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:>12.d$} {q:>2.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:>12.d$} {q:>2.12} {total:>10}");
        }
    }
    // Sub-buckets per bucket: the power of two covering 2 * 10^digits, as HdrHistogram sizes them.
    let sub_buckets = (2 * 10u64.pow(u32::from(SIGNIFICANT_DIGITS))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.d$}, StdDeviation   = {:>12.d$}]",
        hist.mean() / unit_ratio,
        hist.stdev() / unit_ratio
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.d$}, Total count    = {:>12}]",
        hist.max() as f64 / unit_ratio,
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        hist.buckets(),
        sub_buckets
    );
    out
}
