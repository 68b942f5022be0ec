//! Which code paths waited for and held a lock: per lock mode and metric, the user stacks of the
//! lock calls (`locktrace record --stacks`) with their count, total, p99 and longest duration.
//!
//! A hold belongs to the stack of the call that took the lock; a wait to the stack of the call that
//! waited. Every sample of a recording with stacks has one, so a stack table adds up to its metric:
//! a stack the kernel could not capture is the pseudo-frame [`LOST_STACK`], not a missing sample.

use std::{collections::HashMap, sync::Arc};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::histogram::{self, MAX_SAMPLES, new_histogram};

/// Stacks a report lists per mode and metric, by total time; the rest are summed into
/// [`StackOthers`].
pub const TOP_STACKS: usize = 64;

/// Distinct stacks a recorder tracks per mode and metric; samples of further stacks go straight
/// into [`StackOthers`], so memory stays bounded on a long system-wide run.
pub const MAX_TRACKED_STACKS: usize = 4096;

/// The single frame of a stack the kernel was asked for and could not capture.
pub const LOST_STACK: &str = "[stack lost]";

/// A stack, leaf first: function names, or `module+0xoffset` / `[unknown] 0x…` for frames that
/// could not be named.
pub type Frames = Arc<[String]>;

/// One stack and the samples taken from it; durations in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackStat {
    /// Leaf first.
    pub frames: Vec<String>,
    pub count: u64,
    pub total_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// The samples' HdrHistogram, encoded as the metric histograms are, so merges stay exact.
    pub histogram: String,
}

/// The stacks past the top ones, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackOthers {
    /// Distinct stacks summed here (merged reports add their counts).
    pub stacks: u64,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

/// The stacks of one metric.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricStacks {
    /// The top [`TOP_STACKS`] by total time, largest first.
    pub top: Vec<StackStat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others: Option<StackOthers>,
}

impl MetricStacks {
    pub fn is_empty(&self) -> bool {
        self.top.is_empty() && self.others.is_none()
    }

    /// Samples listed, top and others.
    pub fn count(&self) -> u64 {
        let top = self.top.iter().map(|s| s.count);
        top.chain(self.others.map(|o| o.count))
            .fold(0, u64::saturating_add)
    }
}

/// The stacks of one lock mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stacks {
    #[serde(default, skip_serializing_if = "MetricStacks::is_empty")]
    pub wait: MetricStacks,
    #[serde(default, skip_serializing_if = "MetricStacks::is_empty")]
    pub hold: MetricStacks,
}

impl Stacks {
    pub fn is_empty(&self) -> bool {
        self.wait.is_empty() && self.hold.is_empty()
    }
}

/// Samples of one stack: the histogram plus the exact total and maximum.
#[derive(Debug, Clone)]
struct StackAcc {
    hist: Histogram<u64>,
    total: u64,
    max: u64,
}

impl StackAcc {
    fn new() -> Self {
        StackAcc {
            hist: new_histogram(),
            total: 0,
            max: 0,
        }
    }
}

/// Accumulates the stacks of one metric of one lock mode.
#[derive(Debug, Clone, Default)]
pub(crate) struct MetricStacksAcc {
    stacks: HashMap<Frames, StackAcc>,
    others: StackOthers,
}

impl MetricStacksAcc {
    /// A sample of `nanos` (already clamped as the metric's histogram clamps it) taken by `frames`.
    pub(crate) fn record(&mut self, frames: &Frames, nanos: u64) {
        let tracked = self.stacks.len();
        if tracked >= MAX_TRACKED_STACKS && !self.stacks.contains_key(frames) {
            let o = &mut self.others;
            o.stacks = o.stacks.saturating_add(1);
            o.count = o.count.saturating_add(1);
            o.total_ns = o.total_ns.saturating_add(nanos);
            o.max_ns = o.max_ns.max(nanos);
            return;
        }
        // Looked up first so the common case (a known stack) does not clone the frames.
        let acc = match self.stacks.get_mut(frames) {
            Some(acc) => acc,
            None => self
                .stacks
                .entry(frames.clone())
                .or_insert_with(StackAcc::new),
        };
        // `record` grows the histogram; saturating only past its auto-resize limit.
        if acc.hist.record(nanos).is_err() {
            acc.hist.saturating_record(nanos);
        }
        acc.total = acc.total.saturating_add(nanos);
        acc.max = acc.max.max(nanos);
    }

    /// Adds stored stacks; counts or totals that would pass `u64` are refused.
    pub(crate) fn absorb(&mut self, stored: &MetricStacks) -> Result<(), String> {
        const OVERFLOW: &str = "stack counts add up past 2^64";
        for s in &stored.top {
            let hist = histogram::decode(&s.histogram)?;
            let frames: Frames = s.frames.clone().into();
            let acc = self.stacks.entry(frames).or_insert_with(StackAcc::new);
            acc.hist
                .len()
                .checked_add(hist.len())
                .filter(|&n| n <= MAX_SAMPLES)
                .ok_or(OVERFLOW)?;
            acc.total = acc.total.checked_add(s.total_ns).ok_or(OVERFLOW)?;
            acc.hist.add(&hist).map_err(|e| format!("{e:?}"))?;
            acc.max = acc.max.max(s.max_ns);
        }
        if let Some(o) = &stored.others {
            self.others = add_others(&self.others, o).ok_or(OVERFLOW)?;
        }
        Ok(())
    }

    /// The top [`TOP_STACKS`] by total (ties by frames), the rest summed.
    pub(crate) fn report(&self) -> MetricStacks {
        let mut all: Vec<(&Frames, &StackAcc)> = self.stacks.iter().collect();
        all.sort_by(|a, b| b.1.total.cmp(&a.1.total).then_with(|| a.0.cmp(b.0)));
        let mut others = self.others;
        for (_, acc) in all.iter().skip(TOP_STACKS) {
            let one = StackOthers {
                stacks: 1,
                count: acc.hist.len(),
                total_ns: acc.total,
                max_ns: acc.max,
            };
            others = add_others(&others, &one).unwrap_or(others);
        }
        let top = all
            .into_iter()
            .take(TOP_STACKS)
            .map(|(frames, acc)| StackStat {
                frames: frames.to_vec(),
                count: acc.hist.len(),
                total_ns: acc.total,
                p99_ns: acc.hist.value_at_quantile(0.99).min(acc.max),
                max_ns: acc.max,
                // Encoding an in-memory histogram into a Vec cannot fail.
                histogram: histogram::encode(&acc.hist).expect("in-memory histogram encodes"),
            })
            .collect();
        MetricStacks {
            top,
            others: (others.count > 0).then_some(others),
        }
    }
}

fn add_others(a: &StackOthers, b: &StackOthers) -> Option<StackOthers> {
    Some(StackOthers {
        stacks: a.stacks.checked_add(b.stacks)?,
        count: a.count.checked_add(b.count)?,
        total_ns: a.total_ns.checked_add(b.total_ns)?,
        max_ns: a.max_ns.max(b.max_ns),
    })
}

/// Checks stored stacks against themselves and their metric (`count` samples, the longest `max`
/// ns): at most [`TOP_STACKS`], no stack twice or empty, each histogram holding the stated count
/// and maximum, and no more samples listed than the metric has.
pub(crate) fn check(stacks: &MetricStacks, count: u64, max: u64) -> Result<(), String> {
    if stacks.top.len() > TOP_STACKS {
        return Err(format!(
            "{} stacks listed, more than the {TOP_STACKS} a report keeps",
            stacks.top.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, s) in stacks.top.iter().enumerate() {
        let who = format!("stack {}", i + 1);
        if s.frames.is_empty() {
            return Err(format!("{who} has no frames"));
        }
        if !seen.insert(&s.frames) {
            return Err(format!("{who} is listed twice"));
        }
        let hist = histogram::decode(&s.histogram).map_err(|e| format!("{who}: {e}"))?;
        if hist.len() != s.count || s.count == 0 {
            return Err(format!(
                "{who} states {} samples, its histogram holds {}",
                s.count,
                hist.len()
            ));
        }
        if !hist.equivalent(hist.max(), s.max_ns) || s.max_ns > max || s.p99_ns > s.max_ns {
            return Err(format!(
                "{who}'s longest sample {} ns does not fit its histogram or the metric's {max} ns",
                s.max_ns
            ));
        }
        if s.max_ns > s.total_ns
            || u128::from(s.max_ns) * u128::from(s.count) < u128::from(s.total_ns)
        {
            return Err(format!(
                "{who}'s longest sample {} ns does not fit its {} samples totalling {} ns",
                s.max_ns, s.count, s.total_ns
            ));
        }
    }
    if let Some(o) = &stacks.others
        && (o.stacks == 0 || o.count == 0 || o.max_ns > max)
    {
        return Err(
            "other stacks: no stacks, no samples or a sample longer than the metric's".into(),
        );
    }
    if stacks.count() > count {
        return Err(format!(
            "stacks list {} samples, but the metric has {count}",
            stacks.count()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Frames {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stacks_are_ranked_by_total_and_keep_exact_totals_and_maxima() {
        let mut acc = MetricStacksAcc::default();
        let a = frames(&["fcntl", "lock_a", "main"]);
        let b = frames(&["fcntl", "lock_b", "main"]);
        for n in [100, 200, 300] {
            acc.record(&a, n);
        }
        acc.record(&b, 10_000);
        let r = acc.report();
        assert_eq!(r.top.len(), 2);
        assert_eq!(r.top[0].frames, b.to_vec());
        assert_eq!(
            (r.top[1].count, r.top[1].total_ns, r.top[1].max_ns),
            (3, 600, 300)
        );
        assert_eq!(r.others, None);
        check(&r, 4, 10_000).unwrap();
    }

    #[test]
    fn stacks_past_the_top_are_summed_into_others() {
        let mut acc = MetricStacksAcc::default();
        for i in 0..TOP_STACKS as u64 + 3 {
            acc.record(&frames(&[&format!("f{i}")]), 1000 + i);
        }
        let r = acc.report();
        assert_eq!(r.top.len(), TOP_STACKS);
        let o = r.others.unwrap();
        assert_eq!((o.stacks, o.count), (3, 3));
        assert_eq!(o.total_ns, 1000 + 1001 + 1002);
        assert_eq!(r.count(), TOP_STACKS as u64 + 3);
    }

    #[test]
    fn untracked_stacks_beyond_the_limit_still_count() {
        let mut acc = MetricStacksAcc::default();
        for i in 0..MAX_TRACKED_STACKS as u64 + 5 {
            acc.record(&frames(&[&format!("f{i}")]), 10);
        }
        assert_eq!(acc.report().count(), MAX_TRACKED_STACKS as u64 + 5);
    }

    #[test]
    fn absorbing_a_report_twice_doubles_counts_and_totals() {
        let mut acc = MetricStacksAcc::default();
        acc.record(&frames(&["x"]), 500);
        acc.record(&frames(&["x"]), 700);
        let once = acc.report();
        let mut merged = MetricStacksAcc::default();
        merged.absorb(&once).unwrap();
        merged.absorb(&once).unwrap();
        let r = merged.report();
        assert_eq!(
            (r.top[0].count, r.top[0].total_ns, r.top[0].max_ns),
            (4, 2400, 700)
        );
    }

    #[test]
    fn check_refuses_more_samples_than_the_metric_and_bad_histograms() {
        let mut acc = MetricStacksAcc::default();
        acc.record(&frames(&["x"]), 500);
        let r = acc.report();
        assert!(check(&r, 0, 500).unwrap_err().contains("metric has 0"));
        let mut bad = r.clone();
        bad.top[0].count = 2;
        assert!(check(&bad, 5, 500).is_err());
        let mut twice = r.clone();
        twice.top.push(r.top[0].clone());
        assert!(check(&twice, 5, 500).unwrap_err().contains("twice"));
        let mut empty = r;
        empty.top[0].frames.clear();
        assert!(check(&empty, 5, 500).unwrap_err().contains("no frames"));
    }
}
