//! The pinned stock Debian kernels the guests boot, and their download.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{debian::SidApt, setup};

/// A stock Debian cloud kernel: BTF, fentry/fexit and the serial port built in, no modules needed.
pub(super) struct Kernel {
    pub(super) label: &'static str,
    pub(super) package: String,
    pub(super) version: String,
    /// Debian sid's lists when the kernel comes from there, else the host's apt.
    sid: Option<SidApt>,
}

/// Pinned exactly, so a run is reproducible; when Debian drops one from its archive, pick a current
/// one with `apt-cache search linux-image | grep cloud-amd64-unsigned`. (label, package, version)
const PINNED: &[(&str, &str, &str)] = &[
    (
        "6.1",
        "linux-image-6.1.0-56-cloud-amd64-unsigned",
        "6.1.192-2",
    ),
    (
        "6.12",
        "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        "6.12.117-1~deb12u1",
    ),
];

/// The newest cloud kernel in Debian sid, whatever it is on the day: since 7.x its bzImage is in a
/// `linux-binary-*` package (the `linux-image-*` one is a meta package).
const NEWEST_LABEL: &str = "newest";
const NEWEST_PATTERN: &str = "^linux-binary-[0-9][^ ]*-cloud-amd64$";

/// `--kernel`: one of the pinned kernels, the newest one in sid, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    /// Debian sid's newest cloud kernel (looked up at run time; its version is printed).
    Newest,
    All,
}

impl KernelChoice {
    pub(super) fn kernels(self, cache: &Path) -> Result<Vec<Kernel>> {
        let wanted = |label: &str| match self {
            KernelChoice::V6_1 => label == "6.1",
            KernelChoice::V6_12 => label == "6.12",
            KernelChoice::Newest => label == NEWEST_LABEL,
            KernelChoice::All => true,
        };
        let mut kernels: Vec<Kernel> = PINNED
            .iter()
            .filter(|(label, ..)| wanted(label))
            .map(|&(label, package, version)| Kernel {
                label,
                package: package.into(),
                version: version.into(),
                sid: None,
            })
            .collect();
        if wanted(NEWEST_LABEL) {
            let sid = SidApt::update(cache)?;
            let (package, version) = sid.newest(NEWEST_PATTERN)?;
            kernels.push(Kernel {
                label: NEWEST_LABEL,
                package,
                version,
                sid: Some(sid),
            });
        }
        Ok(kernels)
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
        let mut cmd = match &kernel.sid {
            Some(sid) => sid.command("apt-get"),
            None => Command::new("apt-get"),
        };
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
    let fetched = fetch() || (kernel.sid.is_none() && setup::apt_update().is_ok() && fetch());
    if !fetched {
        bail!(
            "cannot download {spec}; if Debian dropped it, pin a current cloud kernel in PINNED \
             (xtask/src/vm/kernel.rs): apt-cache search linux-image | grep cloud-amd64-unsigned"
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
        .args(["-x", "--wildcards", "--no-anchored", "vmlinuz*"])
        .stdin(tar.stdout.context("dpkg-deb stdout")?)
        .status()
        .context("cannot run tar")?;
    if !st.success() {
        bail!("no vmlinuz in {}", deb.display());
    }
    // boot/vmlinuz-VERSION up to 6.x, usr/lib/modules/VERSION/vmlinuz from 7.x on.
    let found = find_file(&extract, &|name| name.starts_with("vmlinuz"))?
        .context("vmlinuz missing after extraction")?;
    fs::rename(&found, &image)?;
    fs::remove_dir_all(&extract)?;
    fs::remove_dir_all(&download)?;
    Ok(image)
}

/// The first regular file under `dir` whose name passes `wanted`, depth first.
fn find_file(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if let Some(found) = find_file(&path, wanted)? {
                return Ok(Some(found));
            }
        } else if entry.file_name().to_str().is_some_and(wanted) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}
