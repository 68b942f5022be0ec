//! Prometheus `/metrics` while `locktrace record --listen ADDR:PORT` runs.
//!
//! The record loop keeps the one set of aggregates (the [`Recorder`](locktrace_report::Recorder));
//! when a scrape arrives the server asks the loop for a fresh [`Report`] snapshot, the same value
//! the JSON report is written from, and renders it. The exporter adds no second bookkeeping: only
//! which lock series it still exports ([`series`]).
//!
//! Families (every duration in seconds; `lock` is the path, or the name when the path is unknown;
//! `name` its basename; `mode` `read` or `write`):
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `locktrace_lock_wait_seconds` | histogram | lock, name, mode |
//! | `locktrace_lock_hold_seconds` | histogram | lock, name, mode |
//! | `locktrace_lock_wait_seconds_max`, `locktrace_lock_hold_seconds_max` | gauge | lock, name, mode |
//! | `locktrace_lock_tries_total` | counter | lock, name, mode, outcome |
//! | `locktrace_lock_deadlock_errors_total` | counter | lock, name, mode |
//! | `locktrace_lock_holder_not_traced_total` | counter | lock, name, mode |
//! | `locktrace_drops_total` | counter | kind |
//! | `locktrace_locks_held` | gauge | |
//! | `locktrace_events_total` | counter | |
//! | `locktrace_errors_total` | counter | kind |
//! | `locktrace_lock_series`, `locktrace_series_overflow_total`, `locktrace_series_expired_total` | gauge, counters | |
//! | `locktrace_recording_seconds` | gauge | |
//! | `locktrace_build_info` | gauge | version, attach, kernel |
//!
//! Histograms come as classic buckets ([`BUCKETS_NS`]) in the text format and, when the scraper
//! negotiates protobuf, also as native histograms ([`native::SCHEMA`]). Bucket counts come from
//! the report's HDR histograms (3 significant digits: a sample within 0.1% of a bucket boundary
//! may be counted on the other side of it); `_count`, `_sum` and `_max` are the report's exact
//! figures.

mod metrics;
pub mod native;
pub mod series;
mod server;
pub mod text;

use std::{
    net::SocketAddr,
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use locktrace_report::Report;

pub use metrics::{Family, Kind, Sample, Value, families};
pub use series::Series;

/// Classic bucket bounds in nanoseconds: 1-2-5 per decade from 1 µs to 50 s, then 60 s.
pub const BUCKETS_NS: [u64; 25] = {
    let mut b = [0u64; 25];
    let mut decade = 1_000u64;
    let mut i = 0;
    while i < 24 {
        b[i] = decade;
        b[i + 1] = decade * 2;
        b[i + 2] = decade * 5;
        decade *= 10;
        i += 3;
    }
    b[24] = 60_000_000_000;
    b
};

/// Lock series are dropped after this long without a new sample, by default.
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(600);
/// At most this many lock series (lock × mode), by default.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// A scrape waits this long at most for the record loop to take a fresh snapshot.
const FRESH_WAIT: Duration = Duration::from_secs(1);
/// A snapshot younger than this answers a scrape without asking for a new one (several scrapers).
const FRESH_ENOUGH: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct ExporterOptions {
    pub listen: SocketAddr,
    /// Drop a lock series after this long without a new sample.
    pub expire: Duration,
    /// Export at most this many lock series; the rest are counted as overflow.
    pub max_series: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("--listen {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("--listen: cannot start the HTTP thread: {0}")]
    Thread(std::io::Error),
}

/// What the record loop hands the exporter besides the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TracerStats {
    /// Kernel lock and release events received.
    pub events: u64,
    /// Kernel drop counters that could not be read (the report's drops then lack them).
    pub counter_errors: u64,
    /// Snapshots that could not be taken (summary mode's kernel maps unreadable): the scrape
    /// serves the previous one.
    pub snapshot_errors: u64,
}

/// One published state of the recording.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub report: Report,
    pub tracer: TracerStats,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    /// A scrape is waiting for a fresh snapshot.
    wanted: bool,
    latest: Option<Arc<Snapshot>>,
    generation: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    published: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking holder cannot leave State inconsistent: every field is written whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest snapshot, asking the record loop for a new one unless it is fresh enough.
    fn fresh(&self) -> Option<Arc<Snapshot>> {
        let mut state = self.lock();
        if let Some(s) = &state.latest
            && s.at.elapsed() < FRESH_ENOUGH
        {
            return Some(s.clone());
        }
        let asked = state.generation;
        state.wanted = true;
        let (state, _) = self
            .published
            .wait_timeout_while(state, FRESH_WAIT, |s| s.generation == asked)
            .unwrap_or_else(|e| e.into_inner());
        state.latest.clone()
    }
}

/// The running exporter: an HTTP thread serving `/metrics` from the snapshots the record loop
/// publishes. Dropping it stops the thread.
pub struct Exporter {
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Binds `opts.listen` and starts serving; scrapes before the first snapshot get a 503.
    pub fn start(opts: &ExporterOptions) -> Result<Exporter, ExporterError> {
        let server = tiny_http::Server::http(opts.listen).map_err(|e| ExporterError::Bind {
            addr: opts.listen,
            reason: e.to_string(),
        })?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared::default());
        let series = Series::new(opts.expire, opts.max_series);
        let thread = std::thread::Builder::new()
            .name("locktrace-exporter".into())
            .spawn({
                let (server, shared) = (server.clone(), shared.clone());
                move || server::serve(&server, &shared, series)
            })
            .map_err(ExporterError::Thread)?;
        Ok(Exporter {
            shared,
            server,
            thread: Some(thread),
        })
    }

    /// True when a scrape waits for a snapshot: the record loop should [`publish`](Self::publish).
    pub fn wanted(&self) -> bool {
        self.shared.lock().wanted
    }

    pub fn publish(&self, report: Report, tracer: TracerStats) {
        let snapshot = Arc::new(Snapshot {
            report,
            tracer,
            at: Instant::now(),
        });
        let mut state = self.shared.lock();
        state.latest = Some(snapshot);
        state.generation += 1;
        state.wanted = false;
        drop(state);
        self.shared.published.notify_all();
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The decimal seconds of `ns`, exact (no float rounding): `1500` → `0.0000015`.
pub fn seconds(ns: u64) -> String {
    let (s, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{s}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log_spaced_from_1us_to_60s() {
        assert_eq!(BUCKETS_NS[0], 1_000);
        assert_eq!(&BUCKETS_NS[..4], &[1_000, 2_000, 5_000, 10_000]);
        assert_eq!(BUCKETS_NS[23], 50_000_000_000);
        assert_eq!(BUCKETS_NS[24], 60_000_000_000);
        assert!(BUCKETS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_000), "0.000001");
        assert_eq!(seconds(1_500), "0.0000015");
        assert_eq!(seconds(60_000_000_000), "60");
        assert_eq!(seconds(1_234_567_891), "1.234567891");
        assert_eq!(seconds(u64::MAX), "18446744073.709551615");
    }
}
