//! The real client under `locktrace record --stacks`: four parallel pulls by the host's podman 4.3
//! (Debian's build: stripped, with `.gopclntab` left), each into the same store, as `podman pull`s
//! on one machine do. layers.lock's blockers must be those podman processes, and its top holding
//! stack must name containers/storage's functions.

mod common;

use std::path::Path;
use std::process::Command;

use common::{lockbench, text};
use locktrace_report::{Metric, Mode, Report};

/// Root, kernel BTF, the host's podman and a built locktrace; otherwise says why the test is
/// skipped, or panics where CI set podman up (LOCKBENCH_REQUIRE_PODMAN).
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing = if !root {
        Some("not root")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF")
    } else if Command::new("podman").arg("--version").output().is_err() {
        Some("the host's podman is not installed (cargo xtask setup-podman)")
    } else if !locktrace().is_file() {
        Some("locktrace is not built next to lockbench (cargo xtask test builds it)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var_os("LOCKBENCH_REQUIRE_PODMAN").is_some() => {
            panic!("podman under record --stacks is required here but {why}")
        }
        Some(why) => {
            eprintln!("skipped: podman under record --stacks ({why})");
            false
        }
    }
}

fn locktrace() -> std::path::PathBuf {
    Path::new(env!("CARGO_BIN_EXE_lockbench")).with_file_name("locktrace")
}

#[test]
fn parallel_podman_pulls_name_their_blockers_and_containers_storage_stacks() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let generated = lockbench(&[
        "gen",
        "--out",
        images.to_str().unwrap(),
        "--images",
        "4",
        "--layers",
        "2",
        "--layer-size",
        "4M",
    ]);
    assert!(generated.status.success(), "{}", text(&generated).1);
    let store = dir.path().join("store");
    // podman caps the runroot's length; the image references are relative, so lowercase.
    let runroot = format!("/tmp/locktrace-stacks-{}", std::process::id());
    let pulls: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "podman --root {} --runroot {runroot} --storage-driver overlay --events-backend none pull -q oci:img-0{i}:latest >/dev/null &",
                store.display()
            )
        })
        .collect();
    let script = format!("{} wait", pulls.join(" "));
    let report = dir.path().join("report.json");
    let out = Command::new(locktrace())
        .current_dir(&images)
        .args([
            "record",
            "--stacks",
            "--lock",
            "layers.lock",
            "--quiet",
            "-o",
        ])
        .arg(&report)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&runroot);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = Report::read(&report).unwrap();
    let layers = report
        .locks
        .iter()
        .find(|l| {
            l.key.path.as_deref()
                == Some(&format!("{}/overlay-layers/layers.lock", store.display()))
        })
        .unwrap_or_else(|| panic!("no layers.lock of the store: {:?}", report.locks));
    let write = &layers.modes[&Mode::Write];
    // Four pulls into one store wait for each other's layer commits.
    assert!(!write.blockers.is_empty(), "no blockers: {write:?}");
    for b in &write.blockers {
        assert_eq!(b.holder.comm, "podman", "blocker {:?}", b.holder);
        let cmdline = b.holder.cmdline.as_deref().unwrap_or("");
        assert!(cmdline.contains(" pull "), "blocker {cmdline}");
    }
    let holds = write.stacks(Metric::Hold);
    assert_eq!(
        holds.count(),
        write.hold.summary.count,
        "every hold has a stack"
    );
    let top = &holds.top[0].frames;
    assert!(
        top.iter()
            .any(|f| f.starts_with("github.com/containers/storage.")),
        "the top holding stack names no containers/storage function: {top:#?}"
    );
    let unnamed = top.iter().filter(|f| f.starts_with("[unknown]")).count();
    assert_eq!(unnamed, 0, "unnamed frames in podman's stack: {top:#?}");
}
