//! Lock calls that end without their lock: a wait a signal cuts short (`hold --give-up-after`) and
//! a request the kernel refuses with EDEADLK (`lockload deadlock`). Event and summary mode see them
//! through different hooks and must count them alike, as the workload saw them.

use std::{os::unix::fs::MetadataExt, path::Path};

use locktrace_report::{LockReport, Mode, Report};

use super::{SERIAL, assert_no_drops, kernel_available, lockload, record, tolerance};

#[derive(serde::Deserialize)]
struct GaveUp {
    wait_ns: u64,
}

/// The report's lock on `path`.
fn lock_on<'a>(report: &'a Report, path: &Path) -> &'a LockReport {
    let ino = path.metadata().unwrap().ino();
    report
        .locks
        .iter()
        .find(|l| l.key.ino == Some(ino))
        .unwrap_or_else(|| panic!("no lock on {}: {:?}", path.display(), report.locks))
}

fn check(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let [waited, first, second] =
        ["waited.lock", "first.lock", "second.lock"].map(|n| dir.path().join(n));
    for p in [&waited, &first, &second] {
        std::fs::write(p, b"").unwrap();
    }
    let gave_up = dir.path().join("gave-up.json");
    let holder = dir.path().join("holder.out");
    let ll = lockload();
    // The holder must have its lock before the waiter asks: wait for its `@locked` line.
    let script = format!(
        "{ll} hold --path {w} --hold 600ms > {h} &
         until grep -q @locked {h}; do sleep 0.01; done
         {ll} hold --path {w} --give-up-after 150ms > {g}
         wait
         {ll} deadlock --first {a} --second {b} > /dev/null",
        ll = ll.display(),
        w = waited.display(),
        h = holder.display(),
        g = gave_up.display(),
        a = first.display(),
        b = second.display(),
    );
    let mut filter: Vec<&str> = flags.to_vec();
    for p in [&waited, &first, &second] {
        filter.extend(["--path", p.to_str().unwrap()]);
    }
    let (report, out) = record(dir.path(), &filter, &["sh", "-c", &script]);
    assert!(
        out.status.success(),
        "{flags:?}: record failed: {:?}",
        out.status
    );
    assert_no_drops(&report);

    let gave_up: GaveUp = serde_json::from_slice(&std::fs::read(&gave_up).unwrap()).unwrap();
    let w = &lock_on(&report, &waited).modes[&Mode::Write];
    assert_eq!(
        (w.tries.acquired, w.tries.interrupted, w.tries.errors),
        (1, 1, 0),
        "{flags:?}: the holder's lock and the waiter's interrupted wait: {:?}",
        w.tries
    );
    assert_eq!(
        w.wait.summary.count, 2,
        "{flags:?}: an interrupted wait is a wait"
    );
    let max = w.wait.summary.max;
    assert!(
        max.abs_diff(gave_up.wait_ns) <= tolerance(gave_up.wait_ns) + gave_up.wait_ns / 64,
        "{flags:?}: longest wait {max} ns, the waiter gave up after {} ns",
        gave_up.wait_ns
    );

    // `deadlock` holds --first, its child --second and waits for --first; then `deadlock` asks
    // for --second and is refused.
    let b = &lock_on(&report, &second).modes[&Mode::Write];
    assert_eq!(
        (b.tries.acquired, b.tries.errors, b.tries.edeadlk),
        (1, 1, 1),
        "{flags:?}: {:?}",
        b.tries
    );
    let a = &lock_on(&report, &first).modes[&Mode::Write];
    assert_eq!(
        (a.tries.acquired, a.tries.errors),
        (2, 0),
        "{flags:?}: {:?}",
        a.tries
    );
    assert_eq!(a.hold.summary.count, 2, "{flags:?}");
}

#[test]
fn interrupted_and_refused_calls_are_counted_in_event_mode() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    check(&[]);
}

#[test]
fn interrupted_and_refused_calls_are_counted_in_summary_mode() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    check(&["--summary"]);
}
