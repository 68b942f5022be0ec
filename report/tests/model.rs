mod common;

use common::{actor, key, report, spread};
use locktrace_report::{
    Drops, LockKey, Metric, Mode, Recorder, Report, ReportError, ReportMeta, SCHEMA_VERSION,
    Source, TryOutcome, new_histogram, render_text,
};

#[test]
fn write_then_read_is_equal() {
    let mut rec = Recorder::new();
    let k = key("overlay-layers/layers.lock");
    for v in spread(1000, 1_000, 5_000_000) {
        rec.record(&k, Mode::Write, Metric::Hold, v, &actor(7));
        rec.record(&k, Mode::Read, Metric::Wait, v / 3, &actor(8));
    }
    rec.record_try(&k, Mode::Write, TryOutcome::Refused);
    let mut meta = ReportMeta::new("locktrace", Source::Kernel);
    meta.attach = Some("fentry".into());
    meta.kernel = Some("6.12.0".into());
    meta.command = vec!["podman".into(), "pull".into()];
    meta.duration_ns = 42;
    meta.drops = Drops {
        ringbuf_lost: 3,
        ..Drops::default()
    };
    meta.labels.insert("variant".into(), "staged".into());
    let original = rec.finish(meta);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    original.write(&path).unwrap();
    let back = Report::read(&path).unwrap();
    assert_eq!(back, original);
    // Meta is flattened into the top-level object.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["schema_version"], SCHEMA_VERSION);
    assert_eq!(json["source"], "kernel");
    assert_eq!(json["drops"]["ringbuf_lost"], 3);
    assert!(json.get("meta").is_none());
    // Atomic write leaves no temp file behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn newer_schema_is_rejected_with_upgrade_hint() {
    let r = report(&[("a.lock", Mode::Write, Metric::Wait, &[5, 6])]);
    let mut json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    json["schema_version"] = (SCHEMA_VERSION + 1).into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let err = Report::read(&path).unwrap_err();
    assert!(
        matches!(err, ReportError::UnsupportedSchema { found, .. } if found == u64::from(SCHEMA_VERSION) + 1)
    );
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[test]
fn malformed_reports_give_one_line_errors() {
    let cases: [(&str, &str); 4] = [
        ("{}", "no schema_version"),
        ("{\"schema_version\": \"1\"}", "not a positive integer"),
        ("{\"schema_version\": 1}", "missing field"),
        ("not json", "expected"),
    ];
    for (text, needle) in cases {
        let err = Report::from_json(text.as_bytes(), "x.json".as_ref()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(needle), "{text}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    let err = Report::read("/nonexistent/report.json".as_ref()).unwrap_err();
    assert!(matches!(err, ReportError::Io { .. }));
}

#[test]
fn summary_matches_samples() {
    let samples: Vec<u64> = (1..=10_000).map(|i| i * 1_000).collect();
    let r = report(&[("layers.lock", Mode::Write, Metric::Wait, &samples)]);
    let s = r.locks[0].modes[&Mode::Write].wait.summary;
    assert_eq!(s.count, 10_000);
    assert_eq!(s.min, 1_000);
    assert_eq!(s.max, 10_000_000);
    assert_eq!(s.total, samples.iter().sum::<u64>());
    assert_eq!(s.mean, s.total / 10_000);
    let near = |got: u64, want: u64| (got as f64 - want as f64).abs() / (want as f64) < 0.002;
    assert!(near(s.p50, 5_000_000), "{}", s.p50);
    assert!(near(s.p90, 9_000_000), "{}", s.p90);
    assert!(near(s.p99, 9_900_000), "{}", s.p99);
    assert!(s.p999 <= s.max);
    // Hold was never recorded for this mode: an empty, decodable histogram.
    let hold = &r.locks[0].modes[&Mode::Write].hold;
    assert_eq!(hold.summary.count, 0);
    let h = r.histogram(&r.locks[0], Mode::Write, Metric::Hold).unwrap();
    assert_eq!(h.len(), 0);
    let h = r.histogram(&r.locks[0], Mode::Write, Metric::Wait).unwrap();
    assert_eq!(h.len(), 10_000);
    assert!(r.histogram(&r.locks[0], Mode::Read, Metric::Wait).is_err());
}

#[test]
fn top_lists_rank_by_total_time() {
    let mut rec = Recorder::new();
    let k = LockKey::named("images.lock");
    for pid in 1..=8u32 {
        for _ in 0..pid {
            rec.record(
                &k,
                Mode::Read,
                Metric::Hold,
                1_000 * u64::from(pid),
                &actor(pid),
            );
        }
    }
    let snap = rec.snapshot(ReportMeta::new("t", Source::Store));
    let top = &snap.locks[0].modes[&Mode::Read].top_holders;
    assert_eq!(top.len(), 5);
    assert_eq!(
        top.iter().map(|a| a.pid).collect::<Vec<_>>(),
        [8, 7, 6, 5, 4]
    );
    assert_eq!(top[0].count, 8);
    assert_eq!(top[0].total, 64_000);
    // The snapshot left the recorder intact.
    rec.record(&k, Mode::Read, Metric::Hold, 1, &actor(1));
    let fin = rec.finish(ReportMeta::new("t", Source::Store));
    assert_eq!(fin.locks[0].modes[&Mode::Read].hold.summary.count, 37);
}

#[test]
fn find_matches_names_paths_and_globs() {
    let r = report(&[
        (
            "overlay-layers/layers.lock",
            Mode::Write,
            Metric::Wait,
            &[1],
        ),
        (
            "overlay-images/images.lock",
            Mode::Write,
            Metric::Wait,
            &[1],
        ),
        ("storage.lock", Mode::Read, Metric::Wait, &[1]),
    ]);
    let names = |p: &str| r.find(p).map(|l| l.key.name.clone()).collect::<Vec<_>>();
    assert_eq!(names("layers.lock"), ["overlay-layers/layers.lock"]);
    assert_eq!(names("*.lock").len(), 3);
    assert_eq!(names("overlay-*/*.lock").len(), 2);
    assert_eq!(
        names("/var/lib/containers/storage/overlay-images/images.lock"),
        ["overlay-images/images.lock"]
    );
    assert!(names("containers.lock").is_empty());
}

#[test]
fn text_rendering_uses_human_units() {
    let r = report(&[(
        "layers.lock",
        Mode::Write,
        Metric::Hold,
        &[2_000_000, 3_000_000],
    )]);
    let text = render_text(&r);
    assert!(
        text.contains("/var/lib/containers/storage/layers.lock"),
        "{text}"
    );
    assert!(text.contains("2.00ms"), "{text}");
    assert!(text.contains("5.00ms"), "{text}"); // total
    assert!(text.contains("source: kernel"), "{text}");
    assert!(text.contains("drops: none"), "{text}");
    assert!(text.contains("top holders: worker"), "{text}");
    // new_histogram is the shared constructor; sanity-check it is empty and auto-resizing.
    let mut h = new_histogram();
    h.record(u64::MAX / 4).unwrap();
    assert_eq!(h.len(), 1);
}

#[test]
fn corrupt_histogram_is_a_clear_error() {
    let mut r = report(&[("layers.lock", Mode::Write, Metric::Wait, &[1, 2, 3])]);
    r.locks[0]
        .modes
        .get_mut(&Mode::Write)
        .unwrap()
        .wait
        .histogram = "bm90IGEgaGlzdG9ncmFt".into();
    let err = r
        .histogram(&r.locks[0], Mode::Write, Metric::Wait)
        .unwrap_err()
        .to_string();
    assert!(err.contains("write wait"), "{err}");
    assert!(err.contains("HdrHistogram"), "{err}");
    let err = locktrace_report::merge(&[r.clone(), r])
        .unwrap_err()
        .to_string();
    assert!(err.contains("layers.lock"), "{err}");
}
