use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;

use crate::blockers::{BlockerAcc, Holder};
use crate::error::ReportError;
use crate::histogram::{MAX_SAMPLES, new_histogram};
use crate::lock_order::{OrderAcc, OrderExample};
use crate::model::{
    Actor, ActorStat, LockKey, LockReport, Metric, MetricReport, Mode, ModeReport, Report,
    ReportMeta, SCHEMA_VERSION, Summary, TOP_ACTORS, TryCounts, TryOutcome,
};
use crate::stacks::{Frames, MetricStacksAcc, Stacks};

/// Aggregates individual lock samples into a [`Report`].
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    locks: BTreeMap<LockKey, BTreeMap<Mode, ModeAcc>>,
    order: OrderAcc,
}

/// Everything known about one mode of one lock: (count, total) per actor for the top lists.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModeAcc {
    wait: MetricAcc,
    hold: MetricAcc,
    tries: TryCounts,
    waiters: HashMap<Actor, (u64, u64)>,
    holders: HashMap<Actor, (u64, u64)>,
    blockers: BlockerAcc,
    wait_stacks: MetricStacksAcc,
    hold_stacks: MetricStacksAcc,
}

impl ModeAcc {
    /// Adds a stored mode report (histograms decoded, counts and top lists summed). Sums that
    /// would not fit (samples past [`MAX_SAMPLES`], time or try counts past `u64::MAX`) are
    /// refused, not wrapped or silently saturated.
    pub(crate) fn absorb(
        &mut self,
        lock: &LockReport,
        mode: Mode,
        report: &ModeReport,
    ) -> Result<(), ReportError> {
        for metric in Metric::ALL {
            let hist = lock.histogram(mode, metric)?;
            let acc = match metric {
                Metric::Wait => &mut self.wait,
                Metric::Hold => &mut self.hold,
            };
            acc.absorb(&hist, &report.metric(metric).summary)
                .map_err(|reason| ReportError::Histogram {
                    at: format!("{} {mode} {metric}", lock.key),
                    reason,
                })?;
        }
        self.tries = self.tries.checked_add(&report.tries).ok_or_else(|| {
            ReportError::Merge(format!(
                "{} {mode}: try-lock counts add up past 2^64",
                lock.key
            ))
        })?;
        self.blockers
            .absorb(
                &report.blockers,
                report.blockers_others.as_ref(),
                report.holder_not_traced,
            )
            .map_err(|reason| ReportError::Merge(format!("{} {mode}: {reason}", lock.key)))?;
        for (acc, stored) in [
            (&mut self.wait_stacks, &report.stacks.wait),
            (&mut self.hold_stacks, &report.stacks.hold),
        ] {
            acc.absorb(stored).map_err(|reason| {
                ReportError::Merge(format!("{} {mode} stacks: {reason}", lock.key))
            })?;
        }
        add_actors(&mut self.waiters, &report.top_waiters);
        add_actors(&mut self.holders, &report.top_holders);
        Ok(())
    }

    pub(crate) fn report(&self) -> ModeReport {
        let (blockers, blockers_others, holder_not_traced) = self.blockers.report();
        ModeReport {
            wait: self.wait.report(),
            hold: self.hold.report(),
            tries: self.tries,
            top_waiters: top_actors(&self.waiters),
            top_holders: top_actors(&self.holders),
            blockers,
            blockers_others,
            holder_not_traced,
            stacks: Stacks {
                wait: self.wait_stacks.report(),
                hold: self.hold_stacks.report(),
            },
        }
    }
}

fn add_actors(into: &mut HashMap<Actor, (u64, u64)>, stats: &[ActorStat]) {
    for a in stats {
        let actor = Actor {
            pid: a.pid,
            comm: a.comm.clone(),
        };
        add_share(into, actor, (a.count, a.total));
    }
}

/// Adds `count` samples totalling `total` ns to `actor`'s share. Top lists are approximate already
/// (re-ranked from top lists or summed per CPU); saturating is enough.
fn add_share(into: &mut HashMap<Actor, (u64, u64)>, actor: Actor, (count, total): (u64, u64)) {
    let e = into.entry(actor).or_default();
    e.0 = e.0.saturating_add(count);
    e.1 = e.1.saturating_add(total);
}

/// The largest sample an auto-resizing histogram records (its top is half of `u64::MAX`).
const MAX_RECORDABLE: u64 = u64::MAX / 2;

/// A histogram plus the exact values the histogram can only approximate.
#[derive(Debug, Clone)]
struct MetricAcc {
    hist: Histogram<u64>,
    total: u64,
    min: u64,
    max: u64,
}

impl Default for MetricAcc {
    fn default() -> Self {
        MetricAcc {
            hist: new_histogram(),
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl MetricAcc {
    fn record(&mut self, nanos: u64) {
        // Auto-resizing histograms cover up to 2^63ns (centuries); clamp beyond that rather than
        // lose the sample, and keep the exact values on the same clamped sample so the summary
        // still agrees with the histogram.
        let nanos = nanos.min(MAX_RECORDABLE);
        if self.hist.record(nanos).is_err() {
            self.hist.saturating_record(nanos);
        }
        self.total = self.total.saturating_add(nanos);
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
    }

    /// Adds a stored metric; `min`/`max`/`total` stay exact because the summary carries them.
    /// Sample counts past [`MAX_SAMPLES`] or total time past `u64::MAX` are an error: the sum
    /// would be a lie.
    fn absorb(&mut self, hist: &Histogram<u64>, summary: &Summary) -> Result<(), String> {
        if hist.is_empty() {
            return Ok(());
        }
        // The stored encoding carries counters as i64; a sum that fits there fits every counter.
        self.hist
            .len()
            .checked_add(hist.len())
            .filter(|&n| n <= MAX_SAMPLES)
            .ok_or("sample counts add up past 2^63-1, more than a histogram stores")?;
        let total = self
            .total
            .checked_add(summary.total)
            .ok_or("total time adds up past 2^64 ns")?;
        self.hist.add(hist).map_err(|e| format!("{e:?}"))?;
        self.total = total;
        self.min = self.min.min(summary.min);
        self.max = self.max.max(summary.max);
        Ok(())
    }

    fn report(&self) -> MetricReport {
        let min = if self.hist.is_empty() { 0 } else { self.min };
        // Encoding an in-memory histogram into a Vec cannot fail.
        MetricReport::from_histogram(&self.hist, self.total, min, self.max)
            .expect("in-memory histogram encodes")
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder::default()
    }

    pub fn record(
        &mut self,
        lock: &LockKey,
        mode: Mode,
        metric: Metric,
        nanos: u64,
        actor: &Actor,
    ) {
        let acc = self.mode_acc(lock, mode);
        let (metric_acc, actors) = match metric {
            Metric::Wait => (&mut acc.wait, &mut acc.waiters),
            Metric::Hold => (&mut acc.hold, &mut acc.holders),
        };
        metric_acc.record(nanos);
        // Look up before inserting so the common case does not clone the actor's name.
        match actors.get_mut(actor) {
            Some(entry) => {
                entry.0 = entry.0.saturating_add(1);
                entry.1 = entry.1.saturating_add(nanos);
            }
            None => {
                actors.insert(actor.clone(), (1, nanos));
            }
        }
    }

    /// A wait of `nanos` that found `holders` holding a conflicting lock when it started: it
    /// counts for each of them.
    pub fn record_blocked<'a>(
        &mut self,
        lock: &LockKey,
        mode: Mode,
        holders: impl IntoIterator<Item = &'a Holder>,
        nanos: u64,
    ) {
        // Clamped as the wait histogram clamps it, so the blockers never outgrow the waits.
        let nanos = nanos.min(MAX_RECORDABLE);
        let acc = &mut self.mode_acc(lock, mode).blockers;
        for holder in holders {
            acc.record(holder, nanos);
        }
    }

    /// The stack of a sample already passed to [`Recorder::record`].
    pub fn record_stack(
        &mut self,
        lock: &LockKey,
        mode: Mode,
        metric: Metric,
        frames: &Frames,
        nanos: u64,
    ) {
        // Clamped as the metric's histogram clamps it, so the stacks add up to the metric.
        let nanos = nanos.min(MAX_RECORDABLE);
        let acc = self.mode_acc(lock, mode);
        match metric {
            Metric::Wait => acc.wait_stacks.record(frames, nanos),
            Metric::Hold => acc.hold_stacks.record(frames, nanos),
        }
    }

    /// Adds a metric aggregated elsewhere (the kernel's summary mode): its histogram and the exact
    /// total, minimum and maximum of its samples.
    pub fn absorb_metric(
        &mut self,
        lock: &LockKey,
        mode: Mode,
        metric: Metric,
        hist: &Histogram<u64>,
        (total, min, max): (u64, u64, u64),
    ) -> Result<(), ReportError> {
        let summary = Summary {
            count: hist.len(),
            total,
            min,
            max,
            ..Summary::default()
        };
        let acc = self.mode_acc(lock, mode);
        let acc = match metric {
            Metric::Wait => &mut acc.wait,
            Metric::Hold => &mut acc.hold,
        };
        acc.absorb(hist, &summary)
            .map_err(|reason| ReportError::Histogram {
                at: format!("{lock} {mode} {metric}"),
                reason,
            })
    }

    /// Adds try-lock outcomes counted elsewhere.
    pub fn add_tries(&mut self, lock: &LockKey, mode: Mode, tries: &TryCounts) {
        self.mode_acc(lock, mode).tries.add(tries);
    }

    /// Adds one process's share of a metric counted elsewhere: `count` samples totalling `total` ns.
    pub fn add_actor(
        &mut self,
        lock: &LockKey,
        mode: Mode,
        metric: Metric,
        actor: &Actor,
        (count, total): (u64, u64),
    ) {
        let acc = self.mode_acc(lock, mode);
        let actors = match metric {
            Metric::Wait => &mut acc.waiters,
            Metric::Hold => &mut acc.holders,
        };
        add_share(actors, actor.clone(), (count, total));
    }

    /// A wait that was blocked by a holder the trace did not see.
    pub fn record_holder_not_traced(&mut self, lock: &LockKey, mode: Mode) {
        self.mode_acc(lock, mode).blockers.holder_not_traced();
    }

    /// A lock call the kernel refused with EDEADLK (counted among the errors, too).
    pub fn record_deadlock(&mut self, lock: &LockKey, mode: Mode) {
        let tries = &mut self.mode_acc(lock, mode).tries;
        tries.edeadlk = tries.edeadlk.saturating_add(1);
    }

    /// `actor` took `taken` (in `taken_mode`, from stack `taken_stack`) while holding `held` (in
    /// `held_mode`, taken from `held_stack`). Locks are named by path, or by name and inode when
    /// the path is unknown; taking the same one again is no edge.
    pub fn record_order(
        &mut self,
        (held, held_mode, held_stack): (&LockKey, Mode, Option<&Frames>),
        (taken, taken_mode, taken_stack): (&LockKey, Mode, Option<&Frames>),
        actor: &Actor,
    ) {
        self.order
            .record(&order_name(held), &order_name(taken), || OrderExample {
                pid: actor.pid,
                comm: actor.comm.clone(),
                held_mode,
                taken_mode,
                held_stack: held_stack.map(|f| f.to_vec()),
                taken_stack: taken_stack.map(|f| f.to_vec()),
            });
    }

    pub fn record_try(&mut self, lock: &LockKey, mode: Mode, outcome: TryOutcome) {
        self.mode_acc(lock, mode).tries.count(outcome);
    }

    pub fn finish(self, meta: ReportMeta) -> Report {
        self.snapshot(meta)
    }

    /// The report so far, leaving the recorder untouched (for periodic live output).
    pub fn snapshot(&self, meta: ReportMeta) -> Report {
        let locks = self
            .locks
            .iter()
            .map(|(key, modes)| LockReport {
                key: key.clone(),
                modes: modes
                    .iter()
                    .map(|(mode, acc)| (*mode, acc.report()))
                    .collect(),
            })
            .collect();
        Report {
            schema_version: SCHEMA_VERSION,
            meta,
            locks,
            lock_order: self.order.report(),
        }
    }

    fn mode_acc(&mut self, lock: &LockKey, mode: Mode) -> &mut ModeAcc {
        // Avoid cloning the key on the hot path when the lock is already known.
        if !self.locks.contains_key(lock) {
            self.locks.insert(lock.clone(), BTreeMap::new());
        }
        self.locks
            .get_mut(lock)
            .expect("inserted above")
            .entry(mode)
            .or_default()
    }
}

/// A lock file's name in the lock order: its path, else its name and inode, so two same-named
/// files of unknown path stay apart.
fn order_name(key: &LockKey) -> String {
    match (&key.path, key.ino) {
        (Some(path), _) => path.clone(),
        (None, Some(ino)) => format!("{} (inode {ino})", key.name),
        (None, None) => key.name.clone(),
    }
}

fn top_actors(actors: &HashMap<Actor, (u64, u64)>) -> Vec<ActorStat> {
    top_n(
        actors
            .iter()
            .map(|(actor, (count, total))| ActorStat {
                pid: actor.pid,
                comm: actor.comm.clone(),
                count: *count,
                total: *total,
            })
            .collect(),
    )
}

/// Keeps the [`TOP_ACTORS`] largest by total time, ties broken by pid so output is deterministic.
fn top_n(mut stats: Vec<ActorStat>) -> Vec<ActorStat> {
    stats.sort_by(|a, b| {
        b.total
            .cmp(&a.total)
            .then(a.pid.cmp(&b.pid))
            .then(a.comm.cmp(&b.comm))
    });
    stats.truncate(TOP_ACTORS);
    stats
}
