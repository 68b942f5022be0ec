//! What `lockbench pull` and `run` sync at each `--sync` level, watched with `strace`: how many
//! syncs, and that a staged commit syncs nothing while it holds `layers.lock`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{gen_one_image, text};

/// Whether `strace` is here for `what`; otherwise says why it is skipped, or panics where the kernel
/// tests must run (LOCKTRACE_REQUIRE_KERNEL_TESTS), so CI cannot pass by skipping.
fn strace_or_skip(what: &str) -> bool {
    let here = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !here && std::env::var_os("LOCKTRACE_REQUIRE_KERNEL_TESTS").is_some() {
        panic!("{what} is required here but strace is missing (apt-get install strace)");
    }
    if !here {
        eprintln!("skipped: {what} (no strace)");
    }
    here
}

/// How many times `lockbench args` and its children called fsync, fdatasync and syncfs, in that order.
fn syncs_of(trace: &Path, args: &[&str]) -> [usize; 3] {
    let result = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync,syncfs", "-o"])
        .arg(trace)
        .arg(env!("CARGO_BIN_EXE_lockbench"))
        .args(args)
        .output()
        .expect("strace runs");
    assert!(result.status.success(), "{}", text(&result).1);
    let log = fs::read_to_string(trace).unwrap();
    ["fsync(", "fdatasync(", "syncfs("].map(|call| {
        log.lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|c| c.starts_with(call))
            })
            .count()
    })
}

#[test]
fn pull_issues_the_syncs_of_its_sync_level() {
    if !strace_or_skip("counting a pull's syncs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = gen_one_image(&dir.path().join("images"));
    let syncs = |level: &str| {
        let store = dir.path().join(level);
        let trace = dir.path().join(format!("{level}.strace"));
        let args = ["pull", "--store", store.to_str().unwrap(), "--sync", level];
        syncs_of(&trace, &[&args[..], &[image.to_str().unwrap()]].concat())
    };
    assert_eq!(syncs("none"), [0, 0, 0], "[fsync, fdatasync, syncfs]");
    // layers.json and images.json written once each, fdatasync'ed; no directory, no contents.
    assert_eq!(syncs("metadata"), [0, 2, 0], "[fsync, fdatasync, syncfs]");
    // Also the layer's filesystem, and the directories renamed into: overlay, overlay-layers and
    // overlay-images.
    assert_eq!(syncs("filesystem"), [3, 2, 1], "[fsync, fdatasync, syncfs]");
}

#[test]
fn run_hands_the_sync_level_to_its_workers() {
    if !strace_or_skip("counting a run's syncs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let syncfs_of_run = |level: &str| {
        let out = dir.path().join(level);
        let trace = dir.path().join(format!("{level}.strace"));
        let mut args = vec!["run", "--pulls", "2", "--readers", "1", "--modes", "staged"];
        args.extend([
            "--image-size",
            "1M",
            "--layers",
            "2",
            "--quiet",
            "--trace",
            "off",
        ]);
        args.extend(["--sync", level, "--out", out.to_str().unwrap()]);
        syncs_of(&trace, &args)[2]
    };
    assert_eq!(syncfs_of_run("none"), 0);
    // One syncfs per layer the two pulls extract.
    assert_eq!(syncfs_of_run("filesystem"), 4);
}

/// The sync calls (fsync, fdatasync, syncfs) a traced process made while it held `layers.lock` for
/// writing, read from an `strace -f` log of openat/fcntl/close and those calls: a hold runs from the
/// F_WRLCK fcntl on a layers.lock fd to that fd's close, in the process that took it.
fn syncs_under_layers_lock(log: &str) -> Vec<String> {
    let mut lock_fd: std::collections::HashMap<&str, String> = Default::default();
    let mut holding: Option<(&str, String)> = None;
    let mut found = Vec::new();
    for line in log.lines() {
        // strace pads the pid column: "8809  openat(" as well as "12345 openat(".
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if call.starts_with("openat(") && call.contains("/layers.lock\"") {
            if let Some((_, fd)) = call.rsplit_once(" = ") {
                lock_fd.insert(pid, fd.trim().to_string());
            }
        } else if let Some(fd) = lock_fd.get(pid)
            && call.starts_with(&format!("fcntl({fd}, F_SETLKW, {{l_type=F_WRLCK"))
        {
            holding = Some((pid, fd.clone()));
        } else if let Some((holder, fd)) = &holding
            && *holder == pid
            && call.starts_with(&format!("close({fd})"))
        {
            holding = None;
        } else if holding.is_some()
            && ["fsync(", "fdatasync(", "syncfs("]
                .iter()
                .any(|c| call.starts_with(c))
        {
            found.push(line.to_string());
        }
    }
    found
}

#[test]
fn staged_pull_syncs_layers_json_before_taking_layers_lock() {
    if !strace_or_skip("watching a pull's syncs against its locks") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = gen_one_image(&dir.path().join("images"));
    let under_lock = |mode: &str| {
        let store = dir.path().join(mode);
        let trace = dir.path().join(format!("{mode}.strace"));
        let result = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=openat,fcntl,close,fsync,fdatasync,syncfs",
            ])
            .arg("-o")
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_lockbench"))
            .args(["pull", "--sync", "metadata", "--mode", mode, "--store"])
            .args([&store, &image])
            .output()
            .expect("strace runs");
        assert!(result.status.success(), "{}", text(&result).1);
        syncs_under_layers_lock(&fs::read_to_string(&trace).unwrap())
    };
    // Staged: layers.json's temp copy is fdatasync'ed before the lock; under it only renames.
    assert_eq!(under_lock("staged"), Vec::<String>::new());
    // Locked (the before): both layers.json writes are synced under the lock. Also proves the log
    // parsing sees holds and syncs at all.
    assert_eq!(under_lock("locked").len(), 2, "locked pull");
}
