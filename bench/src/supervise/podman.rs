//! The pull processes of `compare-podman`: `podman pull` (the host's, or one run from a rootfs) or
//! `lockbench pull` (store-core), started per image into a shared store or a store each, timed by
//! the parent (podman reports no timings), killed at the mode timeout.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use store_core::{ExtractMode, SyncLevel};

use crate::error::{Context, Error, Result};
use crate::imagegen::ImageInfo;
use crate::model::PullResult;
use crate::supervise::chroot::RootFs;
use crate::text::log_tail;

/// A running (then finished) pull.
pub struct Pull<'a> {
    pub label: String,
    pub image: &'a ImageInfo,
    pub child: Child,
    pub stderr: PathBuf,
    pub took: Option<(Duration, ExitStatus)>,
    /// Killed at the mode timeout: that, not its exit status, is its failure.
    pub timed_out: bool,
}

impl Drop for Pull<'_> {
    /// A pull never waited for (its run failed early) is killed rather than left running.
    fn drop(&mut self) {
        if self.took.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a reader runs against a store (see [`Client::reader`]).
pub enum ReadOp<'a> {
    /// List the images (and their layers).
    Images,
    /// Create container `name` from `image` (pre-pulled into the store; see
    /// [`Client::image_to_create_from`]).
    Create { name: &'a str, image: &'a str },
    /// Remove container `name`.
    Remove { name: &'a str },
}

impl ReadOp<'_> {
    /// The command's name, as reports and tables show it.
    pub fn name(&self) -> &'static str {
        match self {
            ReadOp::Images => "images",
            ReadOp::Create { .. } => "create",
            ReadOp::Remove { .. } => "rm",
        }
    }
}

/// What runs a pull.
#[derive(Clone)]
pub enum Client {
    /// podman: `bin` on the host, or the rootfs's `/usr/bin/podman` chrooted.
    Podman {
        bin: PathBuf,
        rootfs: Option<RootFs>,
        driver: String,
    },
    /// `lockbench pull` (this executable): store-core.
    Store {
        exe: PathBuf,
        mode: ExtractMode,
        sync: SyncLevel,
        max_layer_size: u64,
    },
}

/// Where the rootfs's podman is, inside it.
pub const ROOTFS_PODMAN: &str = "/usr/bin/podman";

impl Client {
    /// A command running `program` of this client: chrooted for a rootfs's podman, with `shared`
    /// (holding stores and images) seen at the same path, in `cwd`.
    fn command(&self, shared: &Path, cwd: &Path) -> Result<Command> {
        let mut cmd = match self {
            Client::Podman {
                rootfs: Some(rootfs),
                ..
            } => rootfs.command(ROOTFS_PODMAN, shared, cwd)?,
            Client::Podman { bin, .. } => Command::new(bin),
            Client::Store { exe, .. } => Command::new(exe),
        };
        cmd.current_dir(cwd);
        Ok(cmd)
    }

    /// `podman version 5.8.6`, `store-core 0.1.0`.
    pub fn version(&self, shared: &Path) -> Result<String> {
        if let Client::Store { .. } = self {
            return Ok(format!("store-core {}", env!("CARGO_PKG_VERSION")));
        }
        let out = self
            .command(shared, shared)?
            .arg("--version")
            .output()
            .context("running podman --version")?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || version.is_empty() {
            return Err(Error::Invalid(format!(
                "podman --version failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(version)
    }

    /// Starts a pull of `image` into the store `base/<store>`, stderr into `base/<label>.stderr`.
    /// `shared` holds `base` and the images.
    pub fn spawn<'i>(
        &self,
        shared: &Path,
        base: &Path,
        label: String,
        store: &str,
        image: &'i ImageInfo,
    ) -> Result<Pull<'i>> {
        let stderr = base.join(format!("{label}.stderr"));
        let images = image.dir.parent().unwrap_or(&image.dir);
        let mut cmd = self.command(shared, images)?;
        match self {
            Client::Podman { driver, .. } => {
                podman_store(&mut cmd, base, store, driver)
                    .args(["pull", "--quiet"])
                    // podman names the image after the layout path, which must be lowercase: a
                    // relative path from the images directory gives `localhost/img-00`.
                    .arg(format!("oci:{}:{}", image.name, image.tag));
            }
            Client::Store {
                mode,
                sync,
                max_layer_size,
                ..
            } => {
                cmd.args(["pull", "--store"])
                    .arg(base.join(store))
                    .args(["--mode", &mode.to_string(), "--sync", &sync.to_string()])
                    .args(["--max-layer-size", &max_layer_size.to_string()])
                    .arg(format!("{}:{}", image.name, image.tag));
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?,
            )
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        Ok(Pull {
            label,
            image,
            child,
            stderr,
            took: None,
            timed_out: false,
        })
    }

    /// What a user runs against the store while pulls go on (podman issue #25862: "podman pull
    /// locks and holds podman images / run"): `podman images|create|rm` for podman, `lockbench
    /// images|create|rm` for store-core. Output discarded, stderr kept for the error.
    pub fn reader(&self, shared: &Path, base: &Path, store: &str, op: &ReadOp) -> Result<Command> {
        let mut cmd = self.command(shared, base)?;
        match self {
            Client::Podman { driver, .. } => {
                podman_store(&mut cmd, base, store, driver);
                match op {
                    ReadOp::Images => cmd.args(["images", "--quiet"]),
                    ReadOp::Create { name, image } => cmd
                        .args([
                            "create",
                            "--name",
                            name,
                            "--network",
                            "none",
                            "--pull",
                            "never",
                        ])
                        .args([image, "true"]),
                    ReadOp::Remove { name } => cmd.args(["rm", name]),
                };
            }
            Client::Store { .. } => {
                let store = base.join(store);
                match op {
                    ReadOp::Images => cmd.args(["images", "--store"]).arg(store),
                    ReadOp::Create { name, image } => cmd
                        .args(["create", "--store"])
                        .arg(store)
                        .args(["--name", name, image]),
                    ReadOp::Remove { name } => cmd.args(["rm", "--store"]).arg(store).arg(name),
                };
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Ok(cmd)
    }

    /// What to create containers from after `image` was pulled into the (otherwise empty) store
    /// `base/<store>`: its name for store-core (`lockbench pull DIR:TAG` names it after the tag),
    /// its ID as podman lists it for podman (podman 4.3 names an `oci:DIR:TAG` pull
    /// `localhost/DIR:TAG`, 5.8 `docker.io/library/TAG:TAG`).
    pub fn image_to_create_from(
        &self,
        shared: &Path,
        base: &Path,
        store: &str,
        image: &ImageInfo,
    ) -> Result<String> {
        let Client::Podman { driver, .. } = self else {
            return Ok(image.tag.clone());
        };
        let mut cmd = self.command(shared, base)?;
        let out = podman_store(&mut cmd, base, store, driver)
            .args(["images", "--quiet", "--no-trunc"])
            .output()
            .context("running podman images")?;
        let listed = String::from_utf8_lossy(&out.stdout);
        match listed.lines().next() {
            Some(id) if out.status.success() && !id.trim().is_empty() => Ok(id.trim().to_string()),
            _ => Err(Error::Invalid(format!(
                "podman images lists no image after pulling {} ({}): {}",
                image.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    /// The runroot of `store` as seen from the host (inside the rootfs for a chrooted podman).
    pub fn host_runroot(&self, store: &str) -> Option<PathBuf> {
        match self {
            Client::Podman {
                rootfs: Some(rootfs),
                ..
            } => Some(rootfs.inside(&runroot(store))),
            Client::Podman { .. } => Some(runroot(store)),
            Client::Store { .. } => None,
        }
    }
}

/// podman's global options for the store `base/<store>`.
fn podman_store<'c>(
    cmd: &'c mut Command,
    base: &Path,
    store: &str,
    driver: &str,
) -> &'c mut Command {
    cmd.arg("--root")
        .arg(base.join(store))
        .arg("--runroot")
        .arg(runroot(store))
        .args(["--storage-driver", driver, "--events-backend", "none"])
}

/// podman caps the runroot path at 50 characters, so it lives in a short temp dir.
fn runroot(store: &str) -> PathBuf {
    Path::new("/tmp").join(format!("lockbench-{}-{store}", std::process::id()))
}

/// Waits for every pull; those still running `timeout` after `started` are killed.
pub fn wait_all(pulls: &mut [Pull], started: Instant, timeout: Duration) -> Result<()> {
    while pulls.iter().any(|p| p.took.is_none()) {
        for p in pulls.iter_mut().filter(|p| p.took.is_none()) {
            let waited = p.child.try_wait();
            if let Some(status) = waited.with_context(|| format!("waiting for {}", p.label))? {
                p.took = Some((started.elapsed(), status));
            } else if started.elapsed() > timeout {
                let _ = p.child.kill();
                let status = p
                    .child
                    .wait()
                    .with_context(|| format!("waiting for {}", p.label))?;
                p.took = Some((started.elapsed(), status));
                p.timed_out = true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// One result per pull, and each failed pull's error once for the failures list.
pub fn collect(pulls: Vec<Pull>) -> (Vec<PullResult>, Vec<String>) {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for p in pulls {
        let (took, status) = p.took.expect("every pull was waited for");
        let error = if p.timed_out {
            Some(format!(
                "{} ({}) timed out after {}s and was killed",
                p.label,
                p.image.name,
                took.as_secs()
            ))
        } else {
            (!status.success()).then(|| {
                format!(
                    "{} ({}): exited with {status}{}",
                    p.label,
                    p.image.name,
                    log_tail(&p.stderr)
                )
            })
        };
        errors.extend(error.clone());
        let ok = error.is_none();
        results.push(PullResult {
            worker: p.label.clone(),
            image: p.image.name.clone(),
            repeat: 0,
            pid: p.child.id(),
            duration_ns: ok.then_some(took.as_nanos() as u64),
            bytes: if ok { p.image.tar_bytes() } else { 0 },
            error,
        });
    }
    (results, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull<'a>(image: &'a ImageInfo, dir: &Path, label: &str, script: &str) -> Pull<'a> {
        let stderr = dir.join(format!("{label}.stderr"));
        let child = Command::new("sh")
            .args(["-c", script])
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Pull {
            label: label.to_string(),
            image,
            child,
            stderr,
            took: None,
            timed_out: false,
        }
    }

    #[test]
    fn a_pull_that_times_out_is_one_failure_and_the_others_keep_their_results() {
        let dir = tempfile::tempdir().unwrap();
        let image = |name: &str| ImageInfo {
            name: name.to_string(),
            dir: dir.path().join(name),
            tag: "latest".to_string(),
            manifest_digest: String::new(),
            layers: Vec::new(),
        };
        let (ok, stuck, broken) = (image("img-00"), image("img-01"), image("img-02"));
        let mut pulls = vec![
            pull(&ok, dir.path(), "pull-0", "exit 0"),
            pull(&stuck, dir.path(), "pull-1", "exec sleep 60"),
            pull(
                &broken,
                dir.path(),
                "pull-2",
                "echo 'no such image' >&2; exit 125",
            ),
        ];
        wait_all(&mut pulls, Instant::now(), Duration::from_millis(300)).unwrap();
        let (results, errors) = collect(pulls);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].starts_with("pull-1 (img-01) timed out after"),
            "{errors:#?}"
        );
        assert!(
            errors[1].contains("pull-2 (img-02)") && errors[1].ends_with(": no such image"),
            "{errors:#?}"
        );
        assert!(results[0].error.is_none() && results[0].duration_ns.is_some());
        assert_eq!(results[1].error.as_ref(), Some(&errors[0]));
        assert!(results[1].duration_ns.is_none());
    }
}
