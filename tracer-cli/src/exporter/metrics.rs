//! A snapshot as metric families, independent of the wire format ([`super::text`],
//! [`super::native`] render them).

use std::collections::BTreeMap;

use locktrace_report::{LockReport, Metric, Mode, ModeReport};

use super::{Snapshot, series::Series, series::lock_label};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A histogram of durations: exact count and sum, and the HDR histogram's buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hist {
    pub count: u64,
    pub sum_ns: u64,
    /// (the highest value a recorded HDR bucket stands for, in ns; its count), ascending.
    pub recorded: Vec<(u64, u64)>,
}

impl Hist {
    /// Samples at most `le_ns`, by the HDR buckets' highest equivalent values (the value the
    /// report's percentiles use too).
    pub fn count_le(&self, le_ns: u64) -> u64 {
        self.recorded
            .iter()
            .take_while(|(v, _)| *v <= le_ns)
            .map(|(_, n)| n)
            .fold(0u64, |a, n| a.saturating_add(*n))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter(u64),
    Gauge(f64),
    /// A gauge of a duration in nanoseconds, rendered as exact seconds.
    Seconds(u64),
    Histogram(Hist),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, value: Value) {
        self.samples.push(Sample { labels, value });
    }
}

/// Locks that share a `lock` label (a lock file replaced under the same path) are one series.
type Grouped<'a> = BTreeMap<(String, Mode), Vec<(&'a LockReport, &'a ModeReport)>>;

/// The families of `snap`, with only the lock series `series` exports. Histograms that do not
/// decode are left out and added to `decode_errors`.
pub fn families(snap: &Snapshot, series: &Series, decode_errors: &mut u64) -> Vec<Family> {
    let report = &snap.report;
    let mut grouped: Grouped = BTreeMap::new();
    for lock in &report.locks {
        for (mode, m) in &lock.modes {
            let key = (lock_label(&lock.key).to_string(), *mode);
            if series.is_live(&key) {
                grouped.entry(key).or_default().push((lock, m));
            }
        }
    }
    let mut wait = Family::new(
        "locktrace_lock_wait_seconds",
        Kind::Histogram,
        "Time lock calls spent blocked before getting the lock.",
    );
    let mut hold = Family::new(
        "locktrace_lock_hold_seconds",
        Kind::Histogram,
        "Time locks were held, from grant to release.",
    );
    let mut wait_max = Family::new(
        "locktrace_lock_wait_seconds_max",
        Kind::Gauge,
        "Longest wait since the recording started.",
    );
    let mut hold_max = Family::new(
        "locktrace_lock_hold_seconds_max",
        Kind::Gauge,
        "Longest hold since the recording started.",
    );
    let mut tries = Family::new(
        "locktrace_lock_tries_total",
        Kind::Counter,
        "Lock calls by outcome (refused: a non-blocking F_SETLK found the lock taken).",
    );
    let mut deadlocks = Family::new(
        "locktrace_lock_deadlock_errors_total",
        Kind::Counter,
        "Lock calls the kernel refused with EDEADLK (also in tries outcome=\"error\").",
    );
    let mut not_traced = Family::new(
        "locktrace_lock_holder_not_traced_total",
        Kind::Counter,
        "Waits that were blocked while no traced process held a conflicting lock.",
    );
    for ((label, mode), parts) in &grouped {
        let name = basename(parts[0].0, label);
        let labels = || {
            vec![
                ("lock", label.clone()),
                ("name", name.clone()),
                ("mode", mode.as_str().to_string()),
            ]
        };
        for (metric, family, max_family) in [
            (Metric::Wait, &mut wait, &mut wait_max),
            (Metric::Hold, &mut hold, &mut hold_max),
        ] {
            let Some((hist, max)) = merged(parts, *mode, metric, decode_errors) else {
                continue;
            };
            family.push(labels(), Value::Histogram(hist));
            max_family.push(labels(), Value::Seconds(max));
        }
        let mut t = locktrace_report::TryCounts::default();
        let mut unknown_holder = 0u64;
        for (_, m) in parts {
            t.add(&m.tries);
            unknown_holder = unknown_holder.saturating_add(m.holder_not_traced);
        }
        for (outcome, n) in [
            ("acquired", t.acquired),
            ("refused", t.refused),
            ("error", t.errors),
            ("interrupted", t.interrupted),
        ] {
            let mut l = labels();
            l.push(("outcome", outcome.to_string()));
            tries.push(l, Value::Counter(n));
        }
        deadlocks.push(labels(), Value::Counter(t.edeadlk));
        not_traced.push(labels(), Value::Counter(unknown_holder));
    }
    let mut out = vec![wait, hold, wait_max, hold_max, tries, deadlocks, not_traced];
    out.extend(own(snap, series, *decode_errors));
    out
}

/// The `name` label: the basename of the path, else the lock's name.
fn basename(lock: &LockReport, label: &str) -> String {
    match &lock.key.path {
        Some(p) => p.rsplit('/').next().unwrap_or(p).to_string(),
        None => label.to_string(),
    }
}

/// One metric of a series, its parts added up; with the exact maximum.
fn merged(
    parts: &[(&LockReport, &ModeReport)],
    mode: Mode,
    metric: Metric,
    decode_errors: &mut u64,
) -> Option<(Hist, u64)> {
    let mut values: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut count, mut sum, mut max) = (0u64, 0u64, 0u64);
    for (lock, m) in parts {
        let s = &m.metric(metric).summary;
        let Ok(h) = lock.histogram(mode, metric) else {
            *decode_errors += 1;
            return None;
        };
        for v in h.iter_recorded() {
            let n = values
                .entry(h.highest_equivalent(v.value_iterated_to()))
                .or_default();
            *n = n.saturating_add(v.count_at_value());
        }
        count = count.saturating_add(s.count);
        sum = sum.saturating_add(s.total);
        max = max.max(s.max);
    }
    let hist = Hist {
        count,
        sum_ns: sum,
        recorded: values.into_iter().collect(),
    };
    Some((hist, max))
}

/// The tracer's own families.
fn own(snap: &Snapshot, series: &Series, decode_errors: u64) -> Vec<Family> {
    let meta = &snap.report.meta;
    let d = &meta.drops;
    let mut drops = Family::new(
        "locktrace_drops_total",
        Kind::Counter,
        "Events the tracer missed or could not pair, by kind (the report's drops).",
    );
    for (kind, n) in [
        ("ringbuf_lost", d.ringbuf_lost),
        ("map_full", d.map_full),
        ("unmatched_releases", d.unmatched_releases),
        ("unresolved_names", d.unresolved_names),
        ("stacks_lost", d.stacks_lost),
    ] {
        drops.push(vec![("kind", kind.to_string())], Value::Counter(n));
    }
    let mut held = Family::new(
        "locktrace_locks_held",
        Kind::Gauge,
        "Locks held right now (the report's drops.still_held_at_end when the recording ends).",
    );
    held.push(Vec::new(), Value::Gauge(d.still_held_at_end as f64));
    let mut events = Family::new(
        "locktrace_events_total",
        Kind::Counter,
        "Lock and release events received from the kernel.",
    );
    events.push(Vec::new(), Value::Counter(snap.tracer.events));
    let mut errors = Family::new(
        "locktrace_errors_total",
        Kind::Counter,
        "The tracer's own errors, by kind.",
    );
    for (kind, n) in [
        ("drop_counters_unreadable", snap.tracer.counter_errors),
        ("snapshot_failed", snap.tracer.snapshot_errors),
        ("histogram_undecodable", decode_errors),
    ] {
        errors.push(vec![("kind", kind.to_string())], Value::Counter(n));
    }
    let mut live = Family::new(
        "locktrace_lock_series",
        Kind::Gauge,
        "Lock series (lock and mode) exported now.",
    );
    live.push(Vec::new(), Value::Gauge(series.live() as f64));
    let mut overflow = Family::new(
        "locktrace_series_overflow_total",
        Kind::Counter,
        "Lock series refused because --max-series were exported already.",
    );
    overflow.push(Vec::new(), Value::Counter(series.overflow));
    let mut expired = Family::new(
        "locktrace_series_expired_total",
        Kind::Counter,
        "Lock series dropped after --expire without a new sample.",
    );
    expired.push(Vec::new(), Value::Counter(series.expired));
    let mut duration = Family::new(
        "locktrace_recording_seconds",
        Kind::Gauge,
        "How long the recording has run.",
    );
    duration.push(Vec::new(), Value::Seconds(meta.duration_ns));
    let mut info = Family::new(
        "locktrace_build_info",
        Kind::Gauge,
        "Always 1: the tracer's version, attach mode and kernel release.",
    );
    info.push(
        vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("attach", meta.attach.clone().unwrap_or_default()),
            ("kernel", meta.kernel.clone().unwrap_or_default()),
        ],
        Value::Gauge(1.0),
    );
    vec![
        drops, held, events, errors, live, overflow, expired, duration, info,
    ]
}
