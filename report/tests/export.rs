mod common;

use common::{hold_summary, report, spread, two_stores};
use locktrace_report::export::{bmf, hdr_text, percentile_distribution};
use locktrace_report::{Metric, Mode, new_histogram, plot_cdf};

#[test]
fn bmf_has_one_benchmark_per_lock_mode_metric() {
    let r = report(&[
        (
            "layers.lock",
            Mode::Write,
            Metric::Wait,
            &spread(100, 1_000, 100_000),
        ),
        ("layers.lock", Mode::Write, Metric::Hold, &[5_000, 6_000]),
        ("images.lock", Mode::Read, Metric::Hold, &[42]),
    ]);
    let json: serde_json::Value = serde_json::from_str(&bmf(&r).unwrap()).unwrap();
    let obj = json.as_object().unwrap();
    let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
    names.sort();
    // images.lock read wait has no samples and is left out.
    assert_eq!(
        names,
        [
            "images.lock:read:hold",
            "layers.lock:write:hold",
            "layers.lock:write:wait"
        ]
    );
    let hold = &json["layers.lock:write:hold"];
    assert_eq!(hold.as_object().unwrap().len(), 3);
    assert_eq!(hold["max"]["value"], 6_000.0);
    assert_eq!(
        hold["p50"]["value"].as_f64().unwrap(),
        r.locks[1].modes[&Mode::Write].hold.summary.p50 as f64
    );
    assert_eq!(json["images.lock:read:hold"]["p99"]["value"], 42.0);
}

#[test]
fn hdr_text_is_the_classic_percentile_distribution() {
    let mut h = new_histogram();
    for v in 1..=10_000u64 {
        h.record(v * 1_000).unwrap();
    }
    let text = percentile_distribution(&h, 1_000.0);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    assert_eq!(lines.next(), Some(""));
    let rows: Vec<Vec<f64>> = lines
        .clone()
        .take_while(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert!(rows.len() > 20);
    assert!(
        rows.windows(2)
            .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1] && w[0][2] <= w[1][2])
    );
    let last = rows.last().unwrap();
    assert_eq!(last.len(), 3, "last line has no 1/(1-p) column");
    assert_eq!((last[1], last[2]), (1.0, 10_000.0));
    assert!(
        (last[0] - 10_000.0).abs() / 10_000.0 < 0.001,
        "max in µs: {}",
        last[0]
    );
    let median = rows.iter().find(|r| r[1] >= 0.5).unwrap();
    assert!((median[0] - 5_000.0).abs() < 10.0, "{median:?}");
    let footer: Vec<&str> = text.lines().filter(|l| l.starts_with("#[")).collect();
    assert_eq!(footer.len(), 3);
    assert!(
        footer[1].contains("Total count    =        10000"),
        "{}",
        footer[1]
    );
    assert!(
        footer[2].contains("SubBuckets     =         2048"),
        "{}",
        footer[2]
    );

    let r = report(&[
        ("layers.lock", Mode::Write, Metric::Wait, &[1_000, 2_000]),
        ("images.lock", Mode::Read, Metric::Hold, &[3_000]),
    ]);
    let all = hdr_text(&r).unwrap();
    let titles: Vec<&str> = all.lines().filter(|l| l.starts_with("# ")).collect();
    assert_eq!(
        titles,
        [
            "# images.lock read hold (values in microseconds)",
            "# layers.lock write wait (values in microseconds)"
        ]
    );
}

#[test]
fn plot_writes_svg_and_png() {
    let a = report(&[
        (
            "layers.lock",
            Mode::Write,
            Metric::Wait,
            &spread(300, 1_000, 50_000_000),
        ),
        (
            "layers.lock",
            Mode::Write,
            Metric::Hold,
            &spread(300, 10_000, 5_000_000),
        ),
        ("images.lock", Mode::Read, Metric::Wait, &[700]),
    ]);
    let b = report(&[(
        "layers.lock",
        Mode::Write,
        Metric::Wait,
        &spread(300, 1_000, 5_000_000),
    )]);
    let dir = tempfile::tempdir().unwrap();

    let svg = dir.path().join("cdf.svg");
    plot_cdf(&[("locked", &a), ("staged", &b)], &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    assert!(text.trim_end().ends_with("</svg>"));
    assert!(text.contains("layers.lock write wait"));
    assert!(text.contains("staged (n=300)"));
    assert!(text.contains("<polyline"), "series are drawn");

    let png = dir.path().join("cdf.png");
    plot_cdf(&[("locked", &a)], &png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 1_000);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    let err = plot_cdf(&[("a", &a)], &dir.path().join("cdf.gif")).unwrap_err();
    assert!(err.to_string().contains(".svg or .png"), "{err}");
    let empty = report(&[]);
    let err = plot_cdf(&[("a", &empty)], &svg).unwrap_err();
    assert!(err.to_string().contains("no lock activity"), "{err}");
}

#[test]
fn exports_and_plots_merge_same_named_lock_files() {
    let slow = spread(100, 10_000_000, 50_000_000);
    let fast = spread(100, 1_000, 100_000);
    let isolated = two_stores(&slow, &fast);
    let all: Vec<u64> = slow.iter().chain(&fast).copied().collect();
    let want = hold_summary(&all);

    // BMF keys benchmarks by name: both files go into the one benchmark.
    let json: serde_json::Value = serde_json::from_str(&bmf(&isolated).unwrap()).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 1);
    let hold = &json["layers.lock:write:hold"];
    assert_eq!(hold["max"]["value"], want.max as f64);
    assert_eq!(hold["p50"]["value"], want.p50 as f64);
    assert_eq!(hold["p99"]["value"], want.p99 as f64);

    let text = hdr_text(&isolated).unwrap();
    let titles: Vec<&str> = text.lines().filter(|l| l.starts_with("# ")).collect();
    assert_eq!(
        titles,
        ["# layers.lock write hold (values in microseconds; 2 lock files merged)"]
    );
    assert!(text.contains("Total count    =          200"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("cdf.svg");
    plot_cdf(&[("isolated", &isolated)], &svg).unwrap();
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        svg.matches("layers.lock write hold").count(),
        1,
        "one panel"
    );
    assert!(svg.contains("isolated (n=200, 2 files)"), "legend says so");
}
