//! Booting one guest under QEMU, with KVM where it really works and software emulation otherwise.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// A working KVM boots to the first serial line in about a second.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "software emulation (TCG, instruction-counted clock; no usable KVM here)",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host", "-smp", "2"],
            // Guest time counted in executed instructions (1 ns each), not taken from the host:
            // a host that preempts the emulator between a syscall's return and the workload's
            // clock read would otherwise show up as milliseconds of lock time the tracer never
            // saw. `sleep=off` skips idle time, so the tests' sleeps cost nothing. Instruction
            // counting needs a single emulation thread, hence one CPU.
            Accel::Tcg => &[
                "-accel",
                "tcg",
                "-icount",
                "shift=0,sleep=off",
                "-cpu",
                "max",
                "-smp",
                "1",
            ],
        }
    }
}

/// KVM where it really boots a stock kernel: /dev/kvm can exist and still be unusable (nested
/// paravirtual hosts reject the MSRs a full guest sets, or hang it), so a probe boot decides.
pub(super) fn accelerator(image: &Path, initramfs: &Path, work: &Path) -> Result<Accel> {
    let usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if usable
        && boot(
            image,
            initramfs,
            &work.join("kvm-probe"),
            Accel::Kvm,
            PROBE_TIMEOUT,
            true,
        )
        .is_ok_and(|out| out.results.contains("@@@ done"))
    {
        return Ok(Accel::Kvm);
    }
    Ok(Accel::Tcg)
}

/// What one guest left behind.
pub(super) struct GuestOutput {
    pub(super) results: String,
    pub(super) console: String,
    pub(super) timed_out: bool,
    pub(super) dir: PathBuf,
}

pub(super) fn boot(
    image: &Path,
    initramfs: &Path,
    dir: &Path,
    accel: Accel,
    timeout: Duration,
    probe: bool,
) -> Result<GuestOutput> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let console = dir.join("console.log");
    let results = dir.join("results.log");
    let mut append = String::from("console=ttyS0 panic=-1 oops=panic rdinit=/init quiet");
    if probe {
        append.push_str(" vmtest=probe");
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(accel.args())
        .args(["-m", "1024", "-nodefaults", "-display", "none"])
        .args(["-no-reboot", "-kernel"])
        .arg(image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append, "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("qemu.log"))?);
    let child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
    let timed_out = wait_or_kill(child, timeout)?;
    let text = |p: &Path| {
        fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    };
    Ok(GuestOutput {
        results: text(&results),
        console: text(&console) + &text(&dir.join("qemu.log")),
        timed_out,
        dir: dir.to_path_buf(),
    })
}

/// Waits for QEMU to exit; kills it after `timeout`. Returns whether it had to.
fn wait_or_kill(mut child: Child, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill()?;
    child.wait()?;
    Ok(true)
}
