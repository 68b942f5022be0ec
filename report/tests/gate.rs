mod common;

use common::{hold_summary, report, sample_report, spread, two_stores};
use locktrace_report::gate::{
    Baseline, Budget, CheckKind, CmpOp, GateConfig, Limit, Verdict, evaluate, parse_budgets,
    parse_duration,
};
use locktrace_report::{Metric, Mode, Report, Statistic};

fn budgets(exprs: &[&str]) -> Vec<Budget> {
    exprs.iter().map(|e| e.parse().unwrap()).collect()
}

#[test]
fn parses_good_expressions() {
    let b: Budget = "layers.lock:hold:p99<=50ms".parse().unwrap();
    assert_eq!(
        (
            b.lock.as_str(),
            b.mode,
            b.metric,
            b.statistic,
            b.op,
            b.limit
        ),
        (
            "layers.lock",
            None,
            Metric::Hold,
            Statistic::P99,
            CmpOp::Le,
            Limit::Fixed(50_000_000)
        )
    );
    let b: Budget = "*.lock:wait:max<1s".parse().unwrap();
    assert_eq!(
        (b.lock.as_str(), b.op, b.limit),
        ("*.lock", CmpOp::Lt, Limit::Fixed(1_000_000_000))
    );
    let b: Budget = "images.lock:wait:count>=10".parse().unwrap();
    assert_eq!(
        (b.statistic, b.op, b.limit),
        (Statistic::Count, CmpOp::Ge, Limit::Fixed(10))
    );
    let b: Budget = " layers.lock:write:hold:p999 > 1.5µs ".parse().unwrap();
    assert_eq!(
        (b.mode, b.statistic, b.op, b.limit),
        (
            Some(Mode::Write),
            Statistic::P999,
            CmpOp::Gt,
            Limit::Fixed(1_500)
        )
    );
    let b: Budget = "/var/lib/containers/storage/overlay-layers/layers.lock:read:wait:mean==12us"
        .parse()
        .unwrap();
    assert_eq!(
        b.lock,
        "/var/lib/containers/storage/overlay-layers/layers.lock"
    );
    assert_eq!(
        (b.mode, b.op, b.limit),
        (Some(Mode::Read), CmpOp::Eq, Limit::Fixed(12_000))
    );
    // A ':' inside the lock pattern is kept when the part before the metric is not a mode.
    let b: Budget = "c:/x.lock:hold:total<=2s".parse().unwrap();
    assert_eq!((b.lock.as_str(), b.mode), ("c:/x.lock", None));
    assert_eq!(parse_duration("850ns").unwrap(), 850);
    assert_eq!(parse_duration("0.5s").unwrap(), 500_000_000);
}

#[test]
fn rejects_bad_expressions_with_reasons() {
    let cases = [
        ("layers.lock:hold:p99", "no comparison"),
        ("layers.lock:hold:p99=50ms", "use =="),
        ("layers.lock:hold:p99<>50ms", "unknown comparison"),
        ("layers.lock:p99<=50ms", "expected LOCK"),
        ("layers.lock:hodl:p99<=50ms", "unknown metric"),
        ("layers.lock:hold:p98<=50ms", "unknown statistic"),
        ("layers.lock:hold:p99<=50", "needs a unit"),
        ("layers.lock:hold:p99<=50min", "unknown duration unit"),
        ("layers.lock:hold:p99<=", "needs a unit"),
        ("layers.lock:hold:p99<=1.2.3ms", "bad number"),
        ("layers.lock:wait:count>=10ms", "whole number"),
        (":hold:p99<=5ms", "empty lock pattern"),
    ];
    for (expr, needle) in cases {
        let err = expr.parse::<Budget>().unwrap_err().to_string();
        assert!(err.contains(needle), "{expr}: {err}");
        assert!(err.contains(expr), "error names the budget: {err}");
    }
}

#[test]
fn budgets_file_holds_expressions_and_structured_entries() {
    let text = r#"
        [[budget]]
        expr = "layers.lock:hold:p99<=50ms"

        [[budget]]
        lock = "images.lock"
        mode = "read"
        metric = "wait"
        stat = "count"
        op = ">="
        limit = 10
    "#;
    let b = parse_budgets(text, "b.toml".as_ref()).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].limit, Limit::Fixed(50_000_000));
    assert_eq!(
        (b[1].mode, b[1].statistic, b[1].limit),
        (Some(Mode::Read), Statistic::Count, Limit::Fixed(10))
    );

    for (bad, needle) in [
        ("", "no [[budget]]"),
        ("[[budget]]\nexpr = \"x\"\nlock = \"y\"", "either `expr`"),
        ("[[budget]]\nexprr = \"x\"", "unknown field"),
        ("[[budget]]\nexpr = \"a:hold:p99<=5\"", "budget #1"),
        ("[[budget", "b.toml"),
    ] {
        let err = parse_budgets(bad, "b.toml".as_ref())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{bad:?}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn budgets_pass_and_fail_with_measured_value_and_limit() {
    let r = sample_report(1);
    let config = GateConfig {
        budgets: budgets(&[
            "layers.lock:hold:p99<=50ms",
            "*.lock:wait:max<1s",
            "images.lock:wait:count>=10",
        ]),
        ..GateConfig::default()
    };
    let result = evaluate(&r, &config);
    assert_eq!(result.exit_code, 1);
    assert_eq!(result.verdict, Verdict::Fail);
    let fail: Vec<_> = result
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .collect();
    assert_eq!(fail.len(), 1);
    let f = fail[0];
    assert_eq!(f.lock(), Some("overlay-layers/layers.lock"));
    assert!(f.measured().unwrap() > 50_000_000);
    assert!(
        f.message.contains("layers.lock:hold:p99<=50ms"),
        "{}",
        f.message
    );
    assert!(f.message.contains("measured 99"), "{}", f.message);
    assert!(f.message.contains("limit <= 50.0ms"), "{}", f.message);
    // *.lock matched both locks' wait (one mode each) and passed; count check passed.
    assert_eq!(result.count(Verdict::Pass), 3);
    let text = result.render_text();
    assert!(text.lines().next().unwrap().starts_with("FAIL"), "{text}");
    assert!(text.contains("1 failed"), "{text}");

    let ok = evaluate(
        &r,
        &GateConfig {
            budgets: budgets(&["layers.lock:write:hold:p99<=150ms"]),
            ..GateConfig::default()
        },
    );
    assert_eq!((ok.exit_code, ok.verdict), (0, Verdict::Pass));
}

#[test]
fn too_few_samples_are_inconclusive_not_passed() {
    let r = sample_report(1);
    let config = GateConfig {
        budgets: budgets(&["images.lock:wait:p99<=1s", "images.lock:wait:count>=10"]),
        min_samples: 100,
        ..GateConfig::default()
    };
    let result = evaluate(&r, &config);
    let p99 = &result.checks[0];
    assert_eq!(p99.verdict, Verdict::Inconclusive);
    assert!(
        p99.message.contains("only 30 samples (need 100)"),
        "{}",
        p99.message
    );
    // Count is the measurement itself; it never needs a minimum.
    assert_eq!(result.checks[1].verdict, Verdict::Pass);
    assert_eq!(result.exit_code, 0);
    let junit = result.to_junit();
    assert!(
        junit.contains("<skipped message=\"budget images.lock:wait:p99&lt;=1s"),
        "{junit}"
    );
    assert!(
        junit.contains(r#"tests="2" failures="0" errors="0" skipped="1""#),
        "{junit}"
    );
}

#[test]
fn missing_lock_or_mode_cannot_be_evaluated() {
    let r = sample_report(1);
    for expr in [
        "containers.lock:hold:p99<=1s",
        "images.lock:write:wait:p99<=1s",
    ] {
        let result = evaluate(
            &r,
            &GateConfig {
                budgets: budgets(&[expr, "layers.lock:hold:p99<=1ms"]),
                ..GateConfig::default()
            },
        );
        // A broken budget outranks a failing one: exit 2.
        assert_eq!(result.exit_code, 2, "{expr}");
        assert_eq!(result.checks[0].verdict, Verdict::Error);
        assert!(result.checks[0].message.contains(expr));
        assert!(result.to_junit().contains("<error message="));
    }
    let nothing = evaluate(&r, &GateConfig::default());
    assert_eq!(nothing.exit_code, 2);
}

#[test]
fn regression_against_baseline() {
    let base = sample_report(1);
    let slower = sample_report(2); // every hold statistic doubles
    let config = |b| GateConfig {
        baseline: Some(Baseline {
            report: b,
            tolerance_pct: 10.0,
        }),
        min_samples: 50,
        ..GateConfig::default()
    };
    let result = evaluate(&slower, &config(&base));
    assert_eq!(result.exit_code, 1);
    let failed: Vec<_> = result
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .collect();
    assert_eq!(failed.len(), 2, "hold p50 and p99");
    for c in &failed {
        assert_eq!(c.kind(), CheckKind::Regression);
        assert_eq!(c.metric(), Some(Metric::Hold));
        let (m, b) = (c.measured().unwrap() as f64, c.baseline().unwrap() as f64);
        assert!((m / b - 2.0).abs() < 0.01, "{}", c.message);
        assert!(
            c.message.contains("baseline") && c.message.contains("limit"),
            "{}",
            c.message
        );
    }
    // images.lock has 30 samples < 50: inconclusive, and the empty hold histograms too.
    let images: Vec<_> = result
        .checks
        .iter()
        .filter(|c| c.lock() == Some("overlay-images/images.lock"))
        .collect();
    assert!(!images.is_empty());
    assert!(images.iter().all(|c| c.verdict == Verdict::Inconclusive));

    // Same data against itself: no failures. Faster than baseline is never a regression.
    assert_eq!(evaluate(&base, &config(&base)).exit_code, 0);
    assert_eq!(evaluate(&base, &config(&slower)).exit_code, 0);

    // A lock that disappeared from the run is reported, not silently passed.
    let fewer = report(&[(
        "overlay-layers/layers.lock",
        Mode::Write,
        Metric::Hold,
        &spread(1000, 1_000_000, 100_000_000),
    )]);
    let gone = evaluate(&fewer, &config(&base));
    assert!(
        gone.checks
            .iter()
            .any(|c| c.verdict == Verdict::Inconclusive
                && c.message.contains("in the baseline but not in this report"))
    );
}

#[test]
fn json_verdict_carries_checks() {
    let r = sample_report(1);
    let result = evaluate(
        &r,
        &GateConfig {
            budgets: budgets(&["layers.lock:hold:p99<=50ms"]),
            ..GateConfig::default()
        },
    );
    let json: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
    assert_eq!(json["verdict"], "fail");
    assert_eq!(json["exit_code"], 1);
    assert_eq!(json["checks"][0]["limit"], 50_000_000);
    assert_eq!(json["checks"][0]["statistic"], "p99");
    assert_eq!(json["checks"][0]["mode"], "write");
}

fn against(base: &Report) -> GateConfig<'_> {
    GateConfig {
        baseline: Some(Baseline {
            report: base,
            tolerance_pct: 10.0,
        }),
        min_samples: 50,
        ..GateConfig::default()
    }
}

#[test]
fn baseline_merges_same_named_lock_files_on_both_sides() {
    let fast = spread(100, 1_000, 100_000);
    let slow = spread(100, 10_000_000, 50_000_000);
    // Baseline: one store slow, one fast. Now both are slow: the lock's median got far worse,
    // although each file is no slower than the baseline's first one.
    let base = two_stores(&slow, &fast);
    let now = two_stores(&slow, &slow);
    let result = evaluate(&now, &against(&base));
    // One check per mode, metric and statistic of the name, not per file.
    assert_eq!(result.checks.len(), 4, "{}", result.render_text());
    assert_eq!(result.exit_code, 1, "{}", result.render_text());
    let p50 = result
        .checks
        .iter()
        .find(|c| c.name == "regression:layers.lock:write:hold:p50")
        .unwrap();
    assert_eq!(p50.verdict, Verdict::Fail);
    let all_base: Vec<u64> = slow.iter().chain(&fast).copied().collect();
    let all_now: Vec<u64> = slow.iter().chain(&slow).copied().collect();
    assert_eq!(p50.baseline(), Some(hold_summary(&all_base).p50));
    assert_eq!(p50.measured(), Some(hold_summary(&all_now).p50));
    assert_eq!((p50.samples(), p50.files()), (Some(200), Some(2)));
    assert!(
        p50.message
            .starts_with("regression layers.lock (2 files) write hold p50: measured"),
        "{}",
        p50.message
    );
    assert!(p50.message.contains(" (2 files), limit"), "{}", p50.message);

    // The other way round the merged lock got faster: a pass, over all 200 samples of each side.
    let result = evaluate(&two_stores(&fast, &slow), &against(&now));
    assert_eq!(result.exit_code, 0, "{}", result.render_text());
    let holds = result
        .checks
        .iter()
        .filter(|c| c.metric() == Some(Metric::Hold));
    assert!(holds.map(|c| c.samples()).all(|n| n == Some(200)));
}

#[test]
fn budgets_hold_for_all_same_named_lock_files_together() {
    let fast = spread(100, 1_000, 100_000);
    let slow = spread(100, 10_000_000, 50_000_000);
    let r = two_stores(&fast, &slow);
    let result = evaluate(
        &r,
        &GateConfig {
            budgets: budgets(&[
                "layers.lock:hold:count>=150",
                "layers.lock:hold:max<=1ms",
                // A full path still picks out one file.
                "/var/lib/containers/storage-1/layers.lock:hold:max<=1ms",
            ]),
            ..GateConfig::default()
        },
    );
    let text = result.render_text();
    assert_eq!(
        result.checks.len(),
        3,
        "one check per budget and name: {text}"
    );
    let [count, max, one] = &result.checks[..] else {
        unreachable!()
    };
    assert_eq!(count.verdict, Verdict::Pass, "{text}");
    assert_eq!((count.measured(), count.files()), (Some(200), Some(2)));
    assert_eq!(max.verdict, Verdict::Fail, "{text}");
    assert_eq!(max.measured(), Some(50_000_000));
    assert!(
        max.message
            .contains("on layers.lock (2 files) write: measured 50.0ms"),
        "{}",
        max.message
    );
    assert_eq!(one.verdict, Verdict::Pass, "{text}");
    assert_eq!((one.measured(), one.files()), (Some(100_000), Some(1)));
    assert!(
        one.message.contains("on layers.lock write"),
        "{}",
        one.message
    );
    assert_eq!(result.exit_code, 1);
}

#[test]
fn corrupt_histogram_in_same_named_files_cannot_be_evaluated() {
    let mut r = two_stores(&[1_000], &[2_000]);
    r.locks[1]
        .modes
        .get_mut(&Mode::Write)
        .unwrap()
        .hold
        .histogram = "bm90IGEgaGlzdG9ncmFt".into();
    let budget = evaluate(
        &r,
        &GateConfig {
            budgets: budgets(&["layers.lock:hold:max<=1s"]),
            ..GateConfig::default()
        },
    );
    assert_eq!(budget.exit_code, 2);
    assert!(
        budget.checks[0].message.contains("HdrHistogram"),
        "{}",
        budget.checks[0].message
    );
    let good = report(&[("layers.lock", Mode::Write, Metric::Hold, &[1_000])]);
    for (now, base, needle) in [
        (&r, &good, "regression: "),
        (&good, &r, "regression: baseline: "),
    ] {
        let result = evaluate(now, &against(base));
        assert_eq!(result.exit_code, 2, "{}", result.render_text());
        assert!(
            result
                .checks
                .iter()
                .any(|c| c.verdict == Verdict::Error && c.message.starts_with(needle)),
            "{}",
            result.render_text()
        );
    }
    assert!(locktrace_report::compare::compare(&[("a", &r), ("b", &good)]).is_err());
}

#[test]
fn relative_budgets_take_their_limit_from_the_reference() {
    // The reference's layers.lock write hold p99 is about 10x this report's.
    let reference = sample_report(10);
    let current = sample_report(1);
    let gate = |exprs: &[&str], reference: Option<&Report>| {
        let config = GateConfig {
            budgets: budgets(exprs),
            reference,
            ..GateConfig::default()
        };
        evaluate(&current, &config)
    };
    let pass = gate(&["layers.lock:write:hold:p99<=0.2x"], Some(&reference));
    assert_eq!(pass.verdict, Verdict::Pass, "{}", pass.render_text());
    let layers = reference.find("layers.lock").next().unwrap();
    let base_p99 = Statistic::P99.of(&layers.modes[&Mode::Write].hold.summary);
    assert_eq!(
        pass.checks[0].limit(),
        Some((0.2 * base_p99 as f64).round() as u64)
    );
    assert!(
        pass.render_text().contains("0.2 x the reference's"),
        "{}",
        pass.render_text()
    );
    let fail = gate(&["layers.lock:write:hold:p99<=0.05x"], Some(&reference));
    assert_eq!(fail.verdict, Verdict::Fail, "{}", fail.render_text());
    // No reference, or none with that lock mode: the gate cannot be evaluated (exit 2).
    let none = gate(&["layers.lock:write:hold:p99<=0.2x"], None);
    assert_eq!((none.verdict, none.exit_code), (Verdict::Error, 2));
    assert!(
        none.render_text().contains("--relative-to"),
        "{}",
        none.render_text()
    );
    let layers_only = report(&[(
        "overlay-layers/layers.lock",
        Mode::Write,
        Metric::Hold,
        &spread(10, 1_000, 2_000),
    )]);
    // A limit from fewer reference samples than --min-samples decides nothing.
    let few = evaluate(
        &current,
        &GateConfig {
            budgets: budgets(&["layers.lock:write:hold:p99<=1x"]),
            reference: Some(&layers_only),
            min_samples: 20,
            ..GateConfig::default()
        },
    );
    assert_eq!(few.verdict, Verdict::Inconclusive, "{}", few.render_text());
    assert!(
        few.render_text().contains("reference has only 10 samples"),
        "{}",
        few.render_text()
    );
    let other = gate(&["images.lock:read:wait:p99<=1x"], Some(&layers_only));
    assert_eq!(other.verdict, Verdict::Error, "{}", other.render_text());
    assert!(
        other.render_text().contains("reference report has no"),
        "{}",
        other.render_text()
    );
}
