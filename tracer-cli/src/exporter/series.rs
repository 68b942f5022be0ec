//! Bounded cardinality: which lock series (lock label × mode) are exported. A series without a new
//! sample for the expiry time is dropped; past the cap new series are refused and counted. A
//! dropped or refused series comes back (with its counts since the start) when it gets samples
//! again and there is room.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use locktrace_report::{Mode, Report};

/// A lock series' identity: the `lock` label and the mode.
pub type SeriesKey = (String, Mode);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    /// Wants a slot and did not get one; counted once as overflow.
    Refused,
    /// Dropped (expired) or given up while refused.
    Idle,
}

#[derive(Debug)]
struct Entry {
    /// Wait count, hold count and tries: a change means a new sample.
    seen: (u64, u64, u64),
    changed: Instant,
    state: State,
}

#[derive(Debug)]
pub struct Series {
    expire: Duration,
    max: usize,
    table: HashMap<SeriesKey, Entry>,
    /// Keys in the order first seen, so admission is stable.
    order: Vec<SeriesKey>,
    live: usize,
    pub overflow: u64,
    pub expired: u64,
}

/// The `lock` label of a lock: its path, else its name.
pub fn lock_label(key: &locktrace_report::LockKey) -> &str {
    key.path.as_deref().unwrap_or(&key.name)
}

impl Series {
    pub fn new(expire: Duration, max: usize) -> Series {
        Series {
            expire,
            max,
            table: HashMap::new(),
            order: Vec::new(),
            live: 0,
            overflow: 0,
            expired: 0,
        }
    }

    /// Series exported now.
    pub fn live(&self) -> usize {
        self.live
    }

    pub fn is_live(&self, key: &SeriesKey) -> bool {
        self.table.get(key).is_some_and(|e| e.state == State::Live)
    }

    /// Takes in a snapshot taken at `now`: notes which series got samples, expires, admits.
    pub fn update(&mut self, report: &Report, now: Instant) {
        // Locks sharing a label (same path, another inode) are one series: sum their counts.
        // Sorted, so which series get the last free slots does not depend on hashing.
        let mut counts: BTreeMap<SeriesKey, (u64, u64, u64)> = BTreeMap::new();
        for lock in &report.locks {
            for (mode, m) in &lock.modes {
                let c = counts
                    .entry((lock_label(&lock.key).to_string(), *mode))
                    .or_default();
                c.0 = c.0.saturating_add(m.wait.summary.count);
                c.1 = c.1.saturating_add(m.hold.summary.count);
                c.2 = c.2.saturating_add(m.tries.total());
            }
        }
        for (key, seen) in counts {
            match self.table.get_mut(&key) {
                Some(e) if e.seen == seen => {}
                Some(e) => {
                    e.seen = seen;
                    e.changed = now;
                }
                None => {
                    self.order.push(key.clone());
                    self.table.insert(
                        key,
                        Entry {
                            seen,
                            changed: now,
                            // Not yet refused: a fresh series waiting for its first slot.
                            state: State::Idle,
                        },
                    );
                }
            }
        }
        for e in self.table.values_mut() {
            let stale = now.saturating_duration_since(e.changed) >= self.expire;
            match (e.state, stale) {
                (State::Live, true) => {
                    e.state = State::Idle;
                    self.live -= 1;
                    self.expired += 1;
                }
                (State::Refused, true) => e.state = State::Idle,
                _ => {}
            }
        }
        for key in &self.order {
            let Some(e) = self.table.get_mut(key) else {
                continue;
            };
            let wants = e.state != State::Live
                && now.saturating_duration_since(e.changed) < self.expire
                && (e.state == State::Refused || e.changed == now);
            if !wants {
                continue;
            }
            if self.live < self.max {
                e.state = State::Live;
                self.live += 1;
            } else if e.state != State::Refused {
                e.state = State::Refused;
                self.overflow += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locktrace_report::{Actor, LockKey, Metric, Recorder, ReportMeta, Source};

    fn key(path: &str) -> LockKey {
        LockKey {
            path: Some(path.to_string()),
            ..LockKey::named(path.rsplit('/').next().unwrap())
        }
    }

    fn hold(rec: &mut Recorder, path: &str) {
        let actor = Actor {
            pid: 1,
            comm: "t".into(),
        };
        rec.record(&key(path), Mode::Write, Metric::Hold, 1_000, &actor);
    }

    fn snap(rec: &Recorder) -> Report {
        rec.snapshot(ReportMeta::new("test", Source::Kernel))
    }

    fn live(s: &Series, path: &str) -> bool {
        s.is_live(&(path.to_string(), Mode::Write))
    }

    #[test]
    fn series_without_samples_expire_and_come_back() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut s = Series::new(10 * min, 10);
        let mut rec = Recorder::new();
        hold(&mut rec, "/a.lock");
        hold(&mut rec, "/b.lock");
        s.update(&snap(&rec), t0);
        assert!(live(&s, "/a.lock") && live(&s, "/b.lock"));
        // b keeps getting samples, a does not.
        hold(&mut rec, "/b.lock");
        s.update(&snap(&rec), t0 + 9 * min);
        assert!(live(&s, "/a.lock"));
        s.update(&snap(&rec), t0 + 10 * min);
        assert!(!live(&s, "/a.lock") && live(&s, "/b.lock"));
        assert_eq!((s.live(), s.expired, s.overflow), (1, 1, 0));
        // A new sample brings a back.
        hold(&mut rec, "/a.lock");
        s.update(&snap(&rec), t0 + 11 * min);
        assert!(live(&s, "/a.lock"));
        assert_eq!(s.live(), 2);
    }

    #[test]
    fn past_the_cap_series_are_refused_once_each_and_admitted_when_room_frees() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut s = Series::new(60 * sec, 2);
        let mut rec = Recorder::new();
        for p in ["/a.lock", "/b.lock", "/c.lock", "/d.lock"] {
            hold(&mut rec, p);
        }
        s.update(&snap(&rec), t0);
        assert!(live(&s, "/a.lock") && live(&s, "/b.lock"));
        assert!(!live(&s, "/c.lock") && !live(&s, "/d.lock"));
        assert_eq!((s.live(), s.overflow), (2, 2));
        // Refused again on the next scrape: not counted twice.
        s.update(&snap(&rec), t0 + sec);
        assert_eq!(s.overflow, 2);
        // a and b go quiet and expire; c is still active and takes a slot, d has gone quiet too.
        hold(&mut rec, "/c.lock");
        s.update(&snap(&rec), t0 + 30 * sec);
        s.update(&snap(&rec), t0 + 61 * sec);
        assert!(!live(&s, "/a.lock") && !live(&s, "/b.lock"));
        assert!(live(&s, "/c.lock") && !live(&s, "/d.lock"));
        assert_eq!((s.live(), s.expired, s.overflow), (1, 2, 2));
    }

    #[test]
    fn a_zero_cap_exports_no_lock_series() {
        let mut s = Series::new(Duration::from_secs(1), 0);
        let mut rec = Recorder::new();
        hold(&mut rec, "/a.lock");
        s.update(&snap(&rec), Instant::now());
        assert_eq!((s.live(), s.overflow), (0, 1));
    }
}
