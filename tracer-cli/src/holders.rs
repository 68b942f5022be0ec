//! Who held which lock file when: the open holds of every file and, for a bounded time, the ones
//! that closed, so a wait (which the kernel reports only when it ends) can be matched with the
//! holds that were open when it started.
//!
//! The rule, applied when the wait's event arrives:
//! - A hold blocks a wait when it conflicts (either side wants write), belongs to another lock
//!   owner (and, for two POSIX locks, another process: POSIX locks are per process), was taken
//!   (its lock call had returned) no later than the wait started, and was not released before.
//!   The wait is then *blocked by* the holding processes, each counted once.
//! - A wait no such traced hold explains, that still lasted longer than [`NOT_TRACED_AFTER_NS`],
//!   was blocked by someone the trace did not see (outside `--pid`, or holding since before the
//!   trace): *holder not traced*. Shorter ones are *uncontended*: an uncontended lock call
//!   returns in microseconds.
//! - Closed holds are kept [`KEEP_CLOSED_NS`] after their release, at most [`KEEP_CLOSED`] per
//!   file: a wait that outlasts that may find its holders forgotten and count as not traced; it
//!   is never given a holder that did not overlap its start.

use std::{
    collections::{HashMap, VecDeque},
    rc::Rc,
};

use locktrace_report::{Holder, Mode};

/// A wait with no traced conflicting holder that lasted longer than this (1 ms) was blocked by an
/// untraced one.
pub const NOT_TRACED_AFTER_NS: u64 = 1_000_000;
/// How long a released hold is remembered (10 minutes of event time).
pub const KEEP_CLOSED_NS: u64 = 600_000_000_000;
/// How many released holds are remembered per file.
pub const KEEP_CLOSED: usize = 4096;

/// Lock file by kernel (dev, ino).
pub type FileId = (u64, u64);

/// One lock held by one owner.
#[derive(Clone, Debug)]
pub struct Hold {
    /// The kernel's lock owner (`files_struct` for POSIX locks, `struct file` for OFD ones).
    pub owner: u64,
    pub pid: u32,
    pub posix: bool,
    pub mode: Mode,
    /// When the lock call that took it returned.
    pub since_ns: u64,
    pub holder: Rc<Holder>,
}

/// A lock call that blocked (F_SETLKW, F_OFD_SETLKW), as its event tells it.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    pub owner: u64,
    pub pid: u32,
    pub posix: bool,
    pub mode: Mode,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// What held a wait up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Traced processes held a conflicting lock when it started.
    By(Vec<Rc<Holder>>),
    /// It waited, but no traced process held a conflicting lock.
    NotTraced,
    /// It did not wait for anyone.
    Uncontended,
}

struct Closed {
    hold: Hold,
    until_ns: u64,
}

#[derive(Default)]
struct File {
    open: Vec<Hold>,
    /// Sorted by release time.
    closed: VecDeque<Closed>,
}

#[derive(Default)]
pub struct Holders {
    files: HashMap<FileId, File>,
}

impl Holders {
    pub fn open(&mut self, file: FileId, hold: Hold) {
        self.files.entry(file).or_default().open.push(hold);
    }

    /// Ends `owner`'s hold of `file` at `at_ns`, if it had one.
    pub fn close(&mut self, file: FileId, owner: u64, at_ns: u64) {
        let Some(f) = self.files.get_mut(&file) else {
            return;
        };
        if let Some(i) = f.open.iter().position(|h| h.owner == owner) {
            let hold = f.open.swap_remove(i);
            // Events from several CPUs can arrive slightly out of time order; keep the list sorted
            // by release time (almost always an append) so a wait scans only what it overlaps.
            let at = f.closed.partition_point(|c| c.until_ns <= at_ns);
            f.closed.insert(
                at,
                Closed {
                    hold,
                    until_ns: at_ns,
                },
            );
        }
        while f.closed.len() > KEEP_CLOSED
            || f.closed
                .front()
                .is_some_and(|c| c.until_ns.saturating_add(KEEP_CLOSED_NS) < at_ns)
        {
            f.closed.pop_front();
        }
        if f.open.is_empty() && f.closed.is_empty() {
            self.files.remove(&file);
        }
    }

    pub fn blocked(&self, file: FileId, wait: &Wait) -> Blocked {
        let mut by: Vec<Rc<Holder>> = Vec::new();
        if let Some(f) = self.files.get(&file) {
            let open = f.open.iter().map(|h| (h, None));
            // Only holds released after the wait started can have blocked it.
            let after = f.closed.partition_point(|c| c.until_ns <= wait.start_ns);
            let closed = f.closed.range(after..).map(|c| (&c.hold, Some(c.until_ns)));
            for (hold, until) in open.chain(closed) {
                if blocks(hold, until, wait) && !by.iter().any(|h| **h == *hold.holder) {
                    by.push(hold.holder.clone());
                }
            }
        }
        if !by.is_empty() {
            by.sort_by_key(|h| h.pid);
            Blocked::By(by)
        } else if wait.end_ns.saturating_sub(wait.start_ns) > NOT_TRACED_AFTER_NS {
            Blocked::NotTraced
        } else {
            Blocked::Uncontended
        }
    }
}

impl Holders {
    /// Every traced hold that blocked `wait` (the rule of [`Holders::blocked`], hold by hold
    /// rather than by process), with its release time if it was released.
    pub fn blocking(&self, file: FileId, wait: &Wait) -> Vec<(Hold, Option<u64>)> {
        let Some(f) = self.files.get(&file) else {
            return Vec::new();
        };
        let open = f.open.iter().map(|h| (h, None));
        let after = f.closed.partition_point(|c| c.until_ns <= wait.start_ns);
        let closed = f.closed.range(after..).map(|c| (&c.hold, Some(c.until_ns)));
        open.chain(closed)
            .filter(|(hold, until)| blocks(hold, *until, wait))
            .map(|(hold, until)| (hold.clone(), until))
            .collect()
    }
}

fn blocks(hold: &Hold, until_ns: Option<u64>, wait: &Wait) -> bool {
    let conflicts = hold.mode == Mode::Write || wait.mode == Mode::Write;
    let same_owner = hold.owner == wait.owner || (hold.posix && wait.posix && hold.pid == wait.pid);
    let held_at_start =
        hold.since_ns <= wait.start_ns && until_ns.is_none_or(|u| u > wait.start_ns);
    conflicts && !same_owner && held_at_start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(owner: u64, since_ns: u64) -> Hold {
        Hold {
            owner,
            pid: owner as u32,
            posix: true,
            mode: Mode::Write,
            since_ns,
            holder: Rc::new(Holder {
                pid: owner as u32,
                comm: "h".into(),
                cmdline: None,
                container: None,
            }),
        }
    }

    fn wait(start_ns: u64, end_ns: u64) -> Wait {
        Wait {
            owner: u64::MAX,
            pid: u32::MAX,
            posix: true,
            mode: Mode::Read,
            start_ns,
            end_ns,
        }
    }

    #[test]
    fn released_holds_are_forgotten_after_the_window_or_the_count() {
        let mut h = Holders::default();
        h.open((1, 1), hold(1, 0));
        h.close((1, 1), 1, 10);
        assert!(matches!(
            h.blocked((1, 1), &wait(5, 5_000_000)),
            Blocked::By(_)
        ));
        // Another hold released past the window pushes the first one out.
        h.open((1, 1), hold(2, 20));
        h.close((1, 1), 2, 11 + KEEP_CLOSED_NS);
        assert_eq!(h.blocked((1, 1), &wait(5, 5_000_000)), Blocked::NotTraced);
        for owner in 3..KEEP_CLOSED as u64 + 10 {
            h.open((1, 1), hold(owner, KEEP_CLOSED_NS + owner));
            h.close((1, 1), owner, KEEP_CLOSED_NS + owner + 1);
        }
        assert_eq!(h.files[&(1, 1)].closed.len(), KEEP_CLOSED);
    }

    #[test]
    fn a_file_without_holds_is_dropped() {
        let mut h = Holders::default();
        h.open((1, 1), hold(1, 0));
        h.close((1, 1), 1, 10);
        h.open((1, 1), hold(2, 20));
        h.close((1, 1), 2, 20 + KEEP_CLOSED_NS + 11);
        h.close((1, 1), 3, 20 + 2 * KEEP_CLOSED_NS + 12);
        assert!(h.files.is_empty());
    }

    fn pids(blocked: Blocked) -> Vec<u32> {
        match blocked {
            Blocked::By(by) => by.iter().map(|h| h.pid).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_release_arriving_out_of_time_order_is_still_found() {
        let mut h = Holders::default();
        h.open((1, 1), hold(1, 0));
        h.open((1, 1), hold(2, 0));
        h.close((1, 1), 2, 1_000);
        h.close((1, 1), 1, 500);
        assert_eq!(pids(h.blocked((1, 1), &wait(400, 2_000_000))), [1, 2]);
        assert_eq!(pids(h.blocked((1, 1), &wait(700, 2_000_000))), [2]);
    }
}
