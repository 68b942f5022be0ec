//! `cargo xtask setup-podman`: a Debian sid rootfs with the podman that has staged layer creation
//! (containers/storage PR #378, in podman 5.8), next to the host's own podman 4.3 (Debian 12), so
//! both can be compared on the same machine without touching the host's packages.
//!
//! The rootfs is built with debootstrap from the Debian archive the host's apt already uses, into a
//! temporary directory that is renamed into place only once dpkg in it has podman installed, so an
//! interrupted build never looks finished. Whatever version sid has is recorded in `podman-version`
//! beside the rootfs; one older than [`MIN_VERSION`] is refused.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::{debian, setup};

/// The first podman release with staged layer creation; `lockbench compare-podman` checks the
/// podman it runs against the same bound (bench/src/scenario/compare_podman.rs).
const MIN_VERSION: (u32, u32) = (5, 8);
const SUITE: &str = "sid";
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "debootstrap",
        "builds the Debian sid rootfs that carries podman >= 5.8",
    ),
    (
        "podman",
        "the host's podman (4.3 on Debian 12): compare-podman's podman-old",
    ),
];

/// Builds the rootfs under `target/podman-sid` unless a complete one is there (`refresh` rebuilds).
pub fn setup_podman(target: &Path, refresh: bool) -> Result<()> {
    let base = target.join("podman-sid");
    let dir = base.join("rootfs");
    let version_file = base.join("podman-version");
    // Also when the rootfs is cached: podman-old is the host's podman.
    setup::apt_packages("setup-podman", APT_PACKAGES)?;
    if !refresh && let Ok(version) = fs::read_to_string(&version_file) {
        let version = version.trim().to_owned();
        check_version(&version)?;
        eprintln!(
            "xtask setup-podman: podman {version} in {} (cached; --refresh rebuilds)",
            dir.display()
        );
        return Ok(());
    }
    let mirror = debian::mirror()?;
    let staging = base.join("rootfs.new");
    remove_tree(&staging)?;
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    eprintln!(
        "xtask setup-podman: debootstrap {SUITE} with podman into {} (about a minute)",
        staging.display()
    );
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=podman,ca-certificates",
            SUITE,
        ])
        .arg(&staging)
        .arg(&mirror)
        .output()
        .context("cannot start debootstrap")?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr);
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!(
            "debootstrap {SUITE} from {mirror} failed ({}): {last}; is the Debian archive reachable?",
            out.status
        );
    }
    let version = package_version(&staging, "podman")?;
    check_version(&version)?;
    remove_tree(&dir)?;
    fs::rename(&staging, &dir)
        .with_context(|| format!("moving the rootfs to {}", dir.display()))?;
    fs::write(&version_file, format!("{version}\n"))
        .with_context(|| format!("writing {}", version_file.display()))?;
    eprintln!(
        "xtask setup-podman: podman {version} ready in {}",
        dir.display()
    );
    Ok(())
}

/// A package's version as dpkg inside the rootfs has it.
fn package_version(rootfs: &Path, package: &str) -> Result<String> {
    let out = Command::new("chroot")
        .arg(rootfs)
        .args(["dpkg-query", "-W", "-f=${Version}", package])
        .output()
        .context("cannot run chroot")?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || version.is_empty() {
        bail!("{package} is not installed in {}", rootfs.display());
    }
    Ok(version)
}

/// Refuses a podman older than [`MIN_VERSION`]: it would not have staged layer creation.
fn check_version(version: &str) -> Result<()> {
    let parsed =
        major_minor(version).with_context(|| format!("cannot read podman version {version:?}"))?;
    if parsed < MIN_VERSION {
        bail!(
            "Debian {SUITE} has podman {version}, older than {}.{} (the first with staged layer \
             creation); the staged variant needs {}.{} or newer",
            MIN_VERSION.0,
            MIN_VERSION.1,
            MIN_VERSION.0,
            MIN_VERSION.1
        );
    }
    Ok(())
}

/// `5.8.6+ds1-1` → (5, 8); an epoch (`1:5.8.6-1`) is skipped.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let upstream = version.split_once(':').map_or(version, |(_, v)| v);
    let mut parts = upstream.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn remove_tree(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_below_5_8_are_refused() {
        assert!(check_version("5.8.6+ds1-1").is_ok());
        assert!(check_version("1:6.0.1-2").is_ok());
        assert!(check_version("5.10.0-1").is_ok());
        let err = check_version("5.4.2+ds1-1").unwrap_err().to_string();
        assert!(err.contains("older than 5.8"), "{err}");
        assert!(check_version("4.3.1+ds1-8+deb12u1").is_err());
        assert!(check_version("unknown").is_err());
    }
}
