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

use std::{collections::HashMap, path::PathBuf};

use locktrace_report::{Actor, Drops, LockKey, Metric, Mode, Recorder, TryOutcome};
use tracer_common::{
    Event, F_OFD_SETLKW, F_RDLCK, F_SETLK, F_SETLKW, F_UNLCK, F_WRLCK, PathRecord, event_flag, kind,
};

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
    pub unmatched_releases: u64,
    pub unresolved_names: u64,
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

    /// Takes one record; for a blocking lock call, says what it waited for.
    pub fn handle(&mut self, rec: &Record) -> Option<Blocked> {
        match rec {
            Record::Lock(ev) => self.record(ev),
            Record::Path(p) => {
                self.learn_path(p);
                None
            }
        }
    }

    /// Completes a kernel-walked path with its mount point; kept only if it still names the inode.
    fn learn_path(&mut self, p: &PathRecord) {
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
        match ev.kind {
            kind::LOCK => self.lock(ev),
            kind::RELEASE_UNLOCK | kind::RELEASE_CLOSE | kind::RELEASE_EXIT => {
                self.release(ev);
                None
            }
            _ => None,
        }
    }

    fn lock(&mut self, ev: &Event) -> Option<Blocked> {
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
            libc::EINTR => TryOutcome::Interrupted,
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
            let wait = Wait {
                owner: ev.owner,
                pid: ev.pid,
                posix,
                mode,
                start_ns: ev.start_ns,
                end_ns: ev.end_ns,
            };
            let blocked = self.holders.blocked(file, &wait);
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
            self.close_hold(prev, ev.end_ns);
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
        self.record_order(key, ev.start_ns, &lock, mode, &actor);
        self.open.insert(
            key,
            OpenHold {
                since_ns: ev.end_ns,
                mode,
                lock,
                actor,
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
        lock: &LockKey,
        mode: Mode,
        actor: &Actor,
    ) {
        for (held_key, held) in &self.open {
            let same_file = (held_key.dev, held_key.ino) == (key.dev, key.ino);
            let same_owner = held_key.owner == key.owner || held.actor.pid == actor.pid;
            if same_owner && !same_file && held.since_ns <= start_ns {
                self.recorder
                    .record_order((&held.lock, held.mode), (lock, mode), actor);
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
                self.close_hold(hold, ev.start_ns);
                self.holders.close((ev.dev, ev.ino), ev.owner, ev.start_ns);
            }
            None => self.unmatched_releases += 1,
        }
    }

    fn close_hold(&mut self, hold: OpenHold, at_ns: u64) {
        self.recorder.record(
            &hold.lock,
            hold.mode,
            Metric::Hold,
            at_ns.saturating_sub(hold.since_ns),
            &hold.actor,
        );
    }

    fn lock_key(&mut self, ev: &Event) -> LockKey {
        if let Some(key) = self.locks.get(&(ev.dev, ev.ino)) {
            return key.clone();
        }
        let name = if ev.flags & event_flag::NAME_MISSING != 0 {
            self.unresolved_names += 1;
            format!("inode-{}", ev.ino)
        } else {
            cstr(&ev.name)
        };
        let path = self
            .paths
            .get(&(ev.dev, ev.ino))
            .cloned()
            .or_else(|| resolve_path(ev.pid, ev.fd, (ev.dev, ev.ino)));
        let key = LockKey {
            name,
            path: path.map(|p| p.display().to_string()),
            dev: Some(kernel::user_dev(ev.dev)),
            ino: Some(ev.ino),
        };
        self.locks.insert((ev.dev, ev.ino), key.clone());
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
mod tests {
    use super::*;
    use locktrace_report::ReportMeta;
    use tracer_common::{F_SETLK, NAME_LEN};

    fn ev(
        kind: u32,
        cmd: u32,
        lock_type: u32,
        start: u64,
        end: u64,
        ret: i32,
        owner: u64,
    ) -> Event {
        let lock = crate::filter::DEFAULT_LOCKS[1].as_bytes();
        let mut name = [0u8; NAME_LEN];
        name[..lock.len()].copy_from_slice(lock);
        Event {
            start_ns: start,
            end_ns: end,
            dev: 1,
            ino: 42,
            owner,
            pid: 7,
            tid: 7,
            fd: -1,
            ret,
            kind,
            cmd,
            lock_type,
            flags: 0,
            comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
            name,
        }
    }

    fn report(ledger: Ledger) -> locktrace_report::Report {
        ledger.recorder().snapshot(ReportMeta {
            tool: "test".into(),
            source: locktrace_report::Source::Kernel,
            attach: None,
            kernel: None,
            command: vec![],
            duration_ns: 0,
            drops: Drops::default(),
            labels: Default::default(),
        })
    }

    #[test]
    fn wait_and_hold_are_paired_by_owner() {
        let mut l = Ledger::default();
        l.record(&ev(kind::LOCK, F_SETLKW, F_WRLCK, 100, 600, 0, 1));
        l.record(&ev(kind::LOCK, F_SETLKW, F_WRLCK, 200, 2_600, 0, 2));
        l.record(&ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 1_600, 1_600, 0, 1));
        l.record(&ev(kind::RELEASE_EXIT, 0, F_UNLCK, 5_600, 5_600, 0, 2));
        assert_eq!(l.unmatched_releases, 0);
        assert_eq!(l.still_held(), 0);
        let r = report(l);
        let w = &r.locks[0].modes[&Mode::Write];
        assert_eq!(w.wait.summary.count, 2);
        assert_eq!(w.wait.summary.total, 500 + 2_400);
        assert_eq!(w.hold.summary.count, 2);
        assert_eq!(w.hold.summary.total, 1_000 + 3_000);
    }

    #[test]
    fn refusals_and_gaps_are_counted_not_hidden() {
        let mut l = Ledger::default();
        l.record(&ev(kind::LOCK, F_SETLK, F_RDLCK, 0, 10, -libc::EAGAIN, 1));
        l.record(&ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 20, 20, 0, 9));
        l.record(&ev(kind::LOCK, F_SETLK, F_RDLCK, 30, 40, 0, 3));
        assert_eq!(l.unmatched_releases, 1);
        assert_eq!(l.still_held(), 1);
        let r = report(l);
        let m = &r.locks[0].modes[&Mode::Read];
        assert_eq!(m.tries.refused, 1);
        assert_eq!(m.tries.acquired, 1);
        assert_eq!(
            m.wait.summary.count, 0,
            "non-blocking attempts are not waits"
        );
        assert_eq!(m.hold.summary.count, 0);
    }

    #[test]
    fn conversion_ends_the_old_hold() {
        let mut l = Ledger::default();
        l.record(&ev(kind::LOCK, F_SETLKW, F_RDLCK, 0, 10, 0, 1));
        l.record(&ev(kind::LOCK, F_SETLKW, F_WRLCK, 50, 60, 0, 1));
        l.record(&ev(kind::RELEASE_UNLOCK, 0, F_UNLCK, 100, 100, 0, 1));
        let r = report(l);
        assert_eq!(r.locks[0].modes[&Mode::Read].hold.summary.total, 50);
        assert_eq!(r.locks[0].modes[&Mode::Write].hold.summary.total, 40);
    }

    /// `e` as sent by process `pid` (comm `p<pid>`).
    fn by(pid: u32, mut e: Event) -> Event {
        e.pid = pid;
        e.tid = pid;
        e.comm = [0; 16];
        let comm = format!("p{pid}");
        e.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        e
    }

    fn fake_proc(pid: u32) -> crate::process::Facts {
        crate::process::Facts {
            cmdline: Some(format!("podman pull image{pid}")),
            container: None,
        }
    }

    fn ledger() -> Ledger {
        Ledger::with_processes(Processes::new(fake_proc))
    }

    fn pids(blocked: Option<Blocked>) -> Vec<u32> {
        match blocked {
            Some(Blocked::By(holders)) => holders.iter().map(|h| h.pid).collect(),
            other => panic!("not blocked by traced holders: {other:?}"),
        }
    }

    #[test]
    fn a_wait_is_blocked_by_the_process_holding_a_conflicting_lock_at_its_start() {
        let mut l = ledger();
        l.record(&by(10, ev(kind::LOCK, F_SETLKW, F_WRLCK, 0, 10, 0, 1)));
        // The release may arrive after the wait it ended (one ring buffer, many CPUs): both orders.
        let first = l.record(&by(20, ev(kind::LOCK, F_SETLKW, F_RDLCK, 100, 4_000, 0, 2)));
        l.record(&by(
            10,
            ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 3_990, 3_990, 0, 1),
        ));
        let second = l.record(&by(21, ev(kind::LOCK, F_SETLKW, F_RDLCK, 200, 4_100, 0, 3)));
        assert_eq!(pids(first), [10]);
        assert_eq!(pids(second), [10]);
        let r = report(l);
        let m = &r.locks[0].modes[&Mode::Read];
        assert_eq!(m.blockers.len(), 1);
        let b = &m.blockers[0];
        assert_eq!((b.holder.pid, b.holder.comm.as_str()), (10, "p10"));
        assert_eq!(b.holder.cmdline.as_deref(), Some("podman pull image10"));
        assert_eq!(
            (b.waits, b.total_wait_ns, b.max_wait_ns),
            (2, 3_900 + 3_900, 3_900)
        );
        assert_eq!(m.holder_not_traced, 0);
    }

    #[test]
    fn readers_do_not_block_readers() {
        let mut l = ledger();
        l.record(&by(10, ev(kind::LOCK, F_SETLKW, F_RDLCK, 0, 10, 0, 1)));
        let wait = l.record(&by(20, ev(kind::LOCK, F_SETLKW, F_RDLCK, 100, 120, 0, 2)));
        assert_eq!(wait, Some(Blocked::Uncontended));
        let r = report(l);
        assert!(r.locks[0].modes[&Mode::Read].blockers.is_empty());
    }

    #[test]
    fn a_process_does_not_block_itself() {
        let mut l = ledger();
        // Two POSIX owners in one process (a second fd table after unshare) are still one process.
        l.record(&by(10, ev(kind::LOCK, F_SETLKW, F_WRLCK, 0, 10, 0, 1)));
        let same_pid = l.record(&by(
            10,
            ev(kind::LOCK, F_SETLKW, F_WRLCK, 100, 5_000_000, 0, 2),
        ));
        // A conversion by the holding owner itself.
        let same_owner = l.record(&by(10, ev(kind::LOCK, F_SETLKW, F_RDLCK, 200, 300, 0, 1)));
        assert_eq!(same_pid, Some(Blocked::NotTraced));
        assert_eq!(same_owner, Some(Blocked::Uncontended));
        let r = report(l);
        assert!(r.locks[0].modes.values().all(|m| m.blockers.is_empty()));
    }

    #[test]
    fn a_long_wait_no_traced_hold_explains_counts_as_holder_not_traced() {
        let mut l = ledger();
        // A hold released before the wait started, and one taken after it started, explain nothing.
        l.record(&by(10, ev(kind::LOCK, F_SETLKW, F_WRLCK, 0, 10, 0, 1)));
        l.record(&by(10, ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 50, 50, 0, 1)));
        l.record(&by(11, ev(kind::LOCK, F_SETLK, F_WRLCK, 150, 160, 0, 3)));
        let long = l.record(&by(
            20,
            ev(kind::LOCK, F_SETLKW, F_WRLCK, 100, 2_000_100, 0, 2),
        ));
        let short = l.record(&by(
            21,
            ev(kind::LOCK, F_SETLKW, F_RDLCK, 100, 900_100, 0, 4),
        ));
        assert_eq!(long, Some(Blocked::NotTraced));
        assert_eq!(short, Some(Blocked::Uncontended));
        let r = report(l);
        let w = &r.locks[0].modes[&Mode::Write];
        assert_eq!(w.holder_not_traced, 1);
        assert!(w.blockers.is_empty());
        assert_eq!(r.locks[0].modes[&Mode::Read].holder_not_traced, 0);
    }

    #[test]
    fn a_wait_behind_several_holders_counts_for_each() {
        let mut l = ledger();
        l.record(&by(10, ev(kind::LOCK, F_SETLKW, F_RDLCK, 0, 10, 0, 1)));
        l.record(&by(11, ev(kind::LOCK, F_SETLKW, F_RDLCK, 0, 20, 0, 2)));
        l.record(&by(
            10,
            ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 1_000, 1_000, 0, 1),
        ));
        l.record(&by(
            11,
            ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 2_000, 2_000, 0, 2),
        ));
        let wait = l.record(&by(20, ev(kind::LOCK, F_SETLKW, F_WRLCK, 100, 2_100, 0, 3)));
        assert_eq!(pids(wait), [10, 11]);
        let r = report(l);
        let w = &r.locks[0].modes[&Mode::Write];
        assert_eq!(w.wait.summary.count, 1);
        let counted: Vec<(u32, u64, u64)> = w
            .blockers
            .iter()
            .map(|b| (b.holder.pid, b.waits, b.total_wait_ns))
            .collect();
        assert_eq!(counted, [(10, 1, 2_000), (11, 1, 2_000)]);
    }

    /// `e` on the lock file `name` with inode `ino`.
    fn on(ino: u64, name: &str, mut e: Event) -> Event {
        e.ino = ino;
        e.name = [0; NAME_LEN];
        e.name[..name.len()].copy_from_slice(name.as_bytes());
        e
    }

    /// Process `pid` (lock owner `owner`) takes `first` then `second` and releases both.
    fn nest(
        l: &mut Ledger,
        pid: u32,
        owner: u64,
        first: (u64, &str),
        second: (u64, &str),
        at: u64,
    ) {
        let lock = |(ino, name): (u64, &str), t| {
            by(
                pid,
                on(
                    ino,
                    name,
                    ev(kind::LOCK, F_SETLKW, F_WRLCK, t, t + 1, 0, owner),
                ),
            )
        };
        let release = |(ino, name): (u64, &str), t| {
            by(
                pid,
                on(
                    ino,
                    name,
                    ev(kind::RELEASE_UNLOCK, 0, F_UNLCK, t, t, 0, owner),
                ),
            )
        };
        l.record(&lock(first, at));
        l.record(&lock(second, at + 10));
        l.record(&release(second, at + 20));
        l.record(&release(first, at + 30));
    }

    const A: (u64, &str) = (1, "a.lock");
    const B: (u64, &str) = (2, "b.lock");
    const C: (u64, &str) = (3, "c.lock");

    #[test]
    fn taking_a_lock_while_holding_another_records_an_edge() {
        let mut l = ledger();
        nest(&mut l, 10, 1, A, B, 0);
        nest(&mut l, 11, 2, A, B, 100);
        let r = report(l);
        let order = &r.lock_order;
        assert_eq!(order.edges.len(), 1);
        let e = &order.edges[0];
        assert_eq!(
            (e.held.as_str(), e.taken.as_str()),
            ("a.lock (inode 1)", "b.lock (inode 2)")
        );
        assert_eq!(
            (e.count, e.example.pid, e.example.comm.as_str()),
            (2, 10, "p10")
        );
        assert!(order.cycles.is_empty());
    }

    #[test]
    fn relocking_the_same_file_and_released_locks_make_no_edge() {
        let mut l = ledger();
        // A conversion of a held lock.
        l.record(&by(
            10,
            on(1, "a.lock", ev(kind::LOCK, F_SETLKW, F_RDLCK, 0, 1, 0, 1)),
        ));
        l.record(&by(
            10,
            on(1, "a.lock", ev(kind::LOCK, F_SETLKW, F_WRLCK, 5, 6, 0, 1)),
        ));
        l.record(&by(
            10,
            on(
                1,
                "a.lock",
                ev(kind::RELEASE_UNLOCK, 0, F_UNLCK, 9, 9, 0, 1),
            ),
        ));
        // Another file taken after the first was released, and one taken by another process.
        l.record(&by(
            11,
            on(3, "c.lock", ev(kind::LOCK, F_SETLKW, F_WRLCK, 9, 10, 0, 2)),
        ));
        l.record(&by(
            10,
            on(2, "b.lock", ev(kind::LOCK, F_SETLKW, F_WRLCK, 10, 11, 0, 1)),
        ));
        assert!(report(l).lock_order.is_empty());
    }

    #[test]
    fn opposite_orders_in_two_processes_are_a_cycle() {
        let mut l = ledger();
        nest(&mut l, 10, 1, A, B, 0);
        nest(&mut l, 11, 2, B, A, 100);
        let r = report(l);
        assert_eq!(
            r.lock_order.cycles,
            vec![vec!["a.lock (inode 1)", "b.lock (inode 2)"]]
        );
    }

    #[test]
    fn a_cycle_through_three_processes_is_found() {
        let mut l = ledger();
        nest(&mut l, 10, 1, A, B, 0);
        nest(&mut l, 11, 2, B, C, 100);
        nest(&mut l, 12, 3, C, A, 200);
        let r = report(l);
        assert_eq!(r.lock_order.cycles.len(), 1);
        assert_eq!(r.lock_order.cycles[0].len(), 3);
    }

    #[test]
    fn a_hold_taken_after_the_lock_call_started_is_no_edge() {
        let mut l = ledger();
        // Another thread of the process got a.lock while this one was already waiting for b.lock.
        l.record(&by(
            10,
            on(1, "a.lock", ev(kind::LOCK, F_SETLKW, F_WRLCK, 0, 50, 0, 1)),
        ));
        l.record(&by(
            10,
            on(2, "b.lock", ev(kind::LOCK, F_SETLKW, F_WRLCK, 40, 60, 0, 1)),
        ));
        assert!(report(l).lock_order.is_empty());
    }

    #[test]
    fn edeadlk_is_counted_among_the_errors() {
        let mut l = ledger();
        l.record(&ev(kind::LOCK, F_SETLKW, F_WRLCK, 0, 10, -libc::EDEADLK, 1));
        l.record(&ev(kind::LOCK, F_SETLKW, F_WRLCK, 20, 30, -libc::EIO, 1));
        let r = report(l);
        let t = &r.locks[0].modes[&Mode::Write].tries;
        assert_eq!((t.errors, t.edeadlk), (2, 1));
    }
}
