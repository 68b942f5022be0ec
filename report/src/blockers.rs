//! Who blocked whom: per lock mode, the processes that held a conflicting lock when a wait started,
//! with how many waits each caused and how long those waits were.
//!
//! A wait blocked by several holders at once (readers sharing a lock a writer waits for) counts once
//! for each of them, so the blockers' wait counts can add up to more than the mode's waits.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How many blockers a mode report lists; the rest are summed into [`BlockerOthers`].
pub const TOP_BLOCKERS: usize = 16;

/// A process that held a lock while another process waited for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    /// Arguments joined by spaces, when `/proc/PID/cmdline` was readable while the process lived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// The 64-hex container ID its cgroup path carried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// One holder and the waits it caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    #[serde(flatten)]
    pub holder: Holder,
    pub waits: u64,
    pub total_wait_ns: u64,
    pub max_wait_ns: u64,
}

/// The blockers past the top [`TOP_BLOCKERS`], summed, so a long list loses no waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockerOthers {
    /// Holders summed here (merged reports add their counts, so one process can count twice).
    pub holders: u64,
    pub waits: u64,
    pub total_wait_ns: u64,
    pub max_wait_ns: u64,
}

/// Waits caused, their total and longest.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    waits: u64,
    total: u64,
    max: u64,
}

impl Tally {
    fn checked_add(self, waits: u64, total: u64, max: u64) -> Option<Tally> {
        Some(Tally {
            waits: self.waits.checked_add(waits)?,
            total: self.total.checked_add(total)?,
            max: self.max.max(max),
        })
    }
}

/// Holders are the same when pid, comm and command line agree; the container follows the process.
type HolderKey = (u32, String, Option<String>);

/// Accumulates the blockers of one lock mode.
#[derive(Debug, Clone, Default)]
pub(crate) struct BlockerAcc {
    holders: HashMap<HolderKey, (Option<String>, Tally)>,
    others: BlockerOthers,
    not_traced: u64,
}

impl BlockerAcc {
    pub(crate) fn record(&mut self, holder: &Holder, wait_ns: u64) {
        let key = (holder.pid, holder.comm.clone(), holder.cmdline.clone());
        let entry = self
            .holders
            .entry(key)
            .or_insert_with(|| (holder.container.clone(), Tally::default()));
        let t = &mut entry.1;
        t.waits = t.waits.saturating_add(1);
        t.total = t.total.saturating_add(wait_ns);
        t.max = t.max.max(wait_ns);
    }

    pub(crate) fn holder_not_traced(&mut self) {
        self.not_traced = self.not_traced.saturating_add(1);
    }

    /// Adds stored blockers; a count or total that would pass `u64::MAX` is refused.
    pub(crate) fn absorb(
        &mut self,
        blockers: &[Blocker],
        others: Option<&BlockerOthers>,
        not_traced: u64,
    ) -> Result<(), String> {
        const OVERFLOW: &str = "blocker counts add up past 2^64";
        for b in blockers {
            let h = &b.holder;
            let key = (h.pid, h.comm.clone(), h.cmdline.clone());
            let entry = self
                .holders
                .entry(key)
                .or_insert_with(|| (h.container.clone(), Tally::default()));
            entry.1 = entry
                .1
                .checked_add(b.waits, b.total_wait_ns, b.max_wait_ns)
                .ok_or(OVERFLOW)?;
        }
        if let Some(o) = others {
            self.others = add_others(&self.others, o).ok_or(OVERFLOW)?;
        }
        self.not_traced = self.not_traced.checked_add(not_traced).ok_or(OVERFLOW)?;
        Ok(())
    }

    /// The top [`TOP_BLOCKERS`] by total wait (ties by pid, comm, command line), the rest summed,
    /// and the count of waits whose holder was not traced.
    pub(crate) fn report(&self) -> (Vec<Blocker>, Option<BlockerOthers>, u64) {
        let mut all: Vec<Blocker> = self
            .holders
            .iter()
            .map(|((pid, comm, cmdline), (container, t))| Blocker {
                holder: Holder {
                    pid: *pid,
                    comm: comm.clone(),
                    cmdline: cmdline.clone(),
                    container: container.clone(),
                },
                waits: t.waits,
                total_wait_ns: t.total,
                max_wait_ns: t.max,
            })
            .collect();
        all.sort_by(|a, b| {
            b.total_wait_ns
                .cmp(&a.total_wait_ns)
                .then(a.holder.pid.cmp(&b.holder.pid))
                .then_with(|| a.holder.comm.cmp(&b.holder.comm))
                .then_with(|| a.holder.cmdline.cmp(&b.holder.cmdline))
        });
        let mut others = self.others;
        for b in all.iter().skip(TOP_BLOCKERS) {
            let one = BlockerOthers {
                holders: 1,
                waits: b.waits,
                total_wait_ns: b.total_wait_ns,
                max_wait_ns: b.max_wait_ns,
            };
            // Each part fits in u64, so only an absurd sum saturates here.
            others = add_others(&others, &one).unwrap_or(BlockerOthers {
                holders: others.holders.saturating_add(1),
                waits: others.waits.saturating_add(b.waits),
                total_wait_ns: others.total_wait_ns.saturating_add(b.total_wait_ns),
                max_wait_ns: others.max_wait_ns.max(b.max_wait_ns),
            });
        }
        all.truncate(TOP_BLOCKERS);
        let others = (others.holders > 0 || others.waits > 0).then_some(others);
        (all, others, self.not_traced)
    }
}

fn add_others(a: &BlockerOthers, b: &BlockerOthers) -> Option<BlockerOthers> {
    Some(BlockerOthers {
        holders: a.holders.checked_add(b.holders)?,
        waits: a.waits.checked_add(b.waits)?,
        total_wait_ns: a.total_wait_ns.checked_add(b.total_wait_ns)?,
        max_wait_ns: a.max_wait_ns.max(b.max_wait_ns),
    })
}

/// Checks stored blockers against themselves and the mode's waits (`waits` samples, the longest
/// `max_wait` ns): at most [`TOP_BLOCKERS`], no holder twice, every entry with at least one wait,
/// a longest wait no longer than the mode's and between the mean and the total, and no more
/// waits per entry (or untraced holders) than the mode has.
pub(crate) fn check(
    blockers: &[Blocker],
    others: Option<&BlockerOthers>,
    not_traced: u64,
    waits: u64,
    max_wait: u64,
) -> Result<(), String> {
    if blockers.len() > TOP_BLOCKERS {
        return Err(format!(
            "{} blockers listed, more than the {TOP_BLOCKERS} a report keeps",
            blockers.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for b in blockers {
        let h = &b.holder;
        let who = format!("blocker {}[{}]", h.comm, h.pid);
        if !seen.insert((h.pid, &h.comm, &h.cmdline)) {
            return Err(format!("{who} is listed twice"));
        }
        if let Some(id) = &h.container
            && !is_container_id(id)
        {
            return Err(format!("{who}'s container {id:?} is not a 64-hex-digit ID"));
        }
        check_tally(
            &who,
            b.waits,
            b.total_wait_ns,
            b.max_wait_ns,
            waits,
            max_wait,
        )?;
    }
    if let Some(o) = others {
        if o.holders == 0 {
            return Err("other blockers sum up no holders".into());
        }
        check_tally(
            "other blockers",
            o.waits,
            o.total_wait_ns,
            o.max_wait_ns,
            u64::MAX,
            max_wait,
        )?;
    }
    if not_traced > waits {
        return Err(format!(
            "{not_traced} waits with a holder not traced, but only {waits} waits"
        ));
    }
    Ok(())
}

/// A container ID as runtimes write it into cgroup paths: 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_tally(
    who: &str,
    n: u64,
    total: u64,
    max: u64,
    waits: u64,
    max_wait: u64,
) -> Result<(), String> {
    if n == 0 {
        return Err(format!("{who} caused no waits"));
    }
    if n > waits {
        return Err(format!("{who} caused {n} waits, but the mode has {waits}"));
    }
    if max > max_wait {
        return Err(format!(
            "{who}'s longest wait {max} ns is longer than the mode's {max_wait} ns"
        ));
    }
    if max > total || u128::from(max) * u128::from(n) < u128::from(total) {
        return Err(format!(
            "{who}'s longest wait {max} ns does not fit its {n} waits totalling {total} ns"
        ));
    }
    Ok(())
}
