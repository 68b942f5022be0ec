//! `locktrace export --format folded|pprof` through the binary, with the pprof profile read back by
//! the real `go tool pprof` (installed by `cargo xtask setup`).

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output},
};

use locktrace_report::{
    Actor, Frames, LockKey, Metric, Mode, Recorder, Report, ReportMeta, Source,
};

fn locktrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_locktrace"))
        .args(args)
        .output()
        .expect("run locktrace")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn frames(names: &[&str]) -> Frames {
    names.iter().map(|s| s.to_string()).collect()
}

const MS: u64 = 1_000_000;

/// layers.lock: holds of 60 ms in pullLayersLockTest (3 samples) and 5 ms in commitImageLockTest,
/// waits of 14 ms in waitLayersLockTest (2); images.lock: one 1.5 ms read hold.
fn write_report(path: &Path, with_stacks: bool) {
    let mut rec = Recorder::new();
    let actor = Actor {
        pid: 42,
        comm: "podman".into(),
    };
    let layers = LockKey {
        path: Some("/var/lib/containers/storage/overlay-layers/layers.lock".into()),
        ..LockKey::named("layers.lock")
    };
    let images = LockKey::named("images.lock");
    let mut sample = |lock: &LockKey, mode, metric, stack: &[&str], ns| {
        rec.record(lock, mode, metric, ns, &actor);
        if with_stacks {
            rec.record_stack(lock, mode, metric, &frames(stack), ns);
        }
    };
    let pull = ["fcntl", "pullLayersLockTest", "main"];
    for ns in [10 * MS, 20 * MS, 30 * MS] {
        sample(&layers, Mode::Write, Metric::Hold, &pull, ns);
    }
    let commit = ["fcntl", "commitImageLockTest", "main"];
    sample(&layers, Mode::Write, Metric::Hold, &commit, 5 * MS);
    let wait = ["fcntl", "waitLayersLockTest", "main"];
    for _ in 0..2 {
        sample(&layers, Mode::Write, Metric::Wait, &wait, 7 * MS);
    }
    let read = ["flock", "readImagesLockTest", "main"];
    sample(&images, Mode::Read, Metric::Hold, &read, 1_500_000);
    let mut meta = ReportMeta::new("locktrace", Source::Kernel);
    meta.duration_ns = 2_000 * MS;
    rec.finish(meta).write(path).unwrap();
    // What was written is what a user's report would be: it passes validation on load.
    Report::read(path).unwrap();
}

/// `go tool pprof ARGS`, with Go's caches in `dir`; fails the test when Go is missing.
fn pprof(dir: &Path, args: &[&str]) -> String {
    let go = Command::new("go").arg("version").output();
    assert!(
        go.is_ok_and(|o| o.status.success()),
        "go not found; run cargo xtask setup"
    );
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .env("HOME", dir)
        .env("GOCACHE", dir.join("gocache"))
        .env("PPROF_TMPDIR", dir)
        .output()
        .expect("run go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `-top` rows by name: (flat, cum) as pprof prints them with `-unit=ms`.
fn top(text: &str) -> BTreeMap<String, (String, String)> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // flat flat% sum% cum cum% name
            (cols.len() == 6 && cols[1].ends_with('%') && cols[4].ends_with('%'))
                .then(|| (cols[5].to_owned(), (cols[0].to_owned(), cols[3].to_owned())))
        })
        .collect()
}

/// The samples of `go tool pprof -raw`: values, function names leaf first, labels.
fn raw_samples(raw: &str) -> Vec<(Vec<u64>, String, String)> {
    let (samples, locations) = raw
        .split_once("\nLocations\n")
        .expect("a Locations section");
    // `     1: 0x0 M=1 fcntl :0 s=0`
    let names: BTreeMap<&str, &str> = locations
        .lines()
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| {
            let (id, rest) = l.trim().split_once(": ")?;
            Some((id, rest.split_whitespace().nth(2)?))
        })
        .collect();
    let mut out = Vec::new();
    let mut lines = samples.lines().skip_while(|l| *l != "Samples:").skip(2);
    while let Some(line) = lines.next() {
        let Some((values, ids)) = line.split_once(':') else {
            break;
        };
        let values = values
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let frames: Vec<&str> = ids.split_whitespace().map(|id| names[id]).collect();
        let labels = lines.next().unwrap_or_default().trim().to_owned();
        out.push((values, frames.join(" "), labels));
    }
    out
}

fn row(flat: &str, cum: &str) -> (String, String) {
    (flat.to_owned(), cum.to_owned())
}

#[test]
fn go_tool_pprof_reads_the_profile_with_its_functions_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    write_report(&report, true);
    let profile = dir.path().join("out.pb.gz");
    let out = locktrace(&[
        "export",
        report.to_str().unwrap(),
        "--format",
        "pprof",
        "-o",
        profile.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = profile.to_str().unwrap();

    // Hold is the default sample type: 60 + 5 + 1.5 ms.
    let holds = pprof(dir.path(), &["-top", "-unit=ms", "-nodecount=100", file]);
    assert!(holds.contains("Type: hold"), "{holds}");
    let rows = top(&holds);
    assert_eq!(rows["pullLayersLockTest"], row("0", "60ms"), "{holds}");
    assert_eq!(rows["commitImageLockTest"], row("0", "5ms"), "{holds}");
    assert_eq!(rows["readImagesLockTest"], row("0", "1.50ms"), "{holds}");
    assert_eq!(rows["fcntl"], row("65ms", "65ms"), "{holds}");
    // The lock and mode frames are the roots, so they sum their lock's stacks.
    assert_eq!(rows["layers.lock"], row("0", "65ms"), "{holds}");
    assert_eq!(rows["main"], row("0", "66.50ms"), "{holds}");
    assert!(!rows.contains_key("waitLayersLockTest"), "{holds}");

    let waits = pprof(
        dir.path(),
        &["-top", "-unit=ms", "-sample_index=wait", file],
    );
    assert!(waits.contains("Type: wait"), "{waits}");
    let rows = top(&waits);
    assert_eq!(rows["waitLayersLockTest"], row("0", "14ms"), "{waits}");
    assert_eq!(rows["fcntl"], row("14ms", "14ms"), "{waits}");

    let counts = pprof(dir.path(), &["-top", "-sample_index=holds", file]);
    assert_eq!(
        top(&counts)["pullLayersLockTest"],
        row("0", "3"),
        "{counts}"
    );

    // Samples leaf first down to mode and lock, labelled, one metric's values each.
    let raw = pprof(dir.path(), &["-raw", file]);
    let samples = raw_samples(&raw);
    assert_eq!(samples.len(), 4, "{raw}");
    assert!(
        samples.contains(&(
            vec![2, 14 * MS, 0, 0],
            "fcntl waitLayersLockTest main write layers.lock".into(),
            "lock:[layers.lock] mode:[write]".into()
        )),
        "{raw}"
    );
    assert!(
        samples.contains(&(
            vec![0, 0, 3, 60 * MS],
            "fcntl pullLayersLockTest main write layers.lock".into(),
            "lock:[layers.lock] mode:[write]".into()
        )),
        "{raw}"
    );
    assert!(
        samples.contains(&(
            vec![0, 0, 1, 1_500_000],
            "flock readImagesLockTest main read images.lock".into(),
            "lock:[images.lock] mode:[read]".into()
        )),
        "{raw}"
    );

    // --metric keeps one metric's two sample types.
    let out = locktrace(&[
        "export",
        report.to_str().unwrap(),
        "--format",
        "pprof",
        "--metric",
        "wait",
        "-o",
        profile.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let waits = pprof(dir.path(), &["-top", "-unit=ms", file]);
    assert!(waits.contains("Type: wait"), "{waits}");
    assert_eq!(top(&waits)["fcntl"], row("14ms", "14ms"), "{waits}");
}

#[test]
fn folded_lines_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    write_report(&report, true);
    let r = report.to_str().unwrap();

    let out = locktrace(&["export", r, "--format", "folded"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "images.lock;read;main;readImagesLockTest;flock 1500\n\
         layers.lock;write;main;pullLayersLockTest;fcntl 60000\n\
         layers.lock;write;main;commitImageLockTest;fcntl 5000\n"
    );

    let out = locktrace(&["export", r, "--format", "folded", "--metric", "wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "layers.lock;write;main;waitLayersLockTest;fcntl 14000\n"
    );

    // --lock selects as for the other formats.
    let out = locktrace(&["export", r, "--format", "folded", "--lock", "images*"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "images.lock;read;main;readImagesLockTest;flock 1500\n"
    );

    // Piped, pprof goes to standard output as it would to a file.
    let out = locktrace(&["export", r, "--format", "pprof"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout[..2], [0x1f, 0x8b], "gzip magic");
}

#[test]
fn stack_formats_refuse_reports_without_stacks_and_metric_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("plain.json");
    write_report(&report, false);
    let r = report.to_str().unwrap();
    for format in ["folded", "pprof"] {
        let out = locktrace(&["export", r, "--format", format]);
        assert_eq!(out.status.code(), Some(2), "{format}");
        assert!(out.stdout.is_empty(), "{format}");
        assert_eq!(
            stderr(&out),
            format!("locktrace: {r} has no stacks (record with --stacks)\n")
        );
    }
    for format in ["bmf", "hdr"] {
        let out = locktrace(&["export", r, "--format", format, "--metric", "hold"]);
        assert_eq!(out.status.code(), Some(2), "{format}");
        assert_eq!(
            stderr(&out),
            "locktrace: --metric applies to --format folded and pprof only\n"
        );
        // Without --metric they still work on a report without stacks.
        let out = locktrace(&["export", r, "--format", format]);
        assert!(out.status.success(), "{format}: {}", stderr(&out));
    }
    let out = locktrace(&["export", r, "--format", "folded", "--metric", "both"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("[possible values: wait, hold]"),
        "{}",
        stderr(&out)
    );
}
