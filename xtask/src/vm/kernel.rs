//! The pinned stock Debian kernels the guests boot, and their download.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::setup;

/// A stock Debian cloud kernel: BTF, fentry/fexit and the serial port built in, no modules needed.
pub(super) struct Kernel {
    pub(super) label: &'static str,
    pub(super) package: &'static str,
    pub(super) version: &'static str,
}

/// Pinned exactly, so a run is reproducible; when Debian drops one from its archive, pick a current
/// one with `apt-cache search linux-image | grep cloud-amd64-unsigned`.
const KERNELS: &[Kernel] = &[
    Kernel {
        label: "6.1",
        package: "linux-image-6.1.0-56-cloud-amd64-unsigned",
        version: "6.1.192-2",
    },
    Kernel {
        label: "6.12",
        package: "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        version: "6.12.117-1~deb12u1",
    },
];

/// `--kernel`: one of [`KERNELS`] or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

impl KernelChoice {
    pub(super) fn kernels(self) -> Vec<&'static Kernel> {
        let label = match self {
            KernelChoice::V6_1 => "6.1",
            KernelChoice::V6_12 => "6.12",
            KernelChoice::All => return KERNELS.iter().collect(),
        };
        KERNELS.iter().filter(|k| k.label == label).collect()
    }
}

/// The kernel's bzImage, downloaded with apt and unpacked once into the cache.
pub(super) fn image(kernel: &Kernel, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(format!("{}_{}", kernel.package, kernel.version));
    let image = dir.join("vmlinuz");
    if image.exists() {
        return Ok(image);
    }
    let download = dir.join("download");
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    eprintln!(
        "xtask vm-test: downloading {}={} (apt, about 30 MB, cached in {})",
        kernel.package,
        kernel.version,
        cache.display()
    );
    let spec = format!("{}={}", kernel.package, kernel.version);
    let fetch = || {
        let mut cmd = Command::new("apt-get");
        // apt's download sandbox user cannot write to a root-owned target directory.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd.args(["download", "-q", &spec])
            .current_dir(&download)
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh machine may have stale or no package lists.
    let fetched = fetch() || (setup::apt_update().is_ok() && fetch());
    if !fetched {
        bail!(
            "cannot download {spec}; if Debian dropped it, pin a current cloud kernel in KERNELS \
             (xtask/src/vm.rs): apt-cache search linux-image | grep cloud-amd64-unsigned"
        );
    }
    let deb = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;
    let extract = dir.join("extract");
    fs::create_dir_all(&extract)?;
    let tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let st = Command::new("tar")
        .arg("-C")
        .arg(&extract)
        .args(["-x", "--wildcards", "./boot/vmlinuz-*"])
        .stdin(tar.stdout.context("dpkg-deb stdout")?)
        .status()
        .context("cannot run tar")?;
    if !st.success() {
        bail!("no boot/vmlinuz-* in {}", deb.display());
    }
    let found = fs::read_dir(extract.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .next()
        .context("vmlinuz missing after extraction")?;
    fs::rename(&found, &image)?;
    fs::remove_dir_all(&extract)?;
    fs::remove_dir_all(&download)?;
    Ok(image)
}
