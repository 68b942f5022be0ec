mod common;

use common::{actor, hold_summary, key, report, spread, two_stores};
use locktrace_report::merge::by_name;
use locktrace_report::{
    Drops, Metric, Mode, Recorder, ReportMeta, Source, TryOutcome, merge, new_histogram,
};

#[test]
fn merged_percentiles_equal_those_of_concatenated_samples() {
    let a = spread(997, 1_000, 3_000_000);
    let b: Vec<u64> = (0..513u64).map(|i| 50_000 + i * i * 97).collect();
    let ra = report(&[("layers.lock", Mode::Write, Metric::Wait, &a)]);
    let rb = report(&[
        ("layers.lock", Mode::Write, Metric::Wait, &b),
        ("images.lock", Mode::Read, Metric::Hold, &[7, 8, 9]),
    ]);
    let merged = merge(&[ra, rb]).unwrap();

    let all: Vec<u64> = a.iter().chain(&b).copied().collect();
    let direct = report(&[("layers.lock", Mode::Write, Metric::Wait, &all)]);
    let lock = merged.find("layers.lock").next().unwrap();
    let want = direct.locks[0].modes[&Mode::Write].wait.summary;
    assert_eq!(lock.modes[&Mode::Write].wait.summary, want);
    assert_eq!(want.count, 1510);
    assert_eq!(want.total, all.iter().sum::<u64>());

    // The histograms themselves are identical, bucket by bucket.
    let mut concat = new_histogram();
    for v in &all {
        concat.record(*v).unwrap();
    }
    let got = lock.histogram(Mode::Write, Metric::Wait).unwrap();
    assert_eq!(got.len(), concat.len());
    for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
        assert_eq!(
            got.value_at_quantile(q),
            concat.value_at_quantile(q),
            "q={q}"
        );
    }
    // A lock present in only one report comes through untouched.
    let img = merged.find("images.lock").next().unwrap();
    assert_eq!(img.modes[&Mode::Read].hold.summary.count, 3);
    assert_eq!(img.modes[&Mode::Read].hold.summary.min, 7);
}

#[test]
fn counts_drops_tries_and_top_lists_add() {
    let build = |pid_base: u32, lost: u64, dev: u64| {
        let mut rec = Recorder::new();
        let mut k = key("layers.lock");
        k.dev = Some(dev);
        for pid in 0..3 {
            rec.record(
                &k,
                Mode::Write,
                Metric::Hold,
                1_000 * u64::from(pid + 1),
                &actor(pid_base + pid),
            );
        }
        rec.record_try(&k, Mode::Write, TryOutcome::Refused);
        let mut meta = ReportMeta::new("lockbench", Source::Store);
        meta.duration_ns = 10;
        meta.drops = Drops {
            ringbuf_lost: lost,
            ..Drops::default()
        };
        meta.labels.insert("variant".into(), "staged".into());
        meta.labels.insert("run".into(), pid_base.to_string());
        rec.finish(meta)
    };
    let m = merge(&[build(1, 2, 1), build(2, 3, 1), build(10, 0, 9)]).unwrap();
    assert_eq!(m.meta.duration_ns, 30);
    assert_eq!(m.meta.drops.ringbuf_lost, 5);
    assert_eq!(
        m.meta.labels.get("variant").map(String::as_str),
        Some("staged")
    );
    assert!(
        !m.meta.labels.contains_key("run"),
        "labels that differ are dropped"
    );
    let lock = &m.locks[0];
    assert_eq!(lock.key.dev, None, "devices differ");
    assert!(lock.key.path.is_some(), "paths agree");
    let mode = &lock.modes[&Mode::Write];
    assert_eq!(mode.tries.refused, 3);
    assert_eq!(mode.hold.summary.count, 9);
    // pids 1..=4 and 10..=12; pid 2 and 3 appear in two reports and add up.
    let pid3 = mode.top_holders.iter().find(|a| a.pid == 3).unwrap();
    assert_eq!((pid3.count, pid3.total), (2, 3_000 + 2_000));
    assert_eq!(mode.top_holders.len(), 5);
    assert!(
        mode.top_holders
            .windows(2)
            .all(|w| w[0].total >= w[1].total)
    );
}

#[test]
fn refuses_to_mix_clock_sources_or_merge_nothing() {
    let k = report(&[("a.lock", Mode::Read, Metric::Wait, &[1])]);
    let mut s = k.clone();
    s.meta.source = Source::Store;
    let err = merge(&[k, s]).unwrap_err().to_string();
    assert!(err.contains("kernel and store"), "{err}");
    assert!(merge(&[]).is_err());
}

#[test]
fn by_name_merges_same_named_lock_files_of_one_report() {
    let mut r = two_stores(&[1_000, 2_000], &[30_000]);
    let img = report(&[("images.lock", Mode::Read, Metric::Wait, &[5])]);
    r.locks.extend(img.locks);
    let locks = by_name(&r.locks).unwrap();
    assert_eq!(
        locks.keys().copied().collect::<Vec<_>>(),
        ["images.lock", "layers.lock"]
    );

    let layers = &locks["layers.lock"];
    assert_eq!(layers.files, 2);
    assert_eq!(layers.label(), "layers.lock (2 files)");
    assert_eq!(
        layers.lock.modes[&Mode::Write].hold.summary,
        hold_summary(&[1_000, 2_000, 30_000])
    );
    // The files differ in path and inode, so the merged lock keeps no location (device and inode
    // identify a file only together).
    let k = &layers.lock.key;
    assert_eq!((k.path.as_deref(), k.dev, k.ino), (None, None, None));

    let images = &locks["images.lock"];
    assert_eq!(
        (images.files, images.label()),
        (1, "images.lock".to_string())
    );
    assert_eq!(*images.lock, r.locks[2], "a lone lock is kept as stored");
}
