//! `record --stacks` on programs whose lock calls go through functions with distinctive names: a C
//! program with frame pointers and a stripped Go program (tests/programs/). The programs come from
//! LOCKTRACE_STACK_PROGRAMS when set (the VM guests, which have no compilers), else they are built
//! here with tests/programs/build.sh.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use locktrace_report::{LOST_STACK, Metric, Mode, Report};

use super::{SERIAL, common, only_lock, record};

/// The directory holding `lockstack-c` and `lockstack-go`, or `None` (after saying why) when they
/// cannot be had here and the kernel tests are not required.
fn programs() -> Option<&'static Path> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("LOCKTRACE_STACK_PROGRAMS") {
            return Ok(PathBuf::from(dir));
        }
        let dir = std::env::temp_dir().join(format!("locktrace-stack-programs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/build.sh");
        let out = Command::new("sh")
            .arg(&script)
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "building the stack test programs failed (cargo xtask setup installs gcc's and Go's packages): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(dir)
    });
    let why = built.as_ref().err().map(String::as_str).unwrap_or("");
    if !common::kernel_tests_can_run("stack test", &[(built.is_ok(), why)]) {
        return None;
    }
    built.as_deref().ok()
}

/// Records `program LOCK` with `--stacks` and returns the report and the lock file.
fn record_program(program: &str) -> Option<(Report, PathBuf, tempfile::TempDir)> {
    let dir = programs()?;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let lock = work.path().join("layers.lock");
    std::fs::write(&lock, b"").unwrap();
    let exe = dir.join(program);
    let (report, out) = record(
        work.path(),
        &["--stacks", "--path", lock.to_str().unwrap()],
        &[exe.to_str().unwrap(), lock.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{program} under record --stacks failed"
    );
    Some((report, lock, work))
}

/// The top stack of `metric`, checked to hold every sample of the metric (one code path took the
/// lock, ten times) and no lost stack.
fn top_stack(report: &Report, lock: &Path, metric: Metric) -> Vec<String> {
    let mode = &only_lock(report, lock).modes[&Mode::Write];
    let stacks = mode.stacks(metric);
    assert_eq!(report.meta.drops.stacks_lost, 0, "no stack may be lost");
    assert_eq!(
        stacks.count(),
        mode.metric(metric).summary.count,
        "every {metric} sample has a stack: {stacks:?}"
    );
    assert_eq!(
        stacks.top.len(),
        1,
        "one code path took the lock: {stacks:?}"
    );
    let top = &stacks.top[0];
    assert_eq!(top.count, 10, "ten lock calls");
    assert_eq!(top.total_ns, mode.metric(metric).summary.total);
    assert!(!top.frames.iter().any(|f| f == LOST_STACK));
    top.frames.clone()
}

/// `names` appear in `frames` in this order (leaf first), each as a whole function name.
fn assert_names_in_order(frames: &[String], names: &[&str]) {
    let mut at = 0;
    for name in names {
        match frames[at..].iter().position(|f| f == name) {
            Some(i) => at += i + 1,
            None => panic!("{name} missing from the stack (after frame {at}): {frames:#?}"),
        }
    }
}

#[test]
fn the_top_stacks_of_a_c_program_name_its_functions() {
    let Some((report, lock, _work)) = record_program("lockstack-c") else {
        return;
    };
    for metric in Metric::ALL {
        let frames = top_stack(&report, &lock, metric);
        // c_stack_test_take_lock calls fcntl itself: see lockstack.c for why it is not walked.
        assert_names_in_order(&frames, &["c_stack_test_hold_layers", "main"]);
        assert!(
            frames[0].contains("fcntl"),
            "the leaf is libc's fcntl: {frames:#?}"
        );
    }
}

#[test]
fn the_top_stacks_of_a_stripped_go_program_name_its_functions() {
    let Some((report, lock, _work)) = record_program("lockstack-go") else {
        return;
    };
    for metric in Metric::ALL {
        let frames = top_stack(&report, &lock, metric);
        assert_names_in_order(
            &frames,
            &[
                // syscall.FcntlFlock is inlined into its caller; names come from the table of
                // functions, not its inlining records.
                "syscall.Syscall",
                "main.goStackTestTakeLock",
                "main.goStackTestHoldLayers",
                "main.main",
                "runtime.main",
            ],
        );
    }
}
