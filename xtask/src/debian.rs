//! The Debian archive the host's apt uses, and Debian sid's package lists in an apt state of our
//! own, so sid's packages can be looked up and downloaded without adding sid to the host's sources.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Where the host's apt finds the Debian archive (deb822 first, then the one-line format).
const APT_SOURCES: &[&str] = &[
    "/etc/apt/sources.list.d/debian.sources",
    "/etc/apt/sources.list",
];

/// The Debian archive the host's apt uses (never the security archive).
pub fn mirror() -> Result<String> {
    for path in APT_SOURCES {
        if let Ok(text) = fs::read_to_string(path)
            && let Some(uri) = archive_uri(&text)
        {
            return Ok(uri);
        }
    }
    bail!(
        "no Debian archive found in {}; add one to apt's sources",
        APT_SOURCES.join(" or ")
    )
}

/// The first archive URI in a deb822 (`URIs:`) or one-line (`deb URI suite …`) sources file.
fn archive_uri(sources: &str) -> Option<String> {
    sources
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| !w.starts_with('['))
            } else {
                None
            }?;
            (uri.contains("://") && !uri.contains("security")).then(|| uri.to_owned())
        })
}

/// Package lists for sid, refreshed once per run.
pub struct SidApt {
    root: PathBuf,
}

impl SidApt {
    /// Writes a sources file naming sid on the host's Debian mirror and runs `apt-get update` on it.
    pub fn update(cache: &Path) -> Result<SidApt> {
        let root = cache.join("apt-sid");
        for dir in ["parts", "lists/partial", "cache/archives/partial"] {
            let dir = root.join(dir);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mirror = mirror()?;
        fs::write(
            root.join("parts/sid.sources"),
            format!(
                "Types: deb\nURIs: {mirror}\nSuites: sid\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            ),
        )?;
        let apt = SidApt { root };
        eprintln!("xtask: reading Debian sid's package lists (apt, own state, about 30 s)");
        let out = apt
            .command("apt-get")
            .args(["update", "-qq"])
            .output()
            .context("cannot run apt-get update")?;
        if !out.status.success() {
            bail!(
                "apt-get update for Debian sid from {mirror} failed ({}): {}; is the Debian archive reachable?",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', "; ")
            );
        }
        Ok(apt)
    }

    /// `apt-get` or `apt-cache` pointed at this state instead of the host's.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let opt = |name: &str, dir: &str| format!("{name}={}", self.root.join(dir).display());
        for o in [
            "Dir::Etc::sourcelist=/dev/null".to_owned(),
            opt("Dir::Etc::sourceparts", "parts"),
            opt("Dir::State::Lists", "lists"),
            opt("Dir::Cache", "cache"),
        ] {
            cmd.args(["-o", &o]);
        }
        cmd
    }

    /// The newest version of the packages whose names match `pattern` (an apt-cache regex), as
    /// (package, version).
    pub fn newest(&self, pattern: &str) -> Result<(String, String)> {
        let out = self
            .command("apt-cache")
            .args(["search", "--names-only", pattern])
            .output()
            .context("cannot run apt-cache search")?;
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        let mut best: Option<(String, String)> = None;
        for name in names {
            let version = self.candidate(&name)?;
            let newer = match &best {
                None => true,
                Some((_, v)) => version_newer(&version, v)?,
            };
            if newer {
                best = Some((name, version));
            }
        }
        best.with_context(|| format!("Debian sid has no package matching {pattern}"))
    }

    fn candidate(&self, package: &str) -> Result<String> {
        let out = self
            .command("apt-cache")
            .args(["policy", package])
            .output()
            .context("cannot run apt-cache policy")?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate: ").map(str::to_owned))
            .filter(|v| v != "(none)")
            .with_context(|| format!("no candidate version of {package} in Debian sid"))
    }
}

/// Debian version order, as dpkg compares them.
fn version_newer(a: &str, b: &str) -> Result<bool> {
    Ok(Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("cannot run dpkg --compare-versions")?
        .success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_uri_comes_from_either_sources_format() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: http://mirror.invalid/debian-security\n";
        assert_eq!(
            archive_uri(deb822).as_deref(),
            Some("http://mirror.invalid/debian")
        );
        let legacy = "deb http://mirror.invalid/debian-security bookworm-security main\n\
                      deb [arch=amd64] http://mirror.invalid/debian bookworm main\n";
        assert_eq!(
            archive_uri(legacy).as_deref(),
            Some("http://mirror.invalid/debian")
        );
        assert_eq!(archive_uri("# nothing\n"), None);
    }
}
