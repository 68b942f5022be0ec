mod common;

use common::{hold_summary, report, spread, two_stores};
use locktrace_report::compare::compare;
use locktrace_report::{Metric, Mode};

#[test]
fn side_by_side_with_ratios_to_the_first() {
    let a = report(&[
        (
            "layers.lock",
            Mode::Write,
            Metric::Wait,
            &spread(100, 10_000, 1_000_000),
        ),
        ("images.lock", Mode::Read, Metric::Hold, &[5_000]),
    ]);
    let b = report(&[(
        "layers.lock",
        Mode::Write,
        Metric::Wait,
        &spread(100, 5_000, 500_000),
    )]);
    let table = compare(&[("locked", &a), ("staged", &b)]).unwrap();
    assert_eq!(table.labels, ["locked", "staged"]);
    let keys: Vec<(&str, Mode, Metric)> = table
        .rows
        .iter()
        .map(|r| (r.lock.as_str(), r.mode, r.metric))
        .collect();
    assert_eq!(
        keys,
        [
            ("images.lock", Mode::Read, Metric::Hold),
            ("layers.lock", Mode::Write, Metric::Wait)
        ]
    );
    let wait = &table.rows[1];
    let r = &wait.ratios[0];
    assert_eq!(r.label, "staged/locked");
    assert_eq!(r.count, Some(1.0));
    assert!((r.max.unwrap() - 0.5).abs() < 1e-9, "{:?}", r.max);
    assert!((r.p50.unwrap() - 0.5).abs() < 0.01, "{:?}", r.p50);
    // images.lock is missing from the second report: no summary, no ratio.
    assert_eq!(table.rows[0].summaries[1], None);
    assert_eq!(table.rows[0].ratios[0].p99, None);

    let text = table.render_text();
    assert!(text.contains("layers.lock write wait"), "{text}");
    assert!(text.contains("staged/locked"), "{text}");
    assert!(text.contains("0.50x"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&table.to_json()).unwrap();
    assert_eq!(json["rows"][1]["summaries"][1]["max"], 500_000);
}

#[test]
fn same_named_lock_files_are_merged_not_first_picked() {
    // One store per pull: two layers.lock files, one held briefly, one for long.
    let fast = spread(100, 1_000, 100_000);
    let slow = spread(100, 10_000_000, 50_000_000);
    let isolated = two_stores(&fast, &slow);
    let shared = report(&[("layers.lock", Mode::Write, Metric::Hold, &fast)]);
    let table = compare(&[("shared", &shared), ("isolated", &isolated)]).unwrap();
    assert_eq!(table.rows.len(), 1, "one row per name, not per file");
    let row = &table.rows[0];
    assert_eq!(row.files, [1, 2]);
    let all: Vec<u64> = fast.iter().chain(&slow).copied().collect();
    let merged = row.summaries[1].unwrap();
    assert_eq!(merged, hold_summary(&all));
    assert_eq!((merged.count, merged.max), (200, 50_000_000));
    assert!(merged.p99 > 40_000_000, "{merged:?}");
    assert_eq!(row.ratios[0].count, Some(2.0));

    let text = table.render_text();
    assert!(
        text.contains(
            "layers.lock write hold (same-named lock files merged: shared 1, isolated 2)"
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&table.to_json()).unwrap();
    assert_eq!(json["rows"][0]["files"], serde_json::json!([1, 2]));
    // Single files keep the plain heading.
    let plain = compare(&[("a", &shared), ("b", &shared)])
        .unwrap()
        .render_text();
    assert!(plain.starts_with("layers.lock write hold\n"), "{plain}");
}
