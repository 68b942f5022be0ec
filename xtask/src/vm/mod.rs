//! `cargo xtask vm-test`: the kernel tests inside QEMU guests that boot stock Debian kernels.
//!
//! This project's CI hosts refuse BPF trampolines, so `cargo xtask test` only ever exercises the
//! tracepoint attach mode there. Ordinary distro kernels allow fentry, so each kernel (two pinned
//! ones and Debian sid's newest, see `kernel.rs`) is booted with an initramfs holding static busybox,
//! the host-built `locktrace`, `lockload` and the kernel test binary (with the shared libraries they
//! link), and the very same tests run once with `record --attach fentry` and once with
//! `--attach tracepoint`, with their accuracy tolerances unchanged (KVM where it works; otherwise
//! software emulation with an instruction-counted clock, which keeps host scheduling out of the
//! guest's timings). The guest reports on a second serial port; a hang, a panic or a missing result
//! is a failure.

mod guest;
mod initramfs;
mod kernel;
mod verdict;

use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::setup;

pub use kernel::KernelChoice;

const APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boots the test kernels"),
    (
        "busybox-static",
        "the guest's init, shell and mount (static, so it needs no libraries)",
    ),
];

/// Software emulation runs the whole guest (both attach modes) in about 70 s; this only catches
/// hangs.
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);

pub fn run(choice: KernelChoice) -> Result<()> {
    let started = Instant::now();
    setup::setup()?;
    setup::apt_packages("vm-test", APT_PACKAGES)?;
    let target = crate::target_dir()?;
    let cache = target.join("vm-cache");
    let work = target.join("vm");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let kernels = choice.kernels(&cache)?;
    let images = kernels
        .iter()
        .map(|k| kernel::image(k, &cache))
        .collect::<Result<Vec<_>>>()?;
    let binaries = initramfs::build(&work)?;
    let initramfs = work.join("initramfs.cpio");
    initramfs::pack(&binaries, &initramfs)?;
    let accel = guest::accelerator(&images[0], &initramfs, &work)?;
    eprintln!("xtask vm-test: booting with {}", accel.describe());

    let mut failed = Vec::new();
    for (kernel, image) in kernels.iter().zip(&images) {
        let t = Instant::now();
        let dir = work.join(kernel.label);
        match guest::boot(image, &initramfs, &dir, accel, GUEST_TIMEOUT, false)
            .and_then(|out| verdict::verdict(&out))
        {
            Ok(summary) => eprintln!(
                "xtask vm-test: {} ({}): pass in {:.1}s: {summary}",
                kernel.label,
                kernel.package,
                t.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!(
                    "xtask vm-test: {} ({}): FAIL in {:.1}s: {e:#}",
                    kernel.label,
                    kernel.package,
                    t.elapsed().as_secs_f64()
                );
                failed.push(kernel.label);
            }
        }
    }
    eprintln!(
        "xtask vm-test: {} kernel(s) in {:.1}s",
        kernels.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("vm-test failed on kernel(s) {}", failed.join(", "));
    }
    Ok(())
}
