//! Turns the kernel's lock and release events into wait and hold samples.
//!
//! A hold opens when a lock call succeeds and closes at the release event carrying the same
//! `(dev, ino, owner)`; the kernel only reports releases of locks it saw being taken, so a release
//! without an open hold, or a hold still open at the end, is a measurement gap and is counted, never
//! guessed.
//!
//! Every successful lock also adds a lock-order edge from each other file its owner already holds.
//!
//! Every blocking wait is also matched with the holds open when it started ([`crate::holders`]): the
//! holders it was blocked by, or "holder not traced".
//!
//! On request, every completed wait and hold is also handed out whole ([`interval`]).

mod interval;

use std::{collections::HashMap, path::PathBuf};

use locktrace_report::{Actor, Drops, Frames, LockKey, Metric, Mode, Recorder, TryOutcome};
use tracer_common::{
    Event, F_OFD_SETLKW, F_RDLCK, F_SETLK, F_SETLKW, F_UNLCK, F_WRLCK, PathRecord, event_flag,
    interrupted, kind,
};

pub use interval::{BlockingHold, Interval};

use crate::{
    holders::{Blocked, Hold, Holders, Wait},
    kernel,
    process::Processes,
    tracer::Record,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Owner {
    dev: u64,
    ino: u64,
    owner: u64,
}

struct OpenHold {
    since_ns: u64,
    mode: Mode,
    lock: LockKey,
    actor: Actor,
    tid: u32,
    /// The user stack of the call that took it (`--stacks`).
    stack: Option<Frames>,
}

#[derive(Default)]
pub struct Ledger {
    recorder: Recorder,
    open: HashMap<Owner, OpenHold>,
    holders: Holders,
    processes: Processes,
    /// Lock identity by kernel (dev, ino): name from the event, path resolved once.
    locks: HashMap<(u64, u64), LockKey>,
    /// Paths the kernel walked, by kernel (dev, ino).
    paths: HashMap<(u64, u64), PathBuf>,
    /// Basenames the kernel sent with the paths, by kernel (dev, ino).
    names: HashMap<(u64, u64), String>,
    pub unmatched_releases: u64,
    pub unresolved_names: u64,
    /// Completed waits and holds not yet taken, when asked for.
    intervals: Option<Vec<Interval>>,
}

impl Ledger {
    /// Files the user named (`--path`): their paths are known without asking /proc, which is too
    /// late for a process that has already closed the fd.
    pub fn with_paths(paths: &[PathBuf]) -> Self {
        let mut ledger = Self::default();
        for path in paths {
            let (Ok((kdev, ino)), Ok(full)) = (kernel::file_id(path), std::path::absolute(path))
            else {
                continue;
            };
            let name = full
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            ledger.locks.insert(
                (kdev, ino),
                LockKey {
                    name,
                    path: Some(full.display().to_string()),
                    dev: Some(kernel::user_dev(kdev)),
                    ino: Some(ino),
                },
            );
        }
        ledger
    }

    /// A ledger whose holders' command lines and containers come from `processes`.
    pub fn with_processes(processes: Processes) -> Self {
        Ledger {
            processes,
            ..Self::default()
        }
    }

    /// This ledger, also collecting every completed wait and hold for [`Ledger::take_intervals`].
    pub fn with_intervals(self) -> Self {
        Ledger {
            intervals: Some(Vec::new()),
            ..self
        }
    }

    /// The waits and holds completed since the last call (none unless [`Ledger::with_intervals`]).
    pub fn take_intervals(&mut self) -> Vec<Interval> {
        self.intervals
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Takes one record, with the named user stack of its lock call when stacks are recorded; for
    /// a blocking lock call, says what it waited for.
    pub fn handle(&mut self, rec: &Record, stack: Option<Frames>) -> Option<Blocked> {
        match rec {
            Record::Lock(ev) => self.record_with_stack(ev, stack),
            Record::Path(p) => {
                self.learn_path(p);
                None
            }
        }
    }

    /// Completes a kernel-walked path with its mount point; kept only if it still names the inode.
    fn learn_path(&mut self, p: &PathRecord) {
        if p.flags & event_flag::NAME_MISSING == 0 {
            self.names.insert((p.dev, p.ino), cstr(&p.name));
        }
        if p.incomplete != 0 || self.paths.contains_key(&(p.dev, p.ino)) {
            return;
        }
        let rel: PathBuf = p.components[..(p.depth as usize).min(p.components.len())]
            .iter()
            .rev()
            .map(|c| cstr(c))
            .collect();
        if let Some(path) = kernel::visible_paths(p.dev, &rel)
            .into_iter()
            .find(|path| kernel::file_id(path).is_ok_and(|id| id == (p.dev, p.ino)))
        {
            self.paths.insert((p.dev, p.ino), path);
        }
    }

    /// Takes one event; for a blocking lock call, says what it waited for.
    pub fn record(&mut self, ev: &Event) -> Option<Blocked> {
        self.record_with_stack(ev, None)
    }

    /// [`Ledger::record`] for an event whose lock call had user stack `stack`: its wait and the
    /// hold it starts are attributed to it.
    pub fn record_with_stack(&mut self, ev: &Event, stack: Option<Frames>) -> Option<Blocked> {
        match ev.kind {
            kind::LOCK => self.lock(ev, stack),
            kind::RELEASE_UNLOCK | kind::RELEASE_CLOSE | kind::RELEASE_EXIT => {
                self.release(ev);
                None
            }
            _ => None,
        }
    }

    fn lock(&mut self, ev: &Event, stack: Option<Frames>) -> Option<Blocked> {
        let mode = match ev.lock_type {
            F_RDLCK => Mode::Read,
            F_WRLCK => Mode::Write,
            // Unlock requests are seen again as their release event.
            F_UNLCK => return None,
            _ => return None,
        };
        let file = (ev.dev, ev.ino);
        let posix = matches!(ev.cmd, F_SETLK | F_SETLKW);
        let lock = self.lock_key(ev);
        let actor = actor(ev);
        let blocking = matches!(ev.cmd, F_SETLKW | F_OFD_SETLKW);
        let outcome = match -ev.ret {
            0 => TryOutcome::Acquired,
            libc::EAGAIN | libc::EACCES if !blocking => TryOutcome::Refused,
            _ if interrupted(ev.ret) => TryOutcome::Interrupted,
            _ => TryOutcome::Error,
        };
        self.recorder.record_try(&lock, mode, outcome);
        if -ev.ret == libc::EDEADLK {
            self.recorder.record_deadlock(&lock, mode);
        }
        let blocked = blocking.then(|| {
            let nanos = ev.end_ns.saturating_sub(ev.start_ns);
            self.recorder
                .record(&lock, mode, Metric::Wait, nanos, &actor);
            if let Some(frames) = &stack {
                self.recorder
                    .record_stack(&lock, mode, Metric::Wait, frames, nanos);
            }
            let wait = Wait {
                owner: ev.owner,
                pid: ev.pid,
                posix,
                mode,
                start_ns: ev.start_ns,
                end_ns: ev.end_ns,
            };
            let blocked = self.holders.blocked(file, &wait);
            if let Some(intervals) = &mut self.intervals {
                let blocked_by = self
                    .holders
                    .blocking(file, &wait)
                    .into_iter()
                    .map(|(hold, until_ns)| BlockingHold {
                        owner: hold.owner,
                        pid: hold.pid,
                        since_ns: hold.since_ns,
                        until_ns,
                    })
                    .collect();
                intervals.push(Interval {
                    metric: Metric::Wait,
                    file,
                    lock: lock.clone(),
                    mode,
                    owner: ev.owner,
                    pid: ev.pid,
                    tid: ev.tid,
                    comm: actor.comm.clone(),
                    start_ns: ev.start_ns,
                    end_ns: ev.end_ns.max(ev.start_ns),
                    acquired: ev.ret == 0,
                    blocked_by,
                });
            }
            match &blocked {
                Blocked::By(by) => {
                    self.recorder
                        .record_blocked(&lock, mode, by.iter().map(|h| &**h), nanos)
                }
                Blocked::NotTraced => self.recorder.record_holder_not_traced(&lock, mode),
                Blocked::Uncontended => {}
            }
            blocked
        });
        if ev.ret != 0 {
            return blocked;
        }
        let key = Owner {
            dev: ev.dev,
            ino: ev.ino,
            owner: ev.owner,
        };
        // A successful lock on a lock already held by the same owner converts it (POSIX semantics):
        // the old hold ends here and a new one starts in the new mode.
        if let Some(prev) = self.open.remove(&key) {
            self.close_hold(key, prev, ev.end_ns);
            self.holders.close(file, ev.owner, ev.end_ns);
        }
        self.holders.open(
            file,
            Hold {
                owner: ev.owner,
                pid: ev.pid,
                posix,
                mode,
                since_ns: ev.end_ns,
                holder: self.processes.holder(ev.pid, &actor.comm),
            },
        );
        self.record_order(key, ev.start_ns, (&lock, mode, stack.as_ref()), &actor);
        self.open.insert(
            key,
            OpenHold {
                since_ns: ev.end_ns,
                mode,
                lock,
                actor,
                tid: ev.tid,
                stack,
            },
        );
        blocked
    }

    /// Lock order: every other file the same owner (or, for locks whose owner is per open file,
    /// the same process) held, taken before the call that took `lock` (at `start_ns`) began.
    fn record_order(
        &mut self,
        key: Owner,
        start_ns: u64,
        taken: (&LockKey, Mode, Option<&Frames>),
        actor: &Actor,
    ) {
        for (held_key, held) in &self.open {
            let same_file = (held_key.dev, held_key.ino) == (key.dev, key.ino);
            let same_owner = held_key.owner == key.owner || held.actor.pid == actor.pid;
            if same_owner && !same_file && held.since_ns <= start_ns {
                self.recorder.record_order(
                    (&held.lock, held.mode, held.stack.as_ref()),
                    taken,
                    actor,
                );
            }
        }
    }

    fn release(&mut self, ev: &Event) {
        let key = Owner {
            dev: ev.dev,
            ino: ev.ino,
            owner: ev.owner,
        };
        match self.open.remove(&key) {
            Some(hold) => {
                self.close_hold(key, hold, ev.start_ns);
                self.holders.close((ev.dev, ev.ino), ev.owner, ev.start_ns);
            }
            None => self.unmatched_releases += 1,
        }
    }

    fn close_hold(&mut self, key: Owner, hold: OpenHold, at_ns: u64) {
        let nanos = at_ns.saturating_sub(hold.since_ns);
        if let Some(intervals) = &mut self.intervals {
            intervals.push(Interval {
                metric: Metric::Hold,
                file: (key.dev, key.ino),
                lock: hold.lock.clone(),
                mode: hold.mode,
                owner: key.owner,
                pid: hold.actor.pid,
                tid: hold.tid,
                comm: hold.actor.comm.clone(),
                start_ns: hold.since_ns,
                end_ns: at_ns.max(hold.since_ns),
                acquired: true,
                blocked_by: Vec::new(),
            });
        }
        self.recorder
            .record(&hold.lock, hold.mode, Metric::Hold, nanos, &hold.actor);
        if let Some(frames) = &hold.stack {
            self.recorder
                .record_stack(&hold.lock, hold.mode, Metric::Hold, frames, nanos);
        }
    }

    fn lock_key(&mut self, ev: &Event) -> LockKey {
        if let Some(key) = self.locks.get(&(ev.dev, ev.ino)) {
            return key.clone();
        }
        let name = (ev.flags & event_flag::NAME_MISSING == 0).then(|| cstr(&ev.name));
        let resolved = || resolve_path(ev.pid, ev.fd, (ev.dev, ev.ino));
        self.new_lock_key((ev.dev, ev.ino), name, resolved)
    }

    /// The lock file `(dev, ino)` (kernel device) as summary mode knows it: by the path record
    /// the kernel sent before its first lock call.
    pub fn lock_of(&mut self, dev: u64, ino: u64) -> LockKey {
        if let Some(key) = self.locks.get(&(dev, ino)) {
            return key.clone();
        }
        let name = self.names.get(&(dev, ino)).cloned();
        self.new_lock_key((dev, ino), name, || None)
    }

    /// Names a lock file the first time it is seen: its basename (`inode-N` when unreadable,
    /// counted) and its path, walked by the kernel or else `resolve`d.
    fn new_lock_key(
        &mut self,
        (dev, ino): (u64, u64),
        name: Option<String>,
        resolve: impl FnOnce() -> Option<PathBuf>,
    ) -> LockKey {
        let name = name.unwrap_or_else(|| {
            self.unresolved_names += 1;
            format!("inode-{ino}")
        });
        let path = self.paths.get(&(dev, ino)).cloned().or_else(resolve);
        let key = LockKey {
            name,
            path: path.map(|p| p.display().to_string()),
            dev: Some(kernel::user_dev(dev)),
            ino: Some(ino),
        };
        self.locks.insert((dev, ino), key.clone());
        key
    }

    /// Holds still open when tracing stopped: their length is unknown.
    pub fn still_held(&self) -> u64 {
        self.open.len() as u64
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// The ledger's own share of the drop counters.
    pub fn drops(&self) -> Drops {
        Drops {
            unmatched_releases: self.unmatched_releases,
            still_held_at_end: self.still_held(),
            unresolved_names: self.unresolved_names,
            ..Default::default()
        }
    }
}

/// The file behind `/proc/PID/fd/FD`, trusted only if it is still the same inode.
fn resolve_path(pid: u32, fd: i32, id: (u64, u64)) -> Option<PathBuf> {
    if fd < 0 {
        return None;
    }
    let path = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    (kernel::file_id(&path).ok()? == id).then_some(path)
}

pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn actor(ev: &Event) -> Actor {
    Actor {
        pid: ev.pid,
        comm: cstr(&ev.comm),
    }
}

#[cfg(test)]
mod tests;
