use super::*;
use locktrace_report::ReportMeta;
use tracer_common::{F_SETLK, NAME_LEN};

fn ev(kind: u32, cmd: u32, lock_type: u32, start: u64, end: u64, ret: i32, owner: u64) -> Event {
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
        stack_id: tracer_common::NO_STACK,
        _reserved: 0,
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
        collection: None,
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
fn nest(l: &mut Ledger, pid: u32, owner: u64, first: (u64, &str), second: (u64, &str), at: u64) {
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

#[test]
fn a_wait_cut_short_by_a_signal_is_interrupted_whichever_code_the_hook_saw() {
    let mut l = ledger();
    // The hooks run before the way out of the syscall turns ERESTARTSYS into EINTR.
    const ERESTARTSYS: i32 = 512;
    l.record(&ev(kind::LOCK, F_SETLKW, F_WRLCK, 0, 10, -ERESTARTSYS, 1));
    l.record(&ev(kind::LOCK, F_SETLKW, F_WRLCK, 20, 30, -libc::EINTR, 1));
    let r = report(l);
    let m = &r.locks[0].modes[&Mode::Write];
    assert_eq!((m.tries.interrupted, m.tries.errors), (2, 0));
    assert_eq!(
        m.wait.summary.count, 2,
        "an interrupted wait is still a wait"
    );
}

fn frames(names: &[&str]) -> Frames {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_wait_and_the_hold_it_starts_belong_to_the_stack_of_their_lock_call() {
    let mut l = Ledger::default();
    let taker = frames(&["fcntl", "take_layers_lock", "main"]);
    let other = frames(&["fcntl", "read_images", "main"]);
    l.record_with_stack(
        &ev(kind::LOCK, F_SETLKW, F_WRLCK, 100, 600, 0, 1),
        Some(taker.clone()),
    );
    l.record_with_stack(
        &ev(kind::LOCK, F_SETLKW, F_RDLCK, 700, 900, 0, 2),
        Some(other.clone()),
    );
    l.record(&ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 1_600, 1_600, 0, 1));
    l.record(&ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 1_900, 1_900, 0, 2));
    let r = report(l);
    let w = &r.locks[0].modes[&Mode::Write];
    let (wait, hold) = (&w.stacks.wait.top, &w.stacks.hold.top);
    assert_eq!((wait.len(), hold.len()), (1, 1));
    assert_eq!(wait[0].frames, taker.to_vec());
    assert_eq!((wait[0].count, wait[0].total_ns), (1, 500));
    assert_eq!(hold[0].frames, taker.to_vec());
    assert_eq!((hold[0].count, hold[0].total_ns), (1, 1_000));
    let read = &r.locks[0].modes[&Mode::Read];
    assert_eq!(read.stacks.hold.top[0].frames, other.to_vec());
    assert_eq!(read.stacks.hold.top[0].total_ns, 1_000);
}

#[test]
fn without_stacks_no_stack_table_is_made() {
    let mut l = Ledger::default();
    l.record(&ev(kind::LOCK, F_SETLKW, F_WRLCK, 100, 600, 0, 1));
    l.record(&ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 1_600, 1_600, 0, 1));
    assert!(report(l).locks[0].modes[&Mode::Write].stacks.is_empty());
}

#[test]
fn a_lock_order_example_carries_the_stacks_of_both_calls() {
    let mut l = ledger();
    let outer = frames(&["fcntl", "outer"]);
    let inner = frames(&["fcntl", "inner"]);
    let take = |ino, name, t| {
        by(
            10,
            on(ino, name, ev(kind::LOCK, F_SETLKW, F_WRLCK, t, t + 1, 0, 1)),
        )
    };
    l.record_with_stack(&take(A.0, A.1, 0), Some(outer.clone()));
    l.record_with_stack(&take(B.0, B.1, 10), Some(inner.clone()));
    let r = report(l);
    let x = &r.lock_order.edges[0].example;
    assert_eq!(x.held_stack.as_deref(), Some(&outer[..]));
    assert_eq!(x.taken_stack.as_deref(), Some(&inner[..]));
}

#[test]
fn intervals_are_the_recorded_samples_with_the_holds_that_blocked_each_wait() {
    let mut l = ledger().with_intervals();
    l.record(&by(10, ev(kind::LOCK, F_SETLKW, F_WRLCK, 0, 10, 0, 1)));
    l.record(&by(20, ev(kind::LOCK, F_SETLKW, F_RDLCK, 100, 4_000, 0, 2)));
    // Wait first, release after (out of order): the blocker is still open when the wait ends.
    let waited = l.take_intervals();
    l.record(&by(
        10,
        ev(kind::RELEASE_CLOSE, 0, F_UNLCK, 3_990, 3_990, 0, 1),
    ));
    l.record(&by(
        20,
        ev(kind::RELEASE_EXIT, 0, F_UNLCK, 5_000, 5_000, 0, 2),
    ));
    let rest = l.take_intervals();
    assert!(l.take_intervals().is_empty());
    let all: Vec<&Interval> = waited.iter().chain(&rest).collect();
    let summary: Vec<_> = all
        .iter()
        .map(|i| (i.metric, i.pid, i.mode, i.start_ns, i.end_ns))
        .collect();
    assert_eq!(
        summary,
        [
            (Metric::Wait, 10, Mode::Write, 0, 10),
            (Metric::Wait, 20, Mode::Read, 100, 4_000),
            (Metric::Hold, 10, Mode::Write, 10, 3_990),
            (Metric::Hold, 20, Mode::Read, 4_000, 5_000),
        ]
    );
    assert_eq!(
        all[1].blocked_by,
        [BlockingHold {
            owner: 1,
            pid: 10,
            since_ns: 10,
            until_ns: None
        }]
    );
    assert!(all[0].blocked_by.is_empty() && all[1].acquired);
    let r = report(l);
    let totals = |mode: Mode, metric: Metric| {
        let s = &r.locks[0].modes[&mode].metric(metric).summary;
        (s.count, s.total)
    };
    assert_eq!(totals(Mode::Read, Metric::Hold), (1, 1_000));
    assert_eq!(totals(Mode::Write, Metric::Hold), (1, 3_980));
    // Without asking, nothing is kept.
    let mut quiet = Ledger::default();
    quiet.record(&ev(kind::LOCK, F_SETLKW, F_WRLCK, 0, 10, 0, 1));
    assert!(quiet.take_intervals().is_empty());
}
