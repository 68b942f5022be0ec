//! Hand-made reports for the integration tests.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use locktrace_report::{
    Actor, LockKey, Metric, Mode, Recorder, Report, ReportMeta, Source, Summary,
};

pub fn actor(pid: u32) -> Actor {
    Actor {
        pid,
        comm: format!("worker{pid}"),
    }
}

pub fn key(name: &str) -> LockKey {
    LockKey {
        name: name.to_string(),
        path: Some(format!("/var/lib/containers/storage/{name}")),
        dev: Some(2049),
        ino: Some(1234),
    }
}

/// The lock file `name` of the `store`-th of several stores (as in lockbench's isolated mode): same
/// name, different path and inode.
pub fn store_key(store: u64, name: &str) -> LockKey {
    LockKey {
        name: name.to_string(),
        path: Some(format!("/var/lib/containers/storage-{store}/{name}")),
        dev: Some(2049),
        ino: Some(5000 + store),
    }
}

/// A report with the given samples (nanoseconds) for each (lock name, mode, metric).
pub fn report(samples: &[(&str, Mode, Metric, &[u64])]) -> Report {
    let keyed: Vec<_> = samples
        .iter()
        .map(|(name, mode, metric, values)| (key(name), *mode, *metric, *values))
        .collect();
    keyed_report(&keyed)
}

/// A report with the given samples (nanoseconds) for each (lock key, mode, metric).
pub fn keyed_report(samples: &[(LockKey, Mode, Metric, &[u64])]) -> Report {
    let mut rec = Recorder::new();
    for (key, mode, metric, values) in samples {
        for (i, v) in values.iter().enumerate() {
            rec.record(key, *mode, *metric, *v, &actor(100 + (i % 3) as u32));
        }
    }
    let mut meta = ReportMeta::new("test", Source::Kernel);
    meta.duration_ns = 1_000_000_000;
    rec.finish(meta)
}

/// Write holds of two `layers.lock` files in one report: `first` in store 1, `second` in store 2.
pub fn two_stores(first: &[u64], second: &[u64]) -> Report {
    keyed_report(&[
        (
            store_key(1, "layers.lock"),
            Mode::Write,
            Metric::Hold,
            first,
        ),
        (
            store_key(2, "layers.lock"),
            Mode::Write,
            Metric::Hold,
            second,
        ),
    ])
}

/// Summary of write holds of one `layers.lock` holding `samples`: what merging must reproduce.
pub fn hold_summary(samples: &[u64]) -> Summary {
    report(&[("layers.lock", Mode::Write, Metric::Hold, samples)]).locks[0].modes[&Mode::Write]
        .hold
        .summary
}

/// `n` samples spread evenly over `[lo, hi]`.
pub fn spread(n: u64, lo: u64, hi: u64) -> Vec<u64> {
    (0..n)
        .map(|i| lo + (hi - lo) * i / n.max(2).saturating_sub(1).max(1))
        .collect()
}

/// layers.lock: write hold 1..=100ms spread (p99 ≈ 99ms), write wait 1µs..1ms; images.lock: read wait.
pub fn sample_report(scale: u64) -> Report {
    let hold = spread(1000, 1_000_000 * scale, 100_000_000 * scale);
    let wait = spread(200, 1_000, 1_000_000);
    let img = spread(30, 500, 50_000);
    report(&[
        (
            "overlay-layers/layers.lock",
            Mode::Write,
            Metric::Hold,
            &hold,
        ),
        (
            "overlay-layers/layers.lock",
            Mode::Write,
            Metric::Wait,
            &wait,
        ),
        ("overlay-images/images.lock", Mode::Read, Metric::Wait, &img),
    ])
}
