//! `lockbench overhead` end to end, small: the loop untraced and under every tracer this machine
//! has, with the figures and the tracers' event counts in the table and overhead.json. Never
//! asserts on speed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lockbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockbench"))
        .args(args)
        .output()
        .expect("lockbench runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(out.join("overhead.json")).expect("overhead.json written"))
        .expect("overhead.json parses")
}

fn variant<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A binary of the workspace next to lockbench (`cargo test -p lockbench` alone does not build
/// locktrace's).
fn sibling(name: &str) -> bool {
    Path::new(env!("CARGO_BIN_EXE_lockbench"))
        .with_file_name(name)
        .is_file()
}

/// True when every requirement holds. Otherwise prints why `what` is skipped, or panics where
/// `cargo xtask test` says the kernel tests must run (LOCKTRACE_REQUIRE_KERNEL_TESTS, as in
/// tracer-cli's tests), so CI cannot pass by skipping.
fn can_run(what: &str, needs: &[(bool, &str)]) -> bool {
    let Some((_, why)) = needs.iter().find(|(ok, _)| !ok) else {
        return true;
    };
    if std::env::var_os("LOCKTRACE_REQUIRE_KERNEL_TESTS").is_some() {
        panic!("{what} is required here but cannot run: {why}");
    }
    eprintln!("skipped: {what} ({why})");
    false
}

fn lockload_built() -> (bool, &'static str) {
    (
        sibling("lockload"),
        "no lockload next to lockbench (cargo build -p locktrace)",
    )
}

/// The workspace's contrib/ directory (lockstats' scripts).
fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib")
}

#[test]
fn untraced_loop_runs_without_a_tracer_and_reports_its_cost() {
    if !can_run("the untraced loop", &[lockload_built()]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = lockbench(&[
        "overhead",
        "--cycles",
        "500",
        "--rounds",
        "2",
        "--variants",
        "untraced",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&result);
    assert!(result.status.success(), "{stderr}");
    assert!(stdout.contains("untraced"), "{stdout}");
    let report = report(&out);
    assert_eq!(report["cycles"], 500);
    assert_eq!(report["failed"], false);
    let untraced = variant(&report, "untraced");
    assert_eq!(untraced["status"], "ok");
    assert_eq!(untraced["rounds_ns_per_cycle"].as_array().unwrap().len(), 2);
    assert!(untraced["ns_per_cycle"]["median"].as_f64().unwrap() > 0.0);
    assert!(out.join("overhead/layers.lock").is_file());
}

/// As root (the test setup is root; bpftrace comes with `cargo xtask setup`): every variant runs,
/// has figures, and the tracers counted the loop's lock calls.
#[test]
fn every_tracer_runs_and_counts_the_loops_lock_calls() {
    let needs = [
        (root(), "tracing needs root"),
        lockload_built(),
        (
            sibling("locktrace"),
            "no locktrace next to lockbench (cargo build -p locktrace)",
        ),
        (
            Command::new("bpftrace").arg("--version").output().is_ok(),
            "no bpftrace (cargo xtask setup)",
        ),
    ];
    if !can_run("every tracer variant", &needs) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = lockbench(&[
        "overhead",
        "--cycles",
        "2000",
        "--rounds",
        "1",
        "--variants",
        "untraced,bpftrace-min,lockstats,locktrace,locktrace-summary,locktrace-all-locks,locktrace-stacks",
        "--contrib",
        contrib().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&result);
    assert!(result.status.success(), "{stderr}\n{stdout}");
    let report = report(&out);
    assert_eq!(report["failed"], false);
    let warmup = report["warmup"].as_u64().expect("warm-up cycles reported");
    for name in [
        "untraced",
        "bpftrace-min",
        "lockstats",
        "locktrace",
        "locktrace-summary",
        "locktrace-all-locks",
        "locktrace-stacks",
    ] {
        assert!(stdout.contains(name), "{name} not in the table:\n{stdout}");
        let v = variant(&report, name);
        assert_eq!(v["status"], "ok", "{v}");
        assert!(v["ns_per_cycle"]["median"].as_f64().unwrap() > 0.0, "{v}");
        if name == "untraced" {
            continue;
        }
        // A number, of either sign: at 2000 cycles noise can outweigh a tracer's cost, and
        // ratios need bpftrace-min's cost to be positive, so neither is asserted on.
        assert!(v["added_ns"]["median"].is_number(), "{v}");
        let want = 2000 + warmup;
        assert_eq!(v["expected_events"], want, "{v}");
        let seen = v["events"][0].as_u64().unwrap();
        if name.starts_with("locktrace") {
            // It follows the loop's process only: exactly its lock calls.
            assert_eq!(seen, want, "{v}");
            assert!(v["attach"].is_string(), "{v}");
        } else {
            // System-wide scripts may also count other processes' locks.
            assert!(seen >= want, "{v}");
        }
    }
}

#[test]
fn a_variant_asked_for_that_cannot_run_fails_before_running_anything() {
    // Without lockload the error would be about lockload.
    if !can_run("a variant that cannot run", &[lockload_built()]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = lockbench(&[
        "overhead",
        "--cycles",
        "100",
        "--variants",
        "untraced,lockstats",
        "--contrib",
        dir.path().join("no-contrib").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&result);
    assert!(!result.status.success());
    assert!(
        stderr.contains("variant lockstats cannot run") && stderr.contains("no-contrib"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(!out.join("overhead.json").exists());
}

#[test]
fn bad_variant_and_counts_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for args in [
        &["--variants", "dtrace"][..],
        &["--cycles", "0"],
        &["--rounds", "0"],
        &["--cycles", "many"],
    ] {
        let mut all = vec!["overhead", "--out", out.to_str().unwrap()];
        all.extend_from_slice(args);
        let result = lockbench(&all);
        let (_, stderr) = text(&result);
        assert!(!result.status.success(), "{args:?} accepted");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!out.join("overhead.json").exists(), "{args:?} ran");
    }
}

#[test]
fn a_variant_named_twice_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let result = lockbench(&[
        "overhead",
        "--variants",
        "untraced,untraced",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&result);
    assert!(!result.status.success());
    assert!(stderr.contains("names untraced twice"), "{stderr}");
    assert!(!out.join("overhead.json").exists());
}

/// Without root (dropped to nobody where the test runs as root): the untraced loop runs, the
/// tracers are listed as unavailable, and that is no failure when no variant was named.
#[test]
fn without_root_the_tracers_are_unavailable_and_the_untraced_loop_runs() {
    use std::os::unix::fs::PermissionsExt;
    if !can_run("the run without root", &[lockload_built()]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    // Copies nobody can run, wherever the workspace is; lockbench finds lockload next to itself.
    let lockbench = Path::new(env!("CARGO_BIN_EXE_lockbench"));
    for name in ["lockbench", "lockload"] {
        fs::copy(lockbench.with_file_name(name), dir.path().join(name)).unwrap();
    }
    let out = dir.path().join("out");
    let mut cmd = if root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(dir.path().join("lockbench"));
        cmd
    } else {
        Command::new(dir.path().join("lockbench"))
    };
    let result = cmd
        .args(["overhead", "--cycles", "200", "--rounds", "1", "--out"])
        .arg(&out)
        .output()
        .expect("lockbench runs");
    let (stdout, stderr) = text(&result);
    assert!(result.status.success(), "{stderr}");
    let report = report(&out);
    assert_eq!(report["failed"], false);
    assert_eq!(variant(&report, "untraced")["status"], "ok");
    for name in [
        "bpftrace-min",
        "lockstats",
        "locktrace",
        "locktrace-summary",
        "locktrace-all-locks",
        "locktrace-stacks",
    ] {
        let v = variant(&report, name);
        assert_eq!(v["status"], "unavailable", "{v}");
        assert!(!v["reason"].as_str().unwrap().is_empty(), "{v}");
        assert!(
            stdout.contains(&format!("{name:<20} unavailable")),
            "{stdout}"
        );
    }
    // locktrace was not copied, so that reason is its absence; bpftrace's is the missing root.
    let why = variant(&report, "bpftrace-min")["reason"].as_str().unwrap();
    assert!(
        why.contains("needs root") || why.contains("bpftrace is not on PATH"),
        "{why}"
    );
}
