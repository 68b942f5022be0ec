//! Summary mode's report (`record --summary`): the kernel's aggregates (totals per lock file and
//! mode, log-linear buckets with their sums, per-process shares) turned into the one report model.
//!
//! A bucket's samples are recorded at their mean (the kernel keeps each bucket's sum), so the
//! histogram's total is exact and every percentile is within its bucket's width (1/64 of the
//! value). The exact minimum and maximum replace one sample each in their buckets.

use std::collections::HashMap;

use locktrace_report::{
    Actor, Histogram, Metric, Mode, Recorder, ReportError, TryCounts, new_histogram,
};
use tracer_common::{
    F_RDLCK, F_WRLCK,
    summary::{self, BucketTotals, LockKey, Totals, bucket_bounds, bucket_of},
};

use crate::{ledger::Ledger, tracer::KernelSummary};

/// The report's recorder for `kernel`'s aggregates; lock files are named by `ledger`, which has
/// seen the kernel's path records.
pub fn recorder(kernel: &KernelSummary, ledger: &mut Ledger) -> Result<Recorder, ReportError> {
    let mut buckets: HashMap<(LockKey, u32), Vec<(u32, BucketTotals)>> = HashMap::new();
    for (key, b) in &kernel.buckets {
        buckets
            .entry((key.lock, key.metric))
            .or_default()
            .push((key.which, *b));
    }
    let mut rec = Recorder::new();
    for (key, totals) in &kernel.locks {
        let Some(mode) = mode_of(key.lock_type) else {
            continue;
        };
        let lock = ledger.lock_of(key.dev, key.ino);
        rec.add_tries(
            &lock,
            mode,
            &TryCounts {
                acquired: totals.acquired,
                refused: totals.refused,
                errors: totals.errors,
                interrupted: totals.interrupted,
                edeadlk: totals.edeadlk,
            },
        );
        for (metric, code, t) in [
            (Metric::Wait, summary::WAIT, &totals.wait),
            (Metric::Hold, summary::HOLD, &totals.hold),
        ] {
            let empty = Vec::new();
            let of_metric = buckets.get(&(*key, code)).unwrap_or(&empty);
            let (hist, total, min, max) = histogram(t, of_metric);
            rec.absorb_metric(&lock, mode, metric, &hist, (total, min, max))?;
        }
    }
    for (key, a) in &kernel.actors {
        let Some(mode) = mode_of(key.lock.lock_type) else {
            continue;
        };
        let metric = if key.metric == summary::WAIT {
            Metric::Wait
        } else {
            Metric::Hold
        };
        let lock = ledger.lock_of(key.lock.dev, key.lock.ino);
        let actor = Actor {
            pid: key.which,
            comm: crate::ledger::cstr(&a.comm),
        };
        rec.add_actor(&lock, mode, metric, &actor, (a.count, a.total_ns));
    }
    Ok(rec)
}

fn mode_of(lock_type: u32) -> Option<Mode> {
    match lock_type {
        F_RDLCK => Some(Mode::Read),
        F_WRLCK => Some(Mode::Write),
        _ => None,
    }
}

/// One metric's histogram from its buckets, with its total, minimum and maximum.
///
/// The buckets are read after the totals, so while tracing goes on they may hold a few samples
/// more; and a bucket that found its map full holds fewer (counted as a drop). The samples are
/// the buckets' then, and samples the totals have beyond them are added at their mean.
fn histogram(t: &Totals, buckets: &[(u32, BucketTotals)]) -> (Histogram<u64>, u64, u64, u64) {
    let mut hist = new_histogram();
    let (mut count, mut total) = (0u64, 0u64);
    let (mut lowest, mut highest) = (u64::MAX, 0u64);
    for &(bucket, b) in buckets {
        if b.count == 0 {
            continue;
        }
        let (lo, hi) = bucket_bounds(bucket);
        let (min, max) = (
            (t.count > 0 && bucket_of(t.min_ns) == bucket).then_some(t.min_ns),
            (t.count > 0 && bucket_of(t.max_ns) == bucket).then_some(t.max_ns),
        );
        let mut rest = (b.count, b.total_ns);
        for exact in [min, max].into_iter().flatten() {
            if rest.0 == 0 || (min == max && rest.0 < b.count) {
                break;
            }
            record(&mut hist, exact, 1);
            rest = (rest.0 - 1, rest.1.saturating_sub(exact));
            lowest = lowest.min(exact);
            highest = highest.max(exact);
        }
        if rest.0 > 0 {
            let (at, top) = spread(&mut hist, rest);
            lowest = lowest.min(at.clamp(lo, hi));
            highest = highest.max(top.clamp(lo, hi));
        }
        count += b.count;
        total = total.saturating_add(b.total_ns);
    }
    if t.count > count {
        let (at, top) = spread(
            &mut hist,
            (t.count - count, t.total_ns.saturating_sub(total)),
        );
        total = total.max(t.total_ns);
        lowest = lowest.min(at);
        highest = highest.max(top);
    }
    if hist.is_empty() {
        return (hist, 0, 0, 0);
    }
    (hist, total, lowest, highest)
}

/// Records `count` samples summing to `total` at their mean, the remainder of the division one ns
/// higher each, so the histogram's samples add up to `total` exactly; returns the two values.
fn spread(hist: &mut Histogram<u64>, (count, total): (u64, u64)) -> (u64, u64) {
    let (mean, extra) = (total / count, total % count);
    record(hist, mean, count - extra);
    if extra > 0 {
        record(hist, mean + 1, extra);
        return (mean, mean + 1);
    }
    (mean, mean)
}

fn record(hist: &mut Histogram<u64>, value: u64, n: u64) {
    // Auto-resizing histograms take any value up to 2^63; past that, saturate rather than lose it.
    if hist.record_n(value, n).is_err() {
        hist.saturating_record_n(value, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets_of(samples: &[u64]) -> (Totals, Vec<(u32, BucketTotals)>) {
        let mut t = Totals::default();
        let mut b: HashMap<u32, BucketTotals> = HashMap::new();
        for &s in samples {
            t.min_ns = if t.count == 0 { s } else { t.min_ns.min(s) };
            t.max_ns = t.max_ns.max(s);
            t.count += 1;
            t.total_ns += s;
            let e = b.entry(bucket_of(s)).or_default();
            e.count += 1;
            e.total_ns += s;
        }
        (t, b.into_iter().collect())
    }

    #[test]
    fn counts_totals_and_extremes_are_exact_and_percentiles_within_a_bucket() {
        let samples: Vec<u64> = (1..=1000u64).map(|i| i * i * 37 + 5_000).collect();
        let (t, b) = buckets_of(&samples);
        let (hist, total, min, max) = histogram(&t, &b);
        assert_eq!(hist.len(), 1000);
        assert_eq!((total, min, max), (t.total_ns, t.min_ns, t.max_ns));

        assert_eq!(hist.min(), hist.lowest_equivalent(t.min_ns));
        assert!(hist.equivalent(hist.max(), t.max_ns));
        for q in [0.5, 0.9, 0.99] {
            let exact = samples[(q * 1000.0) as usize - 1] as f64;
            let got = hist.value_at_quantile(q) as f64;
            assert!(
                (got - exact).abs() <= exact * 0.03,
                "p{q}: {got} vs exact {exact}"
            );
        }
    }

    #[test]
    fn a_report_of_many_short_samples_passes_validation() {
        // Short waits where the stored histogram's buckets are 1 ns wide: a mean rounded down
        // per bucket would leave the histogram short of the exact total, and the report corrupt.
        let samples: Vec<u64> = (0..100_000u64).map(|i| 1_500 + (i * 7919) % 301).collect();
        let (t, b) = buckets_of(&samples);
        let (hist, total, min, max) = histogram(&t, &b);
        let mut rec = Recorder::new();
        let lock = locktrace_report::LockKey::named("layers.lock");
        rec.absorb_metric(&lock, Mode::Write, Metric::Wait, &hist, (total, min, max))
            .unwrap();
        let report = rec.finish(locktrace_report::ReportMeta::new(
            "test",
            locktrace_report::Source::Kernel,
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        report.write(&path).unwrap();
        let read = locktrace_report::Report::read(&path).unwrap();
        let s = &read.locks[0].modes[&Mode::Write].wait.summary;
        assert_eq!(
            (s.count, s.total, s.min, s.max),
            (100_000, t.total_ns, t.min_ns, t.max_ns)
        );
    }

    #[test]
    fn one_sample_is_its_own_minimum_and_maximum() {
        let (t, b) = buckets_of(&[123_456]);
        let (hist, total, min, max) = histogram(&t, &b);
        assert_eq!(
            (hist.len(), total, min, max),
            (1, 123_456, 123_456, 123_456)
        );
    }

    #[test]
    fn samples_a_full_map_kept_out_of_the_buckets_still_count() {
        let (t, mut b) = buckets_of(&[1_000, 2_000, 1_000_000]);
        b.retain(|(bucket, _)| *bucket != bucket_of(1_000_000));
        let (hist, total, _, _) = histogram(&t, &b);
        assert_eq!((hist.len(), total), (3, t.total_ns));
    }

    #[test]
    fn nothing_recorded_is_an_empty_histogram() {
        let (hist, total, min, max) = histogram(&Totals::default(), &[]);
        assert!(hist.is_empty());
        assert_eq!((total, min, max), (0, 0, 0));
    }
}
