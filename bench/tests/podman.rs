//! `lockbench compare-podman` end to end: podman 4.3 (the host's), podman 5.8 (from the rootfs
//! `cargo xtask setup-podman` builds), store-core locked and staged on the same images.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{lockbench, text};

#[test]
fn compare_podman_without_podman_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let result = lockbench(&[
        "compare-podman",
        "--podman",
        "/no/such/podman",
        "--trace",
        "off",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let (_, stderr) = text(&result);
    assert!(!result.status.success());
    assert!(stderr.contains("/no/such/podman not found"), "{stderr}");
}

/// Whether both podmans are here: the host's (podman-old) and the rootfs `cargo xtask setup-podman`
/// builds (podman-staged), and root to chroot into it. Otherwise says why the test is skipped, or
/// panics where CI set up both (LOCKBENCH_REQUIRE_PODMAN), so CI cannot pass by skipping.
fn podmans_or_skip(what: &str) -> bool {
    let rootfs = Path::new(env!("CARGO_BIN_EXE_lockbench"))
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("podman-sid/rootfs/usr/bin/podman"));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing = if Command::new("podman").arg("--version").output().is_err() {
        Some("the host's podman is not installed (cargo xtask setup-podman)")
    } else if !rootfs.is_some_and(|p| p.is_file()) {
        Some("no podman-sid rootfs (cargo xtask setup-podman)")
    } else if !root {
        Some("not root (chroot)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var_os("LOCKBENCH_REQUIRE_PODMAN").is_some() => {
            panic!("{what} is required here (LOCKBENCH_REQUIRE_PODMAN) but {why}")
        }
        Some(why) => {
            eprintln!("skipped: {what} ({why})");
            false
        }
    }
}

#[test]
fn compare_podman_runs_every_variant_on_the_same_images() {
    if !podmans_or_skip("podman 4.3 against podman 5.8 against store-core") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = lockbench(&[
        "compare-podman",
        "--pulls",
        "2",
        "--image-size",
        "2M",
        "--layers",
        "2",
        "--repeat",
        "2",
        "--trace",
        "off",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&result);
    assert!(result.status.success(), "{stderr}");
    for column in [
        "podman-old",
        "podman-staged",
        "store-locked",
        "store-staged",
    ] {
        assert!(stdout.contains(column), "{column} missing: {stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("podman-report.json")).unwrap()).unwrap();
    assert_eq!(report["failed"], false);
    assert_eq!(
        report["sync"], "metadata",
        "store-core at podman's durability"
    );
    let variants = report["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 4);
    let client = |i: usize| variants[i]["client"].as_str().unwrap().to_string();
    assert!(client(0).starts_with("podman version 4."), "{}", client(0));
    assert!(client(1).starts_with("podman version 5."), "{}", client(1));
    assert!(client(2).starts_with("store-core"), "{}", client(2));
    for v in variants {
        let pulls = v["pulls"].as_array().unwrap();
        assert_eq!(pulls.len(), 4, "2 pulls x 2 repetitions: {v}");
        assert!(pulls.iter().all(|p| p["duration_ns"].as_u64().unwrap() > 0));
        assert_eq!(v["makespans_ns"].as_array().unwrap().len(), 2);
        // One reader loop ran images, create and rm (podman's or lockbench's) at least once per
        // repetition, and none of them failed.
        for op in ["images", "create", "rm"] {
            let runs = v["readers"][op]["count"].as_u64().unwrap_or(0);
            assert!(runs >= 2, "{op}: {}", v["readers"]);
        }
        assert_eq!(v["reader_errors"], 0, "{v}");
    }
    let html = fs::read_to_string(out.join("podman-report.html")).unwrap();
    for label in [
        "podman-old",
        "podman-staged",
        "store-locked",
        "store-staged",
        "5.8",
    ] {
        assert!(html.contains(label), "{label} missing from the HTML report");
    }
    // The chrooted podman's mounts lived in its own namespace: none is left on the host.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("podman-sid/rootfs"),
        "mounts left behind: {mounts}"
    );
}

#[test]
fn compare_podman_names_the_missing_rootfs() {
    let dir = tempfile::tempdir().unwrap();
    let result = lockbench(&[
        "compare-podman",
        "--variants",
        "podman-staged",
        "--podman-rootfs",
        dir.path().to_str().unwrap(),
        "--trace",
        "off",
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    let (_, stderr) = text(&result);
    assert!(!result.status.success());
    assert!(stderr.contains("has no /usr/bin/podman"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
}
