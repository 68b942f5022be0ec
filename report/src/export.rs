//! Exports for other tools: Bencher Metric Format JSON, HdrHistogram's classic
//! percentile-distribution text (readable by the HdrHistogram plotter), and the stacks as folded
//! lines for flame graphs or as a pprof profile ([`pprof`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::ReportError;
use crate::histogram::SIGNIFICANT_DIGITS;
use crate::merge::by_name;
use crate::model::{Metric, Report};
use crate::profile::for_each_stack;
pub use crate::profile::{OTHER_STACKS, has_stacks, pprof};

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

/// The stacks of `metric` in the folded format of flamegraph.pl, inferno and speedscope: one line
/// per stack, frames root first joined by `;`, a space and the stack's total time in microseconds.
///
/// The lock name (same-named lock files merged) and the mode are the two root frames
/// (`layers.lock;write;main;…;fcntl 1234`), so one file holds every lock; the stacks past the
/// report's top ones are one line `LOCK;MODE;[other stacks] VALUE`. Totals are rounded to the
/// nearest microsecond, but a stack with samples is at least 1, since flame graph tools drop
/// zeros. In frames and lock names, `;` becomes `:` and line breaks become spaces; stacks that
/// end up the same are one line. Lines come in a fixed order: locks by name, modes, then the
/// report's order (largest total first, others last).
pub fn folded(report: &Report, metric: Metric) -> Result<String, ReportError> {
    let mut lines: Vec<(String, u64)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for_each_stack(report, &[metric], |s| {
        let mut stack = format!("{};{}", sanitize(s.lock), s.mode);
        for frame in s.frames.iter().rev() {
            stack.push(';');
            stack.push_str(&sanitize(frame));
        }
        match index.get(&stack) {
            Some(&i) => lines[i].1 = lines[i].1.saturating_add(s.total_ns),
            None => {
                index.insert(stack.clone(), lines.len());
                lines.push((stack, s.total_ns));
            }
        }
    })?;
    let mut out = String::new();
    for (stack, ns) in lines {
        // Only stacks with samples are listed, so each gets at least 1.
        let us = (ns.saturating_add(500) / 1_000).max(1);
        let _ = writeln!(out, "{stack} {us}");
    }
    Ok(out)
}

/// A frame the folded format can carry: `;` separates frames and a line ends a stack.
fn sanitize(frame: &str) -> Cow<'_, str> {
    if frame.contains([';', '\n', '\r']) {
        Cow::Owned(frame.replace(';', ":").replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(frame)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Actor, LockKey, Mode, ReportMeta, Source};
    use crate::recorder::Recorder;
    use crate::stacks::{Frames, StackOthers};

    fn frames(names: &[&str]) -> Frames {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Two locks, both modes on one, both metrics, a frame with `;` and a line break, an others
    /// entry (2 stacks, 400 ns) and a stack under 1 µs.
    pub(crate) fn stacked_report() -> Report {
        let mut rec = Recorder::new();
        let actor = Actor {
            pid: 1,
            comm: "podman".into(),
        };
        let (layers, images) = (LockKey::named("layers.lock"), LockKey::named("images.lock"));
        let mut sample = |lock: &LockKey, mode, metric, stack: Option<&Frames>, ns| {
            rec.record(lock, mode, metric, ns, &actor);
            if let Some(stack) = stack {
                rec.record_stack(lock, mode, metric, stack, ns);
            }
        };
        let odd = frames(&["fcntl", "a;b\nc", "main"]);
        for ns in [1_000_000, 1_500_000, 2_000_000] {
            sample(&layers, Mode::Read, Metric::Hold, Some(&odd), ns);
        }
        // Samples of the other stacks, listed below as others.
        sample(&layers, Mode::Read, Metric::Hold, None, 100);
        sample(&layers, Mode::Read, Metric::Hold, None, 300);
        let hold = frames(&["flock", "holdHere", "main"]);
        sample(&layers, Mode::Write, Metric::Hold, Some(&hold), 1_000_000);
        let wait = frames(&["flock", "waitHere", "main"]);
        for ns in [3_000_000, 4_000_000] {
            sample(&layers, Mode::Write, Metric::Wait, Some(&wait), ns);
        }
        let images_hold = frames(&["fcntl", "lockImages", "main"]);
        sample(
            &images,
            Mode::Write,
            Metric::Hold,
            Some(&images_hold),
            2_000,
        );
        let mut meta = ReportMeta::new("test", Source::Kernel);
        meta.duration_ns = 5_000_000_000;
        let mut report = rec.finish(meta);
        let layers = report
            .locks
            .iter_mut()
            .find(|l| l.key.name == "layers.lock");
        let read = layers.unwrap().modes.get_mut(&Mode::Read).unwrap();
        read.stacks.hold.others = Some(StackOthers {
            stacks: 2,
            count: 2,
            total_ns: 400,
            max_ns: 300,
        });
        report
    }

    #[test]
    fn folded_lines_are_root_first_in_microseconds_per_lock_and_mode() {
        let report = stacked_report();
        assert_eq!(
            folded(&report, Metric::Hold).unwrap(),
            "images.lock;write;main;lockImages;fcntl 2\n\
             layers.lock;read;main;a:b c;fcntl 4500\n\
             layers.lock;read;[other stacks] 1\n\
             layers.lock;write;main;holdHere;flock 1000\n"
        );
        assert_eq!(
            folded(&report, Metric::Wait).unwrap(),
            "layers.lock;write;main;waitHere;flock 7000\n"
        );
    }

    #[test]
    fn folded_rounds_to_nearest_and_joins_stacks_that_sanitize_alike() {
        let mut report = stacked_report();
        report.locks.retain(|l| l.key.name == "images.lock");
        let write = report.locks[0].modes.get_mut(&Mode::Write).unwrap();
        let mut twin = write.stacks.hold.top[0].clone();
        write.stacks.hold.top[0].frames[1] = "x;y".into();
        write.stacks.hold.top[0].total_ns = 1_499;
        twin.frames[1] = "x:y".into();
        twin.total_ns = 1_500;
        write.stacks.hold.top.push(twin);
        // 1_499 + 1_500 ns: one line, rounded once.
        assert_eq!(
            folded(&report, Metric::Hold).unwrap(),
            "images.lock;write;main;x:y;fcntl 3\n"
        );
        write_total(&mut report, 1_500);
        assert_eq!(
            folded(&report, Metric::Hold).unwrap(),
            "images.lock;write;main;x:y;fcntl 2\n"
        );
    }

    fn write_total(report: &mut Report, ns: u64) {
        let write = report.locks[0].modes.get_mut(&Mode::Write).unwrap();
        write.stacks.hold.top.truncate(1);
        write.stacks.hold.top[0].total_ns = ns;
    }

    #[test]
    fn folded_merges_same_named_lock_files() {
        let mut report = stacked_report();
        report.locks.retain(|l| l.key.name == "images.lock");
        let mut other = report.locks[0].clone();
        other.key.path = Some("/other/images.lock".into());
        report.locks.push(other);
        assert_eq!(
            folded(&report, Metric::Hold).unwrap(),
            "images.lock;write;main;lockImages;fcntl 4\n"
        );
    }
}
