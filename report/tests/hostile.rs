//! Hostile and corrupt input (issue 13, findings 10-12): no panic, no unbounded allocation, and
//! no tool working on numbers a report's histograms cannot back.

mod common;

use std::path::Path;

use common::{report, spread};
use locktrace_report::gate::{GateConfig, evaluate};
use locktrace_report::{
    MAX_REPORT_BYTES, Metric, MetricReport, Mode, Report, ReportError, compare, export, merge,
    new_histogram,
};

/// `r` as JSON bytes after `edit` changed the write hold metric of its first lock.
fn edited(r: &Report, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    edit(&mut json["locks"][0]["modes"]["write"]["hold"]);
    serde_json::to_vec(&json).unwrap()
}

fn holds(samples: &[u64]) -> Report {
    report(&[("layers.lock", Mode::Write, Metric::Hold, samples)])
}

/// The error of reading `bytes` as `bad.json`, checked to be one line naming the file.
fn refusal(bytes: &[u8]) -> String {
    let err = Report::from_json(bytes, Path::new("runs/bad.json")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("runs/bad.json: "), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    msg
}

#[test]
fn a_valid_report_reads_back() {
    let r = holds(&spread(500, 1_000, 9_000_000));
    let back = Report::from_slice(r.to_json().as_bytes()).unwrap();
    assert_eq!(back, r);
    // And one with an empty metric (wait was never recorded) and a single sample.
    Report::from_slice(holds(&[42]).to_json().as_bytes()).unwrap();
}

#[test]
fn min_above_max_is_refused_when_read_and_never_panics_in_memory() {
    let r = holds(&spread(100, 1_000, 1_000_000));
    let bytes = edited(&r, |m| {
        m["summary"]["min"] = 2_000_000.into();
        m["summary"]["max"] = 1_000.into();
    });
    let msg = refusal(&bytes);
    assert!(msg.contains("layers.lock write hold"), "{msg}");
    assert!(msg.contains("min 2000000 is above its max 1000"), "{msg}");

    // A report built in memory never went through validation; the tools must still not panic.
    let mut bad = r.clone();
    let summary = &mut bad.locks[0]
        .modes
        .get_mut(&Mode::Write)
        .unwrap()
        .hold
        .summary;
    (summary.min, summary.max) = (2_000_000, 1_000);
    let _ = merge(&[bad.clone(), bad.clone()]);
    let _ = compare::compare(&[("a", &bad), ("b", &r)]);
    let _ = export::bmf(&bad);
    let _ = export::hdr_text(&bad);
    let dir = tempfile::tempdir().unwrap();
    let _ = locktrace_report::plot_cdf(&[("bad", &bad)], &dir.path().join("cdf.svg"));
    let budgets = vec!["layers.lock:hold:p99<=1s".parse().unwrap()];
    let _ = evaluate(
        &bad,
        &GateConfig {
            budgets,
            ..GateConfig::default()
        },
    );
}

#[test]
fn a_summary_count_the_histogram_does_not_hold_is_refused() {
    // 2^64-1 samples claimed over a one-sample histogram used to pass `count>=1000`.
    let bytes = edited(&holds(&[5_000]), |m| {
        m["summary"]["count"] = u64::MAX.into();
    });
    let msg = refusal(&bytes);
    assert!(
        msg.contains("summary count 18446744073709551615 but the histogram holds 1 samples"),
        "{msg}"
    );
}

#[test]
fn summaries_that_disagree_with_the_histogram_are_refused() {
    let r = holds(&spread(1000, 1_000, 100_000_000));
    let s = r.locks[0].modes[&Mode::Write].hold.summary;
    let cases: [(&str, serde_json::Value, &str); 5] = [
        ("max", (s.max * 3).into(), "summary max"),
        ("min", (s.min / 2).into(), "summary min"),
        ("total", (s.total * 2).into(), "summary total"),
        ("mean", (s.mean + 1).into(), "summary mean"),
        ("p99", (s.p50).into(), "summary p99"),
    ];
    for (field, value, needle) in cases {
        let bytes = edited(&r, |m| m["summary"][field] = value);
        let msg = refusal(&bytes);
        assert!(msg.contains(needle), "{field}: {msg}");
    }
    // Samples in an empty histogram's summary are made up.
    let bytes = edited(&holds(&[5]), |m| {
        m["histogram"] = serde_json::Value::String(
            MetricReport::from_histogram(&new_histogram(), 0, 0, 0)
                .unwrap()
                .histogram,
        );
    });
    assert!(refusal(&bytes).contains("but the histogram holds 0 samples"));
}

#[test]
fn an_invalid_histogram_is_refused_when_read() {
    let bytes = edited(&holds(&[1_000, 2_000]), |m| {
        m["histogram"] = "bm90IGEgaGlzdG9ncmFt".into();
    });
    let msg = refusal(&bytes);
    assert!(msg.contains("corrupt report"), "{msg}");
    assert!(msg.contains("bad HdrHistogram encoding"), "{msg}");
    let bytes = edited(&holds(&[1_000]), |m| m["histogram"] = "%%%".into());
    assert!(refusal(&bytes).contains("bad base64"));
}

/// A ~100-byte stored histogram whose V2 header claims a 2 GiB payload.
fn histogram_claiming_2gib() -> String {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use flate2::{Compression, write::ZlibEncoder};
    use std::io::Write;
    let mut inner = Vec::new();
    inner.extend(0x1c84_9313u32.to_be_bytes()); // V2 cookie
    inner.extend((2u32 << 30).to_be_bytes()); // payload length: 2 GiB
    inner.extend(0u32.to_be_bytes()); // normalizing offset
    inner.extend(3u32.to_be_bytes()); // significant digits
    inner.extend(1u64.to_be_bytes()); // lowest
    inner.extend(2048u64.to_be_bytes()); // highest
    inner.extend(1f64.to_be_bytes()); // integer to double ratio
    inner.extend([2, 0]); // one count
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(&inner).unwrap();
    let deflated = z.finish().unwrap();
    let mut bytes = 0x1c84_9314u32.to_be_bytes().to_vec();
    bytes.extend((deflated.len() as u32).to_be_bytes());
    bytes.extend(deflated);
    STANDARD.encode(bytes)
}

#[test]
fn a_histogram_claiming_a_huge_payload_is_refused_without_allocating_it() {
    let text = histogram_claiming_2gib();
    assert!(text.len() < 120, "{}", text.len());
    let r = holds(&[1_000]);
    let bytes = edited(&r, |m| m["histogram"] = text.clone().into());
    assert!(refusal(&bytes).contains("claims 2147483648 payload bytes"));
    // In memory too: merge, export and plot decode and refuse it.
    let mut bad = r.clone();
    bad.locks[0]
        .modes
        .get_mut(&Mode::Write)
        .unwrap()
        .hold
        .histogram = text;
    assert!(merge(&[bad.clone(), r.clone()]).is_err());
    assert!(export::hdr_text(&bad).is_err());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cdf.svg");
    assert!(locktrace_report::plot_cdf(&[("bad", &bad)], &out).is_err());
    assert!(!out.exists());
}

#[test]
fn reports_past_the_size_cap_are_refused_with_a_bounded_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    // Sparse: the size is claimed, nothing is stored.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(MAX_REPORT_BYTES + 1)
        .unwrap();
    let err = Report::read(&big).unwrap_err();
    assert!(matches!(err, ReportError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("big.json"), "{err}");
    // A device that never ends is read only up to the cap.
    let err = Report::read(Path::new("/dev/zero")).unwrap_err();
    assert!(matches!(err, ReportError::TooLarge { .. }), "{err}");
    let huge = vec![b' '; MAX_REPORT_BYTES as usize + 1];
    assert!(matches!(
        Report::from_slice(&huge),
        Err(ReportError::TooLarge { .. })
    ));
}

/// A report whose write hold histogram holds `count` samples of 1ns (built directly: recording
/// that many would take centuries).
fn with_count(count: u64) -> Report {
    let mut hist = new_histogram();
    hist.record_n(1, count).unwrap();
    let mut r = holds(&[1]);
    r.locks[0].modes.get_mut(&Mode::Write).unwrap().hold =
        MetricReport::from_histogram(&hist, count, 1, 1).unwrap();
    r
}

#[test]
fn merging_counts_past_u64_is_refused_not_wrapped() {
    let half = with_count(1 << 61);
    let err = merge(&[half.clone(), half.clone(), half.clone(), half.clone()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("past 2^63-1"), "{err}");
    // Two of them still fit, and the result reads back.
    let two = merge(&[half.clone(), half]).unwrap();
    assert_eq!(two.locks[0].modes[&Mode::Write].hold.summary.count, 1 << 62);
    Report::from_slice(two.to_json().as_bytes()).unwrap();

    let mut tries = holds(&[1_000]);
    tries.locks[0]
        .modes
        .get_mut(&Mode::Write)
        .unwrap()
        .tries
        .acquired = u64::MAX - 1;
    let err = merge(&[tries.clone(), tries.clone()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("try-lock counts add up past 2^64"), "{err}");

    // Top lists are approximate anyway: their counts saturate instead of overflowing.
    let mut actors = holds(&[1_000]);
    actors.locks[0]
        .modes
        .get_mut(&Mode::Write)
        .unwrap()
        .top_holders[0]
        .count = u64::MAX;
    let merged = merge(&[actors.clone(), actors]).unwrap();
    assert_eq!(
        merged.locks[0].modes[&Mode::Write].top_holders[0].count,
        u64::MAX
    );
}

#[test]
fn a_sample_beyond_the_histogram_range_still_makes_a_valid_report() {
    let r = holds(&[u64::MAX, 5]);
    let back = Report::from_slice(r.to_json().as_bytes()).unwrap();
    assert_eq!(
        back.locks[0].modes[&Mode::Write].hold.summary.max,
        u64::MAX / 2
    );
}
