//! `record --summary`: the same ground-truth workload as the accuracy test, aggregated in the
//! kernel. Counts must be exact and every sample within its log-linear bucket (1/64 of its value)
//! of what the workload measured itself, on top of the event mode's tolerance.

use locktrace_report::{Collection, Metric, Mode};

use super::{
    SERIAL, Truth, assert_matches_within, assert_no_drops, kernel_available, only_lock, samples,
    tolerance, traced_scenario,
};

#[test]
fn summary_mode_matches_the_workloads_own_clock() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (lock, truth_file, report, out) = traced_scenario(dir.path(), &["--summary"], &[]);
    assert!(out.status.success(), "record failed: {:?}", out.status);
    assert_eq!(report.meta.collection, Some(Collection::Summary));
    let truth: Vec<Truth> = serde_json::from_slice(&std::fs::read(&truth_file).unwrap()).unwrap();
    let l = only_lock(&report, &lock);
    assert_no_drops(&report);
    let w = &l.modes[&Mode::Write];
    assert_eq!(w.tries.acquired, truth.len() as u64);
    for (metric, truths) in [
        (
            Metric::Hold,
            truth.iter().map(Truth::hold).collect::<Vec<_>>(),
        ),
        (Metric::Wait, truth.iter().map(Truth::wait).collect()),
    ] {
        let s = &w.metric(metric).summary;
        assert_eq!(s.count, truths.len() as u64, "{metric} count is exact");
        // Each sample sits at its bucket's mean: within 1/64 of its value, past the event
        // mode's tolerance.
        assert_matches_within(
            metric.as_str(),
            samples(&report, l, Mode::Write, metric),
            truths.clone(),
            |t| tolerance(t) + t / 64,
        );
        let (lo, hi) = truths.iter().copied().max_by_key(|&(_, hi)| hi).unwrap();
        assert!(
            s.max + tolerance(lo) >= lo && s.max <= hi + tolerance(hi),
            "{metric} max {} vs truth {lo}..{hi}",
            s.max
        );
    }
    // The lockload scenario's 200 ms round was contended, or this proves little.
    assert!(w.wait.summary.max > 100_000_000, "{:?}", w.wait.summary);
    // Per-event attributions are not made up in summary mode.
    assert!(w.blockers.is_empty() && report.lock_order.is_empty());
}

#[test]
fn summary_mode_refuses_options_it_cannot_honour() {
    if !kernel_available() {
        return;
    }
    let needs_every_event = "--summary aggregates in the kernel";
    for (flags, why) in [
        (&["--summary", "--stacks"][..], needs_every_event),
        (&["--summary", "--format", "ndjson"], needs_every_event),
        (
            &["--summary", "--attach", "tracepoint"],
            "--summary hooks the kernel's lock code itself",
        ),
    ] {
        let out = super::locktrace()
            .arg("record")
            .args(flags)
            .args(["--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}
