//! The `lockbench` binary end to end: a tiny run, and bad input that must fail clearly.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{gen_one_image, lockbench, text};

fn tiny_run(out: &Path, modes: &str) -> Output {
    tiny_run_with(out, modes, &["--trace", "off"])
}

fn tiny_run_with(out: &Path, modes: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--pulls",
        "2",
        "--readers",
        "1",
        "--modes",
        modes,
        "--image-size",
        "1M",
        "--layers",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    lockbench(&args)
}

/// The run is marked failed, pull-1 has no time and an error saying `error_contains`, and pull-0's
/// result was kept.
fn assert_failed_pull_1_kept_pull_0(out: &Path, error_contains: &str) {
    let report = report(out);
    assert_eq!(report["failed"], true);
    let pulls = report["modes"][0]["pulls"].as_array().unwrap();
    let ok = pulls.iter().find(|p| p["worker"] == "pull-0").unwrap();
    assert!(
        ok["duration_ns"].as_u64().unwrap() > 0,
        "the healthy pull's result was lost"
    );
    let bad = pulls.iter().find(|p| p["worker"] == "pull-1").unwrap();
    assert!(bad["duration_ns"].is_null());
    assert!(
        bad["error"].as_str().unwrap().contains(error_contains),
        "{bad}"
    );
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(out.join("report.json")).expect("report.json written"))
        .expect("report.json parses")
}

#[test]
fn tiny_run_writes_table_report_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = tiny_run(&out, "locked,staged,isolated");
    let (stdout, stderr) = text(&result);
    assert!(result.status.success(), "run failed: {stderr}");
    for word in [
        "makespan",
        "locked",
        "staged",
        "isolated",
        "layers.lock W hold p99",
    ] {
        assert!(stdout.contains(word), "table lacks {word:?}:\n{stdout}");
    }
    let report = report(&out);
    assert_eq!(report["failed"], false);
    let modes = report["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 3);
    for m in modes {
        let pulls = m["pulls"].as_array().unwrap();
        assert_eq!(pulls.len(), 2, "{}", m["mode"]);
        assert!(pulls.iter().all(|p| p["duration_ns"].as_u64().unwrap() > 0));
        assert!(m["makespan_median_ns"].as_u64().unwrap() > 0);
        assert_eq!(m["store_report"]["source"], "store");
        let locks = m["store_report"]["locks"].as_array().unwrap();
        assert!(
            locks
                .iter()
                .any(|l| l["key"]["name"].as_str().unwrap().ends_with("layers.lock")),
            "{}: no layers.lock in the store report",
            m["mode"]
        );
        assert!(
            m["reader"]["all"]["count"].as_u64().unwrap() > 0,
            "{}: no reader ops",
            m["mode"]
        );
    }
    let html = fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "report.html has no inline plot");
    assert!(html.contains("makespan"));
    assert!(!html.contains("<?xml"), "SVG prolog leaked into HTML");
    assert!(out.join("plots/reader-latency.svg").is_file());
    assert!(out.join("plots/timeline-locked.svg").is_file());
    assert!(out.join("plots/cdf-store.svg").is_file());
}

#[test]
fn store_tuning_reaches_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = tiny_run_with(
        &out,
        "staged",
        &["--trace", "off", "--durable", "--extract-nice", "3"],
    );
    assert!(result.status.success(), "{}", text(&result).1);
    let report = report(&out);
    assert_eq!(report["params"]["durable"], true);
    assert_eq!(
        report["params"]["sync"], "filesystem",
        "--durable is an alias"
    );
    assert_eq!(report["params"]["extract_nice"], 3);
    let html = fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("nice +3") && html.contains("durable stores (fsync)"),
        "report.html does not say how the stores ran"
    );
}

#[test]
fn sync_level_reaches_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = tiny_run_with(&out, "staged", &["--trace", "off", "--sync", "metadata"]);
    assert!(result.status.success(), "{}", text(&result).1);
    let report = report(&out);
    assert_eq!(report["params"]["sync"], "metadata");
    assert_eq!(report["params"]["durable"], false);
    let html = fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("sync=metadata") && !html.contains("durable stores"),
        "report.html does not say how the stores synced"
    );
}

#[test]
fn bad_sync_level_fails_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let image = gen_one_image(&dir.path().join("images"));
    let store = dir.path().join("store");
    let out = dir.path().join("out");
    let pull = |extra: &[&str]| {
        let mut args = vec!["pull", "--store", store.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(image.to_str().unwrap());
        lockbench(&args)
    };
    for (result, names) in [
        (pull(&["--sync", "bogus"]), "bogus"),
        (pull(&["--durable", "--sync", "metadata"]), "--durable"),
        (
            lockbench(&["run", "--sync", "bogus", "--out", out.to_str().unwrap()]),
            "bogus",
        ),
    ] {
        let (_, stderr) = text(&result);
        assert!(!result.status.success());
        assert!(stderr.contains(names), "unclear error: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    }
    assert!(!store.exists(), "a refused pull opened the store");
    assert!(!out.exists(), "a refused run wrote its output");
}

#[test]
fn corrupt_blob_fails_the_run_naming_worker_and_image_but_keeps_other_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(tiny_run(&out, "staged").status.success());
    // Flip one byte of an img-01 layer: same size, so the image cache still takes it.
    let blobs = out.join("images/img-01/blobs/sha256");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("images/lockbench-gen.json")).unwrap()).unwrap();
    let digest = index["images"][1]["layers"][0]["digest"].as_str().unwrap();
    let blob = blobs.join(digest.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, bytes).unwrap();

    let result = tiny_run(&out, "staged");
    let (_, stderr) = text(&result);
    assert!(
        !result.status.success(),
        "a corrupt layer must fail the run"
    );
    assert!(
        stderr.contains("pull-1") && stderr.contains("img-01"),
        "unclear error: {stderr}"
    );
    assert_failed_pull_1_kept_pull_0(&out, "img-01");
}

#[test]
fn pull_of_missing_dir_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let missing = dir.path().join("no-such-image");
    let result = lockbench(&[
        "pull",
        "--store",
        store.to_str().unwrap(),
        "--mode",
        "staged",
        missing.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&result);
    assert!(!result.status.success());
    assert!(stderr.contains("no-such-image"), "unclear error: {stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "error is not one line: {stderr}"
    );
}

/// `lockbench gen` of one one-layer image into `images`; returns its layout directory.
/// `lockbench pull --mode locked REFERENCE` into `store`.
fn pull_into(store: &Path, reference: &str) -> Output {
    lockbench(&[
        "pull",
        "--store",
        store.to_str().unwrap(),
        "--mode",
        "locked",
        reference,
    ])
}

#[test]
fn pull_of_unknown_tag_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = gen_one_image(&dir.path().join("images"));
    let store = dir.path().join("store");
    let pull = |reference: String| pull_into(&store, &reference);
    let result = pull(format!("{}:nosuchtag", image.display()));
    let (_, stderr) = text(&result);
    assert!(!result.status.success());
    assert!(stderr.contains("nosuchtag"), "unclear error: {stderr}");

    let ok = pull(format!("{}:latest", image.display()));
    assert!(ok.status.success(), "{}", text(&ok).1);
    assert!(text(&ok).0.contains("1 layers created"));
}

/// The manifest digest index.json lists for the only image in `image`.
fn manifest_digest(image: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(image.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn pull_by_digest_takes_the_manifest_index_json_lists() {
    let dir = tempfile::tempdir().unwrap();
    let image = gen_one_image(&dir.path().join("images"));
    let digest = manifest_digest(&image);
    assert!(digest.starts_with("sha256:"), "{digest}");
    let result = pull_into(
        &dir.path().join("store"),
        &format!("{}@{digest}", image.display()),
    );
    let (stdout, stderr) = text(&result);
    assert!(result.status.success(), "{stderr}");
    assert!(stdout.contains("1 layers created"), "{stdout}");
}

#[test]
fn pull_by_bad_digest_fails_on_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = gen_one_image(&dir.path().join("images"));
    let store = dir.path().join("store");
    let absent = format!("sha256:{}", "0".repeat(64));
    for (digest, says) in [
        ("sha256:1234", "64 lowercase hex digits"),
        ("md5:0123456789abcdef", "64 lowercase hex digits"),
        (absent.as_str(), "no image with reference"),
    ] {
        let result = pull_into(&store, &format!("{}@{digest}", image.display()));
        let (_, stderr) = text(&result);
        assert!(!result.status.success(), "{digest} was pulled");
        assert!(
            stderr.contains(digest) && stderr.contains(says),
            "unclear error for {digest}: {stderr}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "error is not one line: {stderr}"
        );
    }
}

#[test]
fn pull_over_max_layer_size_fails_naming_the_limit_and_leaves_no_layer() {
    let dir = tempfile::tempdir().unwrap();
    let image = gen_one_image(&dir.path().join("images"));
    let store = dir.path().join("store");
    for mode in ["locked", "staged"] {
        let result = lockbench(&[
            "pull",
            "--store",
            store.to_str().unwrap(),
            "--mode",
            mode,
            "--max-layer-size",
            "16K",
            image.to_str().unwrap(),
        ]);
        let (_, stderr) = text(&result);
        assert!(
            !result.status.success(),
            "{mode}: a 64K layer passed a 16K limit"
        );
        assert!(
            stderr.contains("limit of 16384 bytes"),
            "{mode}: unclear error: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        let mut left: Vec<_> = fs::read_dir(store.join("overlay"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name != "staging")
            .collect();
        left.extend(
            fs::read_dir(store.join("overlay/staging"))
                .unwrap()
                .map(|e| e.unwrap().file_name()),
        );
        assert!(
            left.is_empty(),
            "{mode}: the partial layer was kept: {left:?}"
        );
    }
    let ok = pull_into(&store, image.to_str().unwrap());
    assert!(ok.status.success(), "{}", text(&ok).1);
}

#[test]
fn run_hands_max_layer_size_to_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let result = tiny_run_with(
        dir.path(),
        "staged",
        &["--trace", "off", "--max-layer-size", "64K"],
    );
    assert!(!result.status.success(), "512K layers passed a 64K limit");
    let report = report(dir.path());
    assert_eq!(report["failed"], true);
    for pull in report["modes"][0]["pulls"].as_array().unwrap() {
        assert!(
            pull["error"]
                .as_str()
                .unwrap()
                .contains("limit of 65536 bytes"),
            "{pull}"
        );
    }
}

#[test]
fn bad_size_and_mode_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let result = lockbench(&[
        "gen",
        "--out",
        dir.path().to_str().unwrap(),
        "--layer-size",
        "12Q",
    ]);
    assert!(!result.status.success());
    assert!(text(&result).1.contains("12Q"));
    let result = lockbench(&[
        "run",
        "--modes",
        "locked,fast",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    assert!(text(&result).1.contains("fast"));
}

/// Whether the test runs as root; otherwise says why it is skipped.
fn root_or_skip(why: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: {why}");
    }
    root
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_the_run_naming_the_workers() {
    if !root_or_skip("mounting a small tmpfs to fill up needs root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stores = out.join("stores");
    fs::create_dir_all(&stores).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1500k", "lockbench-test"])
        .arg(&stores)
        .status()
        .unwrap();
    if !mounted.success() {
        eprintln!("skipped: cannot mount tmpfs here");
        return;
    }
    let _mount = Mount(stores);
    let result = lockbench(&[
        "run",
        "--pulls",
        "2",
        "--readers",
        "1",
        "--modes",
        "staged",
        "--image-size",
        "4M",
        "--layers",
        "2",
        "--trace",
        "off",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&result);
    assert!(!result.status.success(), "a full disk must fail the run");
    assert!(
        stderr.contains("No space left on device"),
        "unclear error: {stderr}"
    );
    assert!(
        stderr.contains("pull-0 (img-00)") || stderr.contains("pull-1 (img-01)"),
        "{stderr}"
    );
    assert_eq!(report(&out)["failed"], true);
}

#[test]
fn a_worker_stuck_opening_its_store_times_out_naming_it_and_keeps_the_others() {
    if !root_or_skip("the bind mount that keeps the held lock file in the store needs root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stores = dir.path().join("stores");
    // pull-1's storage.lock, write-locked by this process, so its worker blocks in Store::open
    // before it can print `ready`. `run` empties the stores before each mode; a bind mount cannot
    // be unlinked, so the held file stays in place.
    let held = dir.path().join("held.lock");
    fs::write(&held, b"").unwrap();
    let lock_file = stores.join("isolated/pull-1/storage.lock");
    fs::create_dir_all(lock_file.parent().unwrap()).unwrap();
    fs::write(&lock_file, b"").unwrap();
    let mounted = Command::new("mount")
        .arg("--bind")
        .arg(&held)
        .arg(&lock_file)
        .status()
        .unwrap();
    if !mounted.success() {
        eprintln!("skipped: cannot bind-mount here");
        return;
    }
    let _mount = Mount(lock_file);
    let holder = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&held)
        .unwrap();
    let whole_file = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: the fd is open for the call; the flock struct is valid.
    let locked = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&holder),
            libc::F_SETLK,
            &whole_file,
        )
    };
    assert_eq!(locked, 0, "locking {}", held.display());

    let mut child = Command::new(env!("CARGO_BIN_EXE_lockbench"))
        .args([
            "run",
            "--pulls",
            "2",
            "--readers",
            "1",
            "--modes",
            "isolated",
            "--image-size",
            "1M",
            "--layers",
            "2",
            "--trace",
            "off",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .arg("--stores")
        .arg(&stores)
        .env("LOCKBENCH_READY_TIMEOUT", "5")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A run that waits for `ready` forever must fail this test, not hang it.
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lockbench still waiting for a stuck worker after 120s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let result = child.wait_with_output().unwrap();
    let (_, stderr) = text(&result);
    assert!(!result.status.success(), "a stuck worker must fail the run");
    let named = stderr
        .lines()
        .filter(|l| l.contains("pull-1 (img-01) did not report ready within 5s"))
        .count();
    assert_eq!(named, 1, "stuck worker not named once: {stderr}");
    assert_failed_pull_1_kept_pull_0(&out, "did not report ready");
}

#[test]
fn bad_ready_timeout_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let result = Command::new(env!("CARGO_BIN_EXE_lockbench"))
        .args(["run", "--trace", "off", "--quiet", "--out"])
        .arg(dir.path())
        .env("LOCKBENCH_READY_TIMEOUT", "soon")
        .output()
        .unwrap();
    let (_, stderr) = text(&result);
    assert!(!result.status.success());
    assert!(stderr.contains("LOCKBENCH_READY_TIMEOUT=soon"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        !dir.path().join("images").exists(),
        "failed late, after generating images"
    );
}

/// The `locktrace` binary `--trace` would use: next to lockbench, as the workspace builds it.
fn sibling_locktrace() -> Option<std::path::PathBuf> {
    let bin = Path::new(env!("CARGO_BIN_EXE_lockbench")).with_file_name("locktrace");
    bin.is_file().then_some(bin)
}

/// Runs a copy of lockbench that has no `locktrace` next to it, with `args` and a PATH without
/// `locktrace` either: where lockbench looks for the tracer, there is none.
fn lockbench_without_locktrace(dir: &Path, args: &[&str]) -> Output {
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    // A copy, not a link: lockbench looks next to the file it runs from.
    let exe = bin.join("lockbench");
    fs::copy(env!("CARGO_BIN_EXE_lockbench"), &exe).unwrap();
    let mut tries = 0;
    loop {
        // Another test's fork may briefly hold the copy open for writing (ETXTBSY).
        match Command::new(&exe).args(args).env("PATH", &bin).output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result.expect("lockbench runs"),
        }
    }
}

#[test]
fn trace_on_without_locktrace_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = lockbench_without_locktrace(
        dir.path(),
        &[
            "run",
            "--trace",
            "on",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let (_, stderr) = text(&result);
    assert!(!result.status.success());
    assert!(
        stderr.contains("--trace on") && stderr.contains("locktrace"),
        "{stderr}"
    );
    assert!(
        stderr.contains("neither next to lockbench nor on PATH"),
        "not the missing-tracer error: {stderr}"
    );
    assert!(
        !out.join("images").exists(),
        "failed late, after generating images"
    );
}

#[test]
fn trace_on_adds_kernel_figures_that_agree_with_the_store() {
    let Some(locktrace) = sibling_locktrace() else {
        eprintln!("skipped: no locktrace binary next to lockbench (cargo build -p locktrace)");
        return;
    };
    let doctor = Command::new(&locktrace).arg("doctor").output().unwrap();
    if !doctor.status.success() {
        eprintln!("skipped: locktrace cannot trace on this machine (see `locktrace doctor`)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = tiny_run_with(&out, "locked", &["--trace", "on"]);
    let (stdout, stderr) = text(&result);
    assert!(result.status.success(), "{stderr}");
    assert!(stdout.contains("kernel"), "no kernel rows:\n{stdout}");
    let report = report(&out);
    let mode = &report["modes"][0];
    assert_eq!(mode["kernel_report"]["source"], "kernel");
    let write_holds = |r: &serde_json::Value| -> u64 {
        r["locks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["key"]["name"].as_str().unwrap().ends_with("layers.lock"))
            .map(|l| {
                l["modes"]["write"]["hold"]["summary"]["count"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    };
    let (store, kernel) = (
        write_holds(&mode["store_report"]),
        write_holds(&mode["kernel_report"]),
    );
    assert!(store > 0);
    assert_eq!(
        store, kernel,
        "store and kernel disagree on layers.lock write holds"
    );
}
