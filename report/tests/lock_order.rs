//! Lock order: edges "A held while taking B", their cycles as potential deadlocks, EDEADLK counts,
//! and the gate's `--fail-on-inversion` check (issue 14, lock order).

mod common;

use common::{actor, key};
use locktrace_report::gate::{self, GateConfig, LOCK_ORDER_CHECK, Verdict};
use locktrace_report::{
    LockKey, Mode, Recorder, Report, ReportMeta, Source, TryOutcome, merge, render_text,
};

/// A report in which process `pid` took each (held, taken) pair in that order.
fn nested(pairs: &[(u32, &str, &str)]) -> Report {
    let mut rec = Recorder::new();
    for (pid, held, taken) in pairs {
        let (h, t) = (key(held), key(taken));
        rec.record_try(&h, Mode::Write, TryOutcome::Acquired);
        rec.record_try(&t, Mode::Write, TryOutcome::Acquired);
        rec.record_order(
            (&h, Mode::Write, None),
            (&t, Mode::Read, None),
            &actor(*pid),
        );
    }
    rec.finish(ReportMeta::new("locktrace", Source::Kernel))
}

fn path(name: &str) -> String {
    key(name).to_string()
}

fn inversion_gate(r: &Report) -> gate::GateResult {
    gate::evaluate(
        r,
        &GateConfig {
            fail_on_inversion: true,
            ..GateConfig::default()
        },
    )
}

#[test]
fn opposite_orders_read_back_as_a_potential_deadlock() {
    let r = nested(&[(1, "a.lock", "b.lock"), (2, "b.lock", "a.lock")]);
    let back = Report::from_slice(r.to_json().as_bytes()).unwrap();
    assert_eq!(back, r);
    assert_eq!(r.lock_order.edges.len(), 2);
    assert_eq!(
        r.lock_order.cycles,
        vec![vec![path("a.lock"), path("b.lock")]]
    );
    let text = render_text(&r);
    let a_b = format!(
        "{} → {} ×1 (first: worker1[1], write then read)",
        path("a.lock"),
        path("b.lock")
    );
    assert!(text.contains(&a_b), "{text}");
    let deadlock = format!(
        "potential deadlock: {a} → {b} → {a} (pid 1 comm worker1; pid 2 comm worker2)",
        a = path("a.lock"),
        b = path("b.lock")
    );
    assert!(text.contains(&deadlock), "{text}");
}

#[test]
fn a_report_without_nesting_has_no_lock_order_field() {
    let r = nested(&[]);
    assert!(!r.to_json().contains("lock_order"));
    assert!(!render_text(&r).contains("lock order"));
}

#[test]
fn tampered_cycles_or_edeadlk_counts_are_refused() {
    let r = nested(&[(1, "a.lock", "b.lock"), (2, "b.lock", "a.lock")]);
    let mut no_cycle = r.clone();
    no_cycle.lock_order.cycles.clear();
    let err = Report::from_slice(no_cycle.to_json().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("lock order"), "{err}");

    let mut rec = Recorder::new();
    let k: LockKey = key("a.lock");
    rec.record_try(&k, Mode::Write, TryOutcome::Error);
    rec.record_deadlock(&k, Mode::Write);
    let mut dl = rec.finish(ReportMeta::new("locktrace", Source::Kernel));
    assert!(render_text(&dl).contains("EDEADLK: 1"));
    Report::from_slice(dl.to_json().as_bytes()).unwrap();
    dl.locks[0]
        .modes
        .get_mut(&Mode::Write)
        .unwrap()
        .tries
        .edeadlk = 2;
    let err = Report::from_slice(dl.to_json().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("EDEADLK"), "{err}");
}

#[test]
fn merge_adds_edges_and_finds_cycles_across_reports() {
    let one = nested(&[(1, "a.lock", "b.lock")]);
    let two = nested(&[(3, "a.lock", "b.lock")]);
    let three = nested(&[(2, "b.lock", "a.lock")]);
    assert!(
        merge(&[one.clone(), two.clone()])
            .unwrap()
            .lock_order
            .cycles
            .is_empty()
    );
    let m = merge(&[one, two, three]).unwrap();
    let ab = m.lock_order.edge(&path("a.lock"), &path("b.lock")).unwrap();
    assert_eq!((ab.count, ab.example.pid), (2, 1));
    assert_eq!(m.lock_order.cycles.len(), 1);
}

#[test]
fn the_gate_fails_on_an_inversion_and_passes_a_consistent_order() {
    let bad = inversion_gate(&nested(&[(1, "a.lock", "b.lock"), (2, "b.lock", "a.lock")]));
    assert_eq!((bad.verdict, bad.exit_code), (Verdict::Fail, 1));
    assert_eq!(bad.checks.len(), 1);
    assert_eq!(bad.checks[0].name, LOCK_ORDER_CHECK);
    assert!(
        bad.render_text()
            .contains("FAIL         lock-order:inversions: potential deadlock")
    );
    let json: serde_json::Value = serde_json::from_str(&bad.to_json()).unwrap();
    assert_eq!(json["checks"][0]["kind"], "lock_order");
    assert_eq!(json["checks"][0]["cycle"][1], path("b.lock"));
    assert!(bad.to_junit().contains(r#"type="lock_order""#));

    let good = inversion_gate(&nested(&[(1, "a.lock", "b.lock"), (2, "a.lock", "b.lock")]));
    assert_eq!((good.verdict, good.exit_code), (Verdict::Pass, 0));
    assert_eq!(good.checks[0].verdict, Verdict::Pass);
    assert!(
        good.to_junit()
            .contains(r#"classname="lock-order:inversions""#)
    );
}

#[test]
fn without_the_flag_an_inversion_is_not_a_check() {
    let r = nested(&[(1, "a.lock", "b.lock"), (2, "b.lock", "a.lock")]);
    let result = gate::evaluate(&r, &GateConfig::default());
    assert_eq!(result.exit_code, 2, "nothing to check");
}
