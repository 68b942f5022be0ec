//! Hand-made reports for the integration tests.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

use locktrace_report::{Actor, LockKey, Metric, Mode, Recorder, Report, ReportMeta, Source};

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

/// A report with the given samples (nanoseconds) for each (lock name, mode, metric).
pub fn report(samples: &[(&str, Mode, Metric, &[u64])]) -> Report {
    let mut rec = Recorder::new();
    for (name, mode, metric, values) in samples {
        for (i, v) in values.iter().enumerate() {
            rec.record(&key(name), *mode, *metric, *v, &actor(100 + (i % 3) as u32));
        }
    }
    let mut meta = ReportMeta::new("test", Source::Kernel);
    meta.duration_ns = 1_000_000_000;
    rec.finish(meta)
}

/// `n` samples spread evenly over `[lo, hi]`.
pub fn spread(n: u64, lo: u64, hi: u64) -> Vec<u64> {
    (0..n)
        .map(|i| lo + (hi - lo) * i / n.max(2).saturating_sub(1).max(1))
        .collect()
}
