//! The gate's text, JSON and JUnit output, byte for byte, against what the gate wrote before it
//! was split into budget, evaluation and format modules (`fixtures/gate_output.txt`).

mod common;

use common::{report, sample_report, spread, two_stores};
use locktrace_report::gate::{Baseline, Budget, GateConfig, evaluate};
use locktrace_report::{Metric, Mode, Report};

fn budgets(exprs: &[&str]) -> Vec<Budget> {
    exprs.iter().map(|e| e.parse().unwrap()).collect()
}

fn against(report: &Report, tolerance_pct: f64) -> Option<Baseline<'_>> {
    Some(Baseline {
        report,
        tolerance_pct,
    })
}

#[test]
fn text_json_and_junit_output_is_unchanged() {
    let base = sample_report(1);
    let slow = sample_report(2);
    let mut dropped = sample_report(1);
    dropped.meta.drops.ringbuf_lost = 3;
    let fewer = report(&[(
        "overlay-layers/layers.lock",
        Mode::Write,
        Metric::Hold,
        &spread(1000, 1_000_000, 100_000_000),
    )]);
    let stores = two_stores(
        &spread(100, 1_000, 100_000),
        &spread(100, 10_000_000, 50_000_000),
    );
    let stores_base = two_stores(&spread(100, 1_000, 100_000), &spread(10, 1, 5));
    // Pass, fail, inconclusive and unevaluable budgets of every statistic kind.
    let exprs = [
        "layers.lock:hold:p99<=50ms",
        "*.lock:wait:max<1s",
        "images.lock:wait:count>=10",
        "images.lock:wait:p99<=1s",
        "containers.lock:hold:p99<=1s",
        "images.lock:write:wait:p99<=1s",
        "layers.lock:read:hold:p50<1ms",
        "layers.lock:hold:total>1s",
    ];
    let cases: Vec<(&Report, GateConfig)> = vec![
        (
            &base,
            GateConfig {
                budgets: budgets(&exprs),
                ..GateConfig::default()
            },
        ),
        (
            &base,
            GateConfig {
                budgets: budgets(&exprs),
                min_samples: 100,
                ..GateConfig::default()
            },
        ),
        (
            &dropped,
            GateConfig {
                budgets: budgets(&exprs[..2]),
                baseline: against(&dropped, 10.0),
                ..GateConfig::default()
            },
        ),
        (
            &slow,
            GateConfig {
                baseline: against(&base, 10.0),
                min_samples: 50,
                ..GateConfig::default()
            },
        ),
        (
            &fewer,
            GateConfig {
                baseline: against(&base, 5.5),
                ..GateConfig::default()
            },
        ),
        (
            &base,
            GateConfig {
                baseline: against(&fewer, 10.0),
                ..GateConfig::default()
            },
        ),
        (&base, GateConfig::default()),
        (
            &stores,
            GateConfig {
                budgets: budgets(&["layers.lock:hold:count>=150", "layers.lock:hold:max<=1ms"]),
                baseline: against(&stores_base, 10.0),
                ..GateConfig::default()
            },
        ),
    ];
    let mut all = String::new();
    for (report, config) in &cases {
        let result = evaluate(report, config);
        all += &result.render_text();
        all += &result.to_json();
        all += &result.to_junit();
        all += &format!("exit {}\n", result.exit_code);
    }
    let expected = include_str!("fixtures/gate_output.txt");
    // Compared line by line first so a difference is shown where it is.
    for (n, (got, want)) in all.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "line {}", n + 1);
    }
    assert_eq!(all, expected);
}
