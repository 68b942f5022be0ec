//! `cargo xtask setup`: what the eBPF build and the test suite need on a Debian machine, installed
//! only where missing. The eBPF toolchain pin lives here (and in tracer-cli/build.rs's default).

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Nightly whose LLVM (22) matches bpf-linker's; a newer nightly (LLVM 23) fails with "Invalid record".
pub const BPF_TOOLCHAIN: &str = include_str!("../../tracer-ebpf/bpf-toolchain");
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Runs the fuzz targets in fuzz/ (.ci/fuzz) with the pinned nightly.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages: LLVM 22 for bpf-linker (it links libLLVM.so.22 dynamically, so it must stay),
/// fonts for the plots, bpftrace for the contrib scripts' cross-check, btrfs-progs for the kernel
/// test on a btrfs subvolume, strace for the crash storm's injected crash points, Go for the
/// stripped Go program of the stack tests and `go tool pprof` for the pprof export's test.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links against LLVM 22"),
    ("libfontconfig-dev", "plot rendering (plotters)"),
    ("fonts-dejavu-core", "plot text"),
    (
        "bpftrace",
        "contrib/lockstats scripts and their cross-check test",
    ),
    ("btrfs-progs", "kernel test of locks on a btrfs subvolume"),
    (
        "strace",
        "crash points injected into pulls by the crash storm (bench/tests/storm.rs)",
    ),
    (
        "golang-go",
        "the stripped Go program of the stack tests, and go tool pprof",
    ),
    (
        "prometheus",
        "prometheus and promtool for the exporter test (tracer-cli/tests/prometheus.rs), run directly: its service is not used",
    ),
];

pub fn setup() -> Result<()> {
    apt_packages("setup", APT_PACKAGES)?;
    toolchain()?;
    bpf_linker()?;
    cargo_fuzz()?;
    Ok(())
}

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the Debian packages of `packages` (name, why) that are missing, saying what and why;
/// without root or apt it says what to run instead.
pub fn apt_packages(task: &str, packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<_> = packages.iter().filter(|(pkg, _)| !installed(pkg)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    for (pkg, why) in &missing {
        eprintln!("xtask {task}: installing {pkg} (apt): {why}");
    }
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !quiet_ok(Command::new("apt-get").arg("--version")) {
        bail!(
            "missing Debian packages {}; install them as root: apt-get install -y {}",
            names.join(", "),
            names.join(" ")
        );
    }
    apt_update()?;
    run_captured(
        "apt-get install",
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&names)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

pub fn apt_update() -> Result<()> {
    run_captured(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )
}

/// Runs a chatty command, showing its output only when it fails.
fn run_captured(what: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    if !out.status.success() {
        eprint!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        bail!("{what} failed ({})", out.status);
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn toolchain() -> Result<()> {
    let has_toolchain =
        quiet_ok(Command::new("rustup").args(["run", BPF_TOOLCHAIN, "rustc", "-V"]));
    if !has_toolchain {
        eprintln!(
            "xtask setup: installing Rust {BPF_TOOLCHAIN} with rust-src (rustup): the eBPF crate is built \
             with -Z build-std=core, and this nightly's LLVM 22 matches bpf-linker's"
        );
        return crate::status(Command::new("rustup").args([
            "toolchain",
            "install",
            BPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context("rustup toolchain install");
    }
    let components = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            BPF_TOOLCHAIN,
        ])
        .output()
        .context("rustup component list")?;
    if !String::from_utf8_lossy(&components.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        eprintln!(
            "xtask setup: adding rust-src to {BPF_TOOLCHAIN} (rustup): needed for -Z build-std=core"
        );
        crate::status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            BPF_TOOLCHAIN,
        ]))
        .context("rustup component add")?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if current.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing bpf-linker {BPF_LINKER_VERSION} built against LLVM 22 (cargo install, \
         about a minute): it links the eBPF object"
    );
    crate::status(
        crate::cargo_cmd(&[])
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
                "--force",
            ])
            // Without it the build finds Debian's default LLVM 14 and fails with -lLLVM missing.
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
    .context("cargo install bpf-linker")
}

fn cargo_fuzz() -> Result<()> {
    let current = crate::cargo_cmd(&["fuzz", "--version"]).output();
    if current.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install, about two minutes): \
         .ci/fuzz runs the fuzz targets with it"
    );
    crate::status(&mut crate::cargo_cmd(&[
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .context("cargo install cargo-fuzz")
}
