//! Developer tasks. The README's two commands, `cargo xtask demo` and `cargo xtask test`, go
//! through here so that a fresh machine needs nothing but rustup and cargo.

mod debian;
mod podman;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the eBPF build and the tests need, where missing (idempotent).
    Setup,
    /// Build locktrace with its embedded eBPF object.
    BuildEbpf,
    /// Set up, then run the whole test suite, kernel tests included (they need root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then run the contention demo (lockbench run) and write its report.
    Demo {
        /// Where the demo writes images, stores and reports.
        #[arg(long, default_value = "target/demo")]
        out: PathBuf,
        /// Extra arguments for `lockbench run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build (once, cached under target/) a Debian sid rootfs with podman >= 5.8, the podman with
    /// staged layer creation, for comparisons with the host's podman.
    SetupPodman {
        /// Rebuild it even if a complete one is cached (sid moves on).
        #[arg(long)]
        refresh: bool,
    },
    /// Set up (podman rootfs included), then compare podman 4.3, podman >= 5.8 and store-core on
    /// the same parallel pulls (lockbench compare-podman).
    ComparePodman {
        /// Where the comparison writes images, stores and reports.
        #[arg(long, default_value = "target/compare-podman")]
        out: PathBuf,
        /// Extra arguments for `lockbench compare-podman` (e.g. --repeat 3).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the kernel tests in QEMU guests booting stock Debian kernels (fentry and tracepoints).
    VmTest {
        #[arg(long, value_enum, default_value = "all")]
        kernel: vm::KernelChoice,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root).context("entering the workspace")?;
    match cli.task {
        Task::Setup => setup::setup(),
        Task::BuildEbpf => {
            setup::setup()?;
            cargo(&["build", "--package", "locktrace"])
        }
        Task::Test { args } => {
            setup::setup()?;
            let mut cmd = cargo_cmd(&["test", "--workspace", "--exclude", "tracer-ebpf"]);
            if let Some(reason) = kernel_tests_possible() {
                eprintln!("xtask test: kernel tests will be skipped: {reason}");
            } else {
                // Tests that need root and tracefs fail instead of skipping where they can run.
                cmd.env("LOCKTRACE_REQUIRE_KERNEL_TESTS", "1");
            }
            if !args.is_empty() {
                cmd.arg("--").args(&args);
            }
            status(&mut cmd)
        }
        Task::Demo { out, args } => {
            setup::setup()?;
            lockbench(&root, "run", &out, &args)
        }
        Task::SetupPodman { refresh } => podman::setup_podman(&target_dir()?, refresh),
        Task::ComparePodman { out, args } => {
            setup::setup()?;
            let target = target_dir()?;
            podman::setup_podman(&target, false)?;
            let rootfs = target.join("podman-sid/rootfs");
            let mut all = vec!["--podman-rootfs".to_string(), rootfs.display().to_string()];
            all.extend(args);
            lockbench(&root, "compare-podman", &out, &all)
        }
        Task::VmTest { kernel } => vm::run(kernel),
    }
}

/// Builds lockbench and locktrace (release) and runs `lockbench SCENARIO --out OUT ARGS`, untraced
/// where tracing cannot work.
fn lockbench(root: &Path, scenario: &str, out: &Path, args: &[String]) -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "--package",
        "lockbench",
        "--package",
        "locktrace",
    ])?;
    let mut cmd = Command::new(root.join("target/release/lockbench"));
    cmd.arg(scenario).arg("--out").arg(out).args(args);
    if kernel_tests_possible().is_some() {
        cmd.args(["--trace", "off"]);
    }
    status(&mut cmd)
}

/// None when the kernel tests can run here; otherwise why not.
fn kernel_tests_possible() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel without BTF");
    }
    if !Path::new("/sys/kernel/tracing").is_dir() {
        return Some("no /sys/kernel/tracing");
    }
    None
}

/// Cargo's target directory (honours CARGO_TARGET_DIR and the workspace's config).
fn target_dir() -> Result<PathBuf> {
    let out = cargo_cmd(&["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed ({})", out.status);
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args);
    cmd
}

fn cargo(args: &[&str]) -> Result<()> {
    status(&mut cargo_cmd(args))
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("{:?} failed ({st})", cmd.get_program());
    }
    Ok(())
}
