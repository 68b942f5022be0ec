//! Kernel tests: the real eBPF programs, attached for real, checked against workloads with their own
//! clocks (src/bin/lockload/). They need root and tracefs; `cargo xtask test` sets
//! LOCKTRACE_REQUIRE_KERNEL_TESTS where those are present, and then a skip is a failure.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Mutex,
};

mod common;
#[path = "kernel/outcomes.rs"]
mod outcomes;
#[path = "kernel/stacks.rs"]
mod stacks;
#[path = "kernel/summary.rs"]
mod summary;

use locktrace_report::{LockReport, Metric, Mode, Report};

/// Timing comparisons want the CPU to themselves; the tracer runs are serialized.
static SERIAL: Mutex<()> = Mutex::new(());

fn kernel_available() -> bool {
    common::kernel_tests_can_run("kernel test", &[])
}

fn locktrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_locktrace"))
}

fn lockload() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lockload"))
}

#[derive(serde::Deserialize, Debug)]
struct Truth {
    wait_ns: u64,
    hold_ns: u64,
    release_ns: u64,
}

impl Truth {
    /// The release happened somewhere inside the release call.
    fn hold(&self) -> (u64, u64) {
        (self.hold_ns, self.hold_ns + self.release_ns)
    }

    fn wait(&self) -> (u64, u64) {
        (self.wait_ns, self.wait_ns)
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn record(dir: &Path, filter: &[&str], command: &[&str]) -> (Report, Output) {
    let report = dir.join("report.json");
    let out = run(locktrace()
        .arg("record")
        .args(filter)
        .arg("--quiet")
        .arg("-o")
        .arg(&report)
        .arg("--")
        .args(command));
    let report = Report::read(&report).unwrap_or_else(|e| panic!("report not written: {e}"));
    (report, out)
}

/// Every sample of a metric, from the report's lossless histogram.
fn samples(report: &Report, lock: &LockReport, mode: Mode, metric: Metric) -> Vec<u64> {
    let h = report.histogram(lock, mode, metric).unwrap();
    let mut v = Vec::new();
    for it in h.iter_recorded() {
        for _ in 0..it.count_at_value() {
            v.push(it.value_iterated_to());
        }
    }
    v
}

/// max(2%, 100µs), plus the histogram's own 3-significant-digit bucket width.
fn tolerance(truth: u64) -> u64 {
    (truth / 50).max(100_000) + truth / 1000
}

/// Every traced sample must fall in its own ground-truth interval widened by the tolerance: a
/// one-to-one matching, found greedily (intervals by right end, each taking the smallest fitting sample).
fn assert_matches(what: &str, traced: Vec<u64>, truth: Vec<(u64, u64)>) {
    assert_matches_within(what, traced, truth, tolerance);
}

/// [`assert_matches`] with another tolerance.
fn assert_matches_within(
    what: &str,
    mut traced: Vec<u64>,
    mut truth: Vec<(u64, u64)>,
    tolerance: impl Fn(u64) -> u64,
) {
    traced.sort_unstable();
    truth.sort_unstable_by_key(|&(lo, hi)| (hi, lo));
    assert_eq!(
        traced.len(),
        truth.len(),
        "{what}: traced {traced:?} vs truth {truth:?}"
    );
    let mut free = traced.clone();
    for &(lo, hi) in &truth {
        let fits = |t: &u64| *t + tolerance(lo) >= lo && *t <= hi + tolerance(hi);
        let Some(i) = free.iter().position(fits) else {
            panic!(
                "{what}: no traced sample within {lo}..{hi} ns ± tolerance (traced {traced:?}, truth {truth:?})"
            );
        };
        free.remove(i);
    }
}

fn only_lock<'a>(report: &'a Report, path: &Path) -> &'a LockReport {
    assert_eq!(
        report.locks.len(),
        1,
        "exactly one lock expected: {:?}",
        report.locks
    );
    let lock = &report.locks[0];
    let meta = path.metadata().unwrap();
    assert_eq!(lock.key.ino, Some(meta.ino()), "lock inode");
    assert_eq!(lock.key.dev, Some(meta.dev()), "lock device");
    assert_eq!(
        lock.key.path.as_deref(),
        Some(path.to_str().unwrap()),
        "lock path"
    );
    assert_eq!(
        lock.key.name,
        path.file_name().unwrap().to_str().unwrap(),
        "lock basename"
    );
    lock
}

fn assert_no_drops(report: &Report) {
    assert_eq!(
        report.meta.drops.total(),
        0,
        "drops: {:?}",
        report.meta.drops
    );
}

/// `lockload scenario` (with `extra` arguments) on `DIR/layers.lock` under `record --path` (with
/// `record_flags`); returns the lock, the truth file, the report and record's output.
fn traced_scenario(
    dir: &Path,
    record_flags: &[&str],
    extra: &[&str],
) -> (PathBuf, PathBuf, Report, Output) {
    let lock = dir.join("layers.lock");
    std::fs::write(&lock, b"").unwrap();
    let truth = dir.join("truth.json");
    let ll = lockload();
    let command = [
        &[
            ll.to_str().unwrap(),
            "scenario",
            "--path",
            lock.to_str().unwrap(),
        ][..],
        &["--truth", truth.to_str().unwrap()],
        extra,
    ]
    .concat();
    let filter = [record_flags, &["--path", lock.to_str().unwrap()]].concat();
    let (report, out) = record(dir, &filter, &command);
    (lock, truth, report, out)
}

#[test]
fn waits_and_holds_match_the_workloads_own_clock() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (lock, truth_file, report, out) = traced_scenario(dir.path(), &[], &[]);
    assert!(out.status.success(), "record failed: {:?}", out.status);
    let truth: Vec<Truth> = serde_json::from_slice(&std::fs::read(&truth_file).unwrap()).unwrap();
    let l = only_lock(&report, &lock);
    assert_no_drops(&report);
    assert_eq!(l.modes.len(), 1, "only write locks were taken");
    let w = &l.modes[&Mode::Write];
    assert_eq!(w.tries.acquired, truth.len() as u64);
    assert_matches(
        "hold",
        samples(&report, l, Mode::Write, Metric::Hold),
        truth.iter().map(Truth::hold).collect(),
    );
    assert_matches(
        "wait",
        samples(&report, l, Mode::Write, Metric::Wait),
        truth.iter().map(Truth::wait).collect(),
    );
    // The 200 ms round must really have been contended, or this test proves little.
    assert!(
        w.wait.summary.max > 100_000_000,
        "no long wait seen: {:?}",
        w.wait.summary
    );
}

/// One `lockload hold` under the tracer; returns the report and the process's own figures.
fn traced_hold(dir: &Path, lock: &Path, extra: &[&str]) -> (Report, Truth) {
    // No extra flags: release by exit, which needs a parent to bound it.
    let sub = if extra.is_empty() {
        "exit-hold"
    } else {
        "hold"
    };
    let (report, out) = record(
        dir,
        &["--path", lock.to_str().unwrap()],
        &[
            &[
                lockload().to_str().unwrap(),
                sub,
                "--path",
                lock.to_str().unwrap(),
                "--hold",
                "30ms",
            ][..],
            extra,
        ]
        .concat(),
    );
    assert!(out.status.success(), "lockload failed: {:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("truth line");
    (report, serde_json::from_str(line).unwrap())
}

#[test]
fn every_release_path_ends_the_hold() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cases: &[(&str, &[&str])] = &[
        ("F_UNLCK", &["--release", "unlock", "--linger", "100ms"]),
        (
            "close of another fd",
            &["--release", "dup-close", "--linger", "100ms"],
        ),
        ("process exit", &[]),
        (
            "OFD close",
            &["--ofd", "--release", "close", "--linger", "100ms"],
        ),
        (
            "OFD F_UNLCK",
            &["--ofd", "--release", "unlock", "--linger", "100ms"],
        ),
        (
            "read lock",
            &["--mode", "read", "--release", "close", "--linger", "100ms"],
        ),
    ];
    for (name, extra) in cases {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("images.lock");
        std::fs::write(&lock, b"").unwrap();
        let (report, truth) = traced_hold(dir.path(), &lock, extra);
        let l = only_lock(&report, &lock);
        assert_no_drops(&report);
        let mode = if extra.contains(&"read") {
            Mode::Read
        } else {
            Mode::Write
        };
        assert_matches(
            name,
            samples(&report, l, mode, Metric::Hold),
            vec![truth.hold()],
        );
    }
}

#[test]
fn read_locks_are_shared_between_processes() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("layers.lock");
    std::fs::write(&lock, b"").unwrap();
    let ll = lockload();
    let script = format!(
        "{ll} hold --path {p} --mode read --hold 150ms & {ll} hold --path {p} --mode read --hold 150ms & wait",
        ll = ll.display(),
        p = lock.display()
    );
    let (report, out) = record(
        dir.path(),
        &["--path", lock.to_str().unwrap()],
        &["sh", "-c", &script],
    );
    assert!(out.status.success());
    let l = only_lock(&report, &lock);
    assert_no_drops(&report);
    let r = &l.modes[&Mode::Read];
    assert_eq!(r.hold.summary.count, 2);
    // Shared: neither waited for the other's 150 ms hold.
    assert!(
        r.wait.summary.max < 50_000_000,
        "read locks waited: {:?}",
        r.wait.summary
    );
    assert!(r.hold.summary.min > 140_000_000, "{:?}", r.hold.summary);
    let holders: std::collections::BTreeSet<u32> = r.top_holders.iter().map(|a| a.pid).collect();
    assert_eq!(
        holders.len(),
        2,
        "two distinct holders: {:?}",
        r.top_holders
    );
}

#[test]
fn equally_named_locks_in_two_stores_stay_apart() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (la, lb) = (a.join("layers.lock"), b.join("layers.lock"));
    std::fs::write(&la, b"").unwrap();
    std::fs::write(&lb, b"").unwrap();
    let ll = lockload();
    let script = format!(
        "{ll} hold --path {a} --hold 5ms && {ll} hold --path {b} --hold 5ms && {ll} hold --path {b} --hold 5ms",
        ll = ll.display(),
        a = la.display(),
        b = lb.display()
    );
    // Filtered by path: only store b.
    let (report, out) = record(
        dir.path(),
        &["--path", lb.to_str().unwrap()],
        &["sh", "-c", &script],
    );
    assert!(out.status.success());
    let l = only_lock(&report, &lb);
    assert_eq!(l.modes[&Mode::Write].hold.summary.count, 2);
    // Filtered by name: both, as two locks.
    let (report, _) = record(
        dir.path(),
        &["--lock", "layers.lock"],
        &["sh", "-c", &script],
    );
    // Named, not pathed: told apart by inode, and the kernel-walked paths say which is which.
    let mut counts: Vec<(Option<String>, Option<u64>, u64)> = report
        .locks
        .iter()
        .map(|l| {
            (
                l.key.path.clone(),
                l.key.ino,
                l.modes[&Mode::Write].hold.summary.count,
            )
        })
        .collect();
    counts.sort();
    let mut want = vec![
        (
            Some(la.display().to_string()),
            Some(la.metadata().unwrap().ino()),
            1,
        ),
        (
            Some(lb.display().to_string()),
            Some(lb.metadata().unwrap().ino()),
            2,
        ),
    ];
    want.sort();
    assert_eq!(counts, want);
    assert!(report.locks.iter().all(|l| l.key.name == "layers.lock"));
}

#[test]
fn record_follows_children_and_passes_the_exit_code_through() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("containers.lock");
    let script = format!(
        "sh -c '{ll} hold --path {p} --hold 5ms'; exit 7",
        ll = lockload().display(),
        p = lock.display()
    );
    // A concurrent lock on the same file from outside the traced tree must not be counted.
    let outsider = Command::new(lockload())
        .args(["hold", "--path", lock.to_str().unwrap(), "--hold", "1ms"])
        .output()
        .unwrap();
    assert!(outsider.status.success());
    let (report, out) = record(
        dir.path(),
        &["--lock", "containers.lock"],
        &["sh", "-c", &script],
    );
    assert_eq!(out.status.code(), Some(7), "exit code passed through");
    let l = only_lock(&report, &lock);
    assert_eq!(
        l.modes[&Mode::Write].hold.summary.count,
        1,
        "grandchild's lock seen once"
    );
}

#[test]
fn doctor_names_the_mode_record_uses() {
    if !kernel_available() {
        return;
    }
    // Its trial hooks run on every fcntl of the machine while attached: not during a timing test.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = run(locktrace().arg("doctor"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("record would attach with: "), "{text}");
    assert!(
        text.lines().any(|l| l.contains("fentry")),
        "fentry trial reported: {text}"
    );
}

#[test]
fn a_recorded_workload_is_gated_end_to_end() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (_, _, _, out) = traced_scenario(dir.path(), &[], &["--holds", "2ms,60ms"]);
    assert!(out.status.success());
    let report = dir.path().join("report.json");
    let gate = |budget: &str, format: &str| {
        run(locktrace()
            .arg("gate")
            .arg(&report)
            .args(["--budget", budget, "--format", format]))
    };
    // Four holds of which one is ~60 ms: a 1 s budget passes, a 10 ms one fails and says why.
    let pass = gate("layers.lock:write:hold:max<=1s", "text");
    assert_eq!(
        pass.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&pass.stdout)
    );
    let fail = gate("layers.lock:write:hold:max<=10ms", "junit");
    assert_eq!(fail.status.code(), Some(1));
    let junit = String::from_utf8_lossy(&fail.stdout);
    assert!(junit.contains("<failure"), "{junit}");
    assert!(
        junit.contains("10.0ms") || junit.contains("10ms"),
        "limit named: {junit}"
    );
    let count = gate("layers.lock:write:hold:count==4", "text");
    assert_eq!(
        count.status.code(),
        Some(0),
        "exact count: {}",
        String::from_utf8_lossy(&count.stdout)
    );
    // A lock the report does not have cannot be evaluated.
    let missing = gate("images.lock:wait:p99<=1s", "text");
    assert_eq!(missing.status.code(), Some(2));
}

/// Polls `path` until its text satisfies `ready` (30 s at most) while a running `locktrace` must not
/// exit; returns the text.
fn wait_for_file(
    tracer: &mut std::process::Child,
    path: &Path,
    timeout_msg: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if ready(&text) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{timeout_msg}");
        assert!(
            tracer.try_wait().unwrap().is_none(),
            "locktrace exited early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` or, on hybrid systems, `…/unified`).
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

#[test]
fn cgroup_filter_keeps_other_cgroups_out() {
    let mount = cgroup2_mount();
    if !common::kernel_tests_can_run(
        "cgroup filter test",
        &[(mount.is_some(), "no cgroup v2 mounted")],
    ) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cgroup = mount
        .unwrap()
        .join(format!("locktrace-test-{}", std::process::id()));
    std::fs::create_dir_all(&cgroup).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("cg.lock");
    std::fs::write(&lock, b"").unwrap();
    let report = dir.path().join("report.json");
    // System-wide, filtered by cgroup only: a process outside it must not count.
    let banner_file = dir.path().join("stderr");
    let mut tracer = locktrace()
        .args([
            "record",
            "--lock",
            "cg.lock",
            "--cgroup",
            cgroup.to_str().unwrap(),
            "-o",
        ])
        .arg(&report)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&banner_file).unwrap())
        .spawn()
        .unwrap();
    // The banner is printed once the programs are attached.
    wait_for_file(&mut tracer, &banner_file, "locktrace did not attach", |t| {
        t.contains("tracing with")
    });
    let hold = |inside: bool| {
        let join = if inside {
            format!("echo $$ > {}/cgroup.procs && ", cgroup.display())
        } else {
            String::new()
        };
        let script = format!(
            "{join}exec {} hold --path {} --hold 5ms",
            lockload().display(),
            lock.display()
        );
        assert!(
            Command::new("sh")
                .args(["-c", &script])
                .output()
                .unwrap()
                .status
                .success()
        );
    };
    hold(false);
    hold(true);
    hold(false);
    // SAFETY: kill only takes numbers; the tracer is our child and not yet reaped, so the pid is its.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    assert!(tracer.wait().unwrap().success());
    let _ = std::fs::remove_dir(&cgroup);
    let report = Report::read(&report).unwrap();
    let l = only_lock(&report, &lock);
    assert_eq!(
        l.modes[&Mode::Write].hold.summary.count,
        1,
        "only the process inside the cgroup"
    );
}

/// Records `-- <traced>` (built from the temp dir, a file its tree writes a gone ID to, and a file
/// that ends it), then hands that ID to an untraced process taking a lock: it must not be counted.
fn assert_gone_id_is_not_followed(what: &str, traced: impl Fn(&Path, &Path, &Path) -> Vec<String>) {
    let ns_last_pid = Path::new("/proc/sys/kernel/ns_last_pid");
    // Without it (CONFIG_CHECKPOINT_RESTORE off) a PID cannot be chosen; that is not locktrace's fault.
    if !ns_last_pid.exists() {
        eprintln!("skipped: {what} (no {})", ns_last_pid.display());
        return;
    }
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("reuse.lock");
    let gone = dir.path().join("gone.id");
    let done = dir.path().join("done");
    let report = dir.path().join("report.json");
    let mut tracer = locktrace()
        .args(["record", "--quiet", "--lock", "reuse.lock", "-o"])
        .arg(&report)
        .arg("--")
        .args(traced(dir.path(), &gone, &done))
        .spawn()
        .unwrap();
    let recycled: u32 = wait_for_file(&mut tracer, &gone, "traced tree never ran", |t| {
        t.ends_with('\n')
    })
    .trim()
    .parse()
    .unwrap();
    // Other processes may grab the ID first, so try a few times; every attempt is an outsider.
    let mut reused = false;
    for _ in 0..50 {
        std::fs::write(ns_last_pid, (recycled - 1).to_string()).unwrap();
        let outsider = Command::new(lockload())
            .args(["hold", "--path", lock.to_str().unwrap(), "--hold", "1ms"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        reused = outsider.id() == recycled;
        assert!(outsider.wait_with_output().unwrap().status.success());
        if reused {
            break;
        }
    }
    std::fs::write(&done, b"").unwrap();
    assert!(tracer.wait().unwrap().success());
    assert!(
        reused,
        "{what}: could not hand id {recycled} to the outsider"
    );
    let report = Report::read(&report).unwrap();
    let counted: u64 = report
        .locks
        .iter()
        .flat_map(|l| l.modes.values())
        .map(|m| m.hold.summary.count)
        .sum();
    assert_eq!(
        counted, 0,
        "{what}: a process that only reused the id was traced"
    );
}

/// The shell loop that keeps the traced tree alive until the test is done.
fn wait_until(done: &Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.05; done", done.display())
}

#[test]
fn a_recycled_pid_of_an_exited_child_is_not_followed() {
    assert_gone_id_is_not_followed("exited child", |_, gone, done| {
        // A child that exits at once; its PID is written once the shell has reaped it.
        let script = format!(
            "sh -c 'exit 0' & pid=$!; wait; echo $pid > {}; {}",
            gone.display(),
            wait_until(done)
        );
        vec!["sh".into(), "-c".into(), script]
    });
}

#[test]
fn the_id_of_a_thread_that_called_exec_is_not_followed() {
    assert_gone_id_is_not_followed("thread that called exec", |dir, gone, done| {
        // lockload writes the exec'ing thread's ID; the exec'd shell publishes it once it runs, when
        // the kernel has already freed that ID.
        let tid = dir.join("tid");
        let script = format!(
            "cat {} > {}.tmp; echo >> {}.tmp; mv {}.tmp {}; {}",
            tid.display(),
            gone.display(),
            gone.display(),
            gone.display(),
            gone.display(),
            wait_until(done)
        );
        vec![
            lockload().display().to_string(),
            "thread-exec".into(),
            "--tid-file".into(),
            tid.display().to_string(),
            "sh".into(),
            "-c".into(),
            script,
        ]
    });
}

/// A loop-mounted btrfs with a subvolume mounted on its own; unmounted and detached on drop.
struct Btrfs {
    loopdev: String,
    top: PathBuf,
    sub: PathBuf,
}

impl Btrfs {
    fn create(dir: &Path) -> Btrfs {
        let sh = |cmd: &str| {
            let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let image = dir.join("btrfs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        sh(&format!("mkfs.btrfs -q {}", image.display()));
        let loopdev = sh(&format!("losetup --find --show {}", image.display()));
        let fs = Btrfs {
            loopdev,
            top: dir.join("top"),
            sub: dir.join("sub"),
        };
        std::fs::create_dir_all(&fs.top).unwrap();
        std::fs::create_dir_all(&fs.sub).unwrap();
        sh(&format!("mount {} {}", fs.loopdev, fs.top.display()));
        sh(&format!(
            "btrfs -q subvolume create {}/vol",
            fs.top.display()
        ));
        sh(&format!(
            "mount -o subvol=vol {} {}",
            fs.loopdev,
            fs.sub.display()
        ));
        fs
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        for m in [&self.sub, &self.top] {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

#[test]
fn locks_on_a_btrfs_subvolume_are_filtered_and_named() {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("btrfs") {
        eprintln!("skipped: btrfs subvolume test (this kernel has no btrfs loaded)");
        return;
    }
    let mkfs = Command::new("mkfs.btrfs").arg("--version").output().is_ok();
    if !common::kernel_tests_can_run(
        "btrfs subvolume test",
        &[(
            mkfs,
            "no mkfs.btrfs (cargo xtask setup installs btrfs-progs)",
        )],
    ) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let fs = Btrfs::create(dir.path());
    let lock = fs.sub.join("x.lock");
    std::fs::write(&lock, b"").unwrap();
    let meta = lock.metadata().unwrap();
    // The point of the test: the subvolume's st_dev is not the superblock's device the kernel uses.
    assert_ne!(meta.dev(), fs.top.metadata().unwrap().dev());
    let lockload = lockload();
    let hold = [
        lockload.to_str().unwrap(),
        "hold",
        "--path",
        lock.to_str().unwrap(),
        "--hold",
        "5ms",
    ];
    let inode = format!("{}:{}", meta.dev(), meta.ino());
    let same_file = |p: &str| {
        let m = Path::new(p).metadata().unwrap();
        m.ino() == meta.ino()
            && (p == lock.to_str().unwrap() || p.starts_with(fs.top.to_str().unwrap()))
    };
    for filter in [
        vec!["--path", lock.to_str().unwrap()],
        vec!["--inode", inode.as_str()],
        vec!["--lock", "x.lock"],
    ] {
        let (report, out) = record(dir.path(), &filter, &hold);
        assert!(out.status.success(), "{filter:?}");
        assert_eq!(report.locks.len(), 1, "{filter:?}: {:?}", report.locks);
        let l = &report.locks[0];
        assert_eq!(
            l.modes[&Mode::Write].hold.summary.count,
            1,
            "{filter:?}: the hold is seen"
        );
        assert_eq!(l.key.ino, Some(meta.ino()), "{filter:?}");
        let path = l
            .key
            .path
            .as_deref()
            .unwrap_or_else(|| panic!("{filter:?}: no path"));
        assert!(
            same_file(path),
            "{filter:?}: path {path} is not {}",
            lock.display()
        );
        assert_no_drops(&report);
    }
}

#[test]
fn live_streams_are_parseable_to_the_end() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("live.lock");
    let stream = |format: &str, hold: &str| {
        // lockload prints its own figures on stdout; keep them out of the stream under test.
        let script = format!(
            "exec {} hold --path {} --hold {hold} >/dev/null",
            lockload().display(),
            lock.display()
        );
        let out = run(locktrace()
            .args([
                "record",
                "--lock",
                "live.lock",
                "--interval",
                "50ms",
                "--format",
                format,
            ])
            .args(["--", "sh", "-c", &script]));
        assert!(out.status.success(), "{format}");
        String::from_utf8(out.stdout).unwrap()
    };
    let holds = |report: &Report| -> u64 {
        report
            .locks
            .iter()
            .filter_map(|l| l.modes.get(&Mode::Write))
            .map(|m| m.hold.summary.count)
            .sum()
    };
    let parse = |line: &str| Report::from_json(line.as_bytes(), Path::new("stdout")).unwrap();

    // json: a snapshot per interval while the 400 ms hold runs (none finished yet), then the final one.
    let json = stream("json", "400ms");
    let reports: Vec<Report> = json.lines().map(parse).collect();
    assert!(reports.len() >= 4, "snapshots every 50 ms: {json}");
    assert_eq!(holds(&reports[0]), 0, "first snapshot is mid-hold");
    assert_eq!(
        holds(reports.last().unwrap()),
        1,
        "final report has the hold"
    );

    // ndjson: the lock and its release as events, then the report as the last line.
    let ndjson = stream("ndjson", "5ms");
    let lines: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["lock", "release_close", "report"], "{ndjson}");
    assert_eq!(lines[0]["pid"], lines[1]["pid"]);
    assert_eq!(lines[0]["ino"], lock.metadata().unwrap().ino());
    let last = serde_json::to_vec(&lines[2]["report"]).unwrap();
    assert_eq!(
        holds(&Report::from_json(&last, Path::new("stdout")).unwrap()),
        1
    );

    // text: a table per interval, then the final one.
    let text = stream("text", "300ms");
    assert!(
        text.matches("live.lock").count() >= 3,
        "interval tables: {text}"
    );
}

#[derive(serde::Deserialize, Debug)]
struct BlockersTruth {
    holder_pid: u32,
    waits: Vec<Truth>,
}

#[test]
fn the_blockers_table_names_the_holder_with_the_workloads_own_waits() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("blocked.lock");
    std::fs::write(&lock, b"").unwrap();
    let truth_file = dir.path().join("truth.json");
    let report_file = dir.path().join("report.json");
    let out = run(locktrace()
        .args([
            "record",
            "--path",
            lock.to_str().unwrap(),
            "--format",
            "ndjson",
        ])
        .arg("-o")
        .arg(&report_file)
        .arg("--")
        .arg(lockload())
        .args(["blockers", "--path", lock.to_str().unwrap(), "--truth"])
        .arg(&truth_file)
        .args(["--waiters", "3", "--holds", "30ms,150ms"]));
    assert!(out.status.success(), "record failed: {:?}", out.status);
    let truth: BlockersTruth =
        serde_json::from_slice(&std::fs::read(&truth_file).unwrap()).unwrap();
    assert_eq!(truth.waits.len(), 6);
    let report = Report::read(&report_file).unwrap();
    let l = only_lock(&report, &lock);
    assert_no_drops(&report);

    let r = &l.modes[&Mode::Read];
    assert_matches(
        "wait",
        samples(&report, l, Mode::Read, Metric::Wait),
        truth.waits.iter().map(Truth::wait).collect(),
    );
    assert_eq!(r.holder_not_traced, 0, "{r:?}");
    assert_eq!(r.blockers.len(), 1, "one holder: {:?}", r.blockers);
    assert!(r.blockers_others.is_none());
    let b = &r.blockers[0];
    assert_eq!(b.holder.pid, truth.holder_pid);
    assert_eq!(b.holder.comm, "lockload");
    let cmdline = b.holder.cmdline.as_deref().unwrap_or_default();
    assert!(cmdline.contains("lockload blockers --path"), "{cmdline}");
    assert_eq!(b.waits, truth.waits.len() as u64);
    let true_total: u64 = truth.waits.iter().map(|t| t.wait_ns).sum();
    let slack: u64 = truth.waits.iter().map(|t| tolerance(t.wait_ns)).sum();
    assert!(
        b.total_wait_ns.abs_diff(true_total) <= slack,
        "total wait {} vs the waiters' own {true_total} ± {slack}",
        b.total_wait_ns
    );
    let true_max = truth.waits.iter().map(|t| t.wait_ns).max().unwrap();
    assert!(
        b.max_wait_ns.abs_diff(true_max) <= tolerance(true_max),
        "max wait {} vs the waiters' own {true_max}",
        b.max_wait_ns
    );
    // The holder's own write locks were never blocked.
    let w = &l.modes[&Mode::Write];
    assert_eq!(w.wait.summary.count, 2);
    assert!(w.blockers.is_empty() && w.holder_not_traced == 0, "{w:?}");

    // The ndjson stream names the holder on every read wait, and nobody on the holder's own.
    let stdout = String::from_utf8(out.stdout).unwrap();
    let waits: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "lock")
        .collect();
    assert_eq!(waits.len(), 8, "{stdout}");
    for v in &waits {
        let expected: Vec<u32> = if v["lock_type"] == 0 {
            vec![truth.holder_pid]
        } else {
            vec![]
        };
        assert_eq!(v["blocked_by"], serde_json::json!(expected), "{v}");
        assert_eq!(v["holder_not_traced"], false, "{v}");
    }
    let text = locktrace()
        .arg("report")
        .arg(&report_file)
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&text.stdout));
}

#[test]
fn a_holder_outside_the_trace_is_counted_as_not_traced() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("untraced.lock");
    std::fs::write(&lock, b"").unwrap();
    // Held long enough to outlast record's start (loading the eBPF object).
    let mut holder = Command::new(lockload())
        .args(["hold", "--path", lock.to_str().unwrap(), "--hold", "3s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("@locked"), "{line}");
    let (report, rec) = record(
        dir.path(),
        &["--path", lock.to_str().unwrap()],
        &[
            lockload().to_str().unwrap(),
            "hold",
            "--path",
            lock.to_str().unwrap(),
            "--mode",
            "read",
            "--hold",
            "1ms",
        ],
    );
    assert!(holder.wait().unwrap().success());
    assert!(rec.status.success());
    let r = &only_lock(&report, &lock).modes[&Mode::Read];
    assert_eq!(r.wait.summary.count, 1);
    assert!(r.wait.summary.max > 100_000_000, "{:?}", r.wait.summary);
    assert_eq!(r.holder_not_traced, 1, "{r:?}");
    assert!(r.blockers.is_empty(), "{:?}", r.blockers);
}

/// Two `lockload nest` processes one after the other, the first taking `a` then `b`, the second
/// `second.0` then `second.1`: the report and `gate --fail-on-inversion`'s exit code.
fn nested_pair(dir: &Path, second: (&str, &str)) -> (Report, Option<i32>, String) {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    for name in ["a.lock", "b.lock"] {
        std::fs::write(path(name), b"").unwrap();
    }
    let ll = lockload();
    let ll = ll.display();
    let script = format!(
        "{ll} nest --first {a} --second {b} && {ll} nest --first {c} --second {d}",
        a = path("a.lock"),
        b = path("b.lock"),
        c = path(second.0),
        d = path(second.1),
    );
    let (report, out) = record(
        dir,
        &["--path", &path("a.lock"), "--path", &path("b.lock")],
        &["sh", "-c", &script],
    );
    assert!(out.status.success(), "record failed: {:?}", out.status);
    assert_no_drops(&report);
    let gate = run(locktrace().arg("gate").arg(dir.join("report.json")).args([
        "--fail-on-inversion",
        "--format",
        "text",
    ]));
    let text = String::from_utf8_lossy(&gate.stdout).into_owned();
    (report, gate.status.code(), text)
}

#[test]
fn opposite_lock_orders_are_a_potential_deadlock_the_gate_fails() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (report, code, text) = nested_pair(dir.path(), ("b.lock", "a.lock"));
    let (a, b) = (
        dir.path().join("a.lock").display().to_string(),
        dir.path().join("b.lock").display().to_string(),
    );
    let order = &report.lock_order;
    assert_eq!(order.edges.len(), 2, "{order:?}");
    let ab = order.edge(&a, &b).expect("a → b");
    let ba = order.edge(&b, &a).expect("b → a");
    assert_eq!((ab.count, ba.count), (1, 1));
    assert_ne!(ab.example.pid, ba.example.pid, "two processes");
    assert_eq!(ab.example.comm, "lockload");
    assert_eq!(order.cycles, vec![vec![a.clone(), b.clone()]]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("potential deadlock"), "{text}");
}

#[test]
fn a_consistent_lock_order_passes_the_inversion_gate() {
    if !kernel_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (report, code, text) = nested_pair(dir.path(), ("a.lock", "b.lock"));
    let (a, b) = (
        dir.path().join("a.lock").display().to_string(),
        dir.path().join("b.lock").display().to_string(),
    );
    let order = &report.lock_order;
    assert_eq!(order.edges.len(), 1, "{order:?}");
    assert_eq!(order.edge(&a, &b).map(|e| e.count), Some(2));
    assert!(order.cycles.is_empty());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no lock-order inversion"), "{text}");
}
