//! Kernel-side figures: runs `locktrace record` around a mode's workers and reads its report.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use locktrace_report::Report;

/// How long the tracer gets to attach before the workers start anyway.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the tracer gets to write its report after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMode {
    /// Trace when `locktrace` is there and we are root; otherwise say so and go on.
    Auto,
    /// Trace or fail.
    On,
    Off,
}

impl FromStr for TraceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TraceMode::Auto),
            "on" => Ok(TraceMode::On),
            "off" => Ok(TraceMode::Off),
            other => Err(format!(
                "unknown trace mode {other:?} (expected auto, on or off)"
            )),
        }
    }
}

impl fmt::Display for TraceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceMode::Auto => "auto",
            TraceMode::On => "on",
            TraceMode::Off => "off",
        })
    }
}

impl TraceMode {
    /// Why there are no kernel figures when no tracer ran.
    pub fn skip_note(self) -> String {
        match self {
            TraceMode::Off => "kernel tracing off (--trace off)".to_string(),
            TraceMode::Auto | TraceMode::On => {
                "kernel tracing skipped (locktrace missing or not root)".to_string()
            }
        }
    }
}

/// A usable `locktrace` binary.
pub struct Tracer {
    bin: PathBuf,
}

/// A running `locktrace record`.
pub struct Session {
    child: Child,
    report: PathBuf,
    log: PathBuf,
}

impl Tracer {
    /// Finds `locktrace` next to this binary (same target dir) or on PATH.
    pub fn detect(mode: TraceMode) -> Result<Option<Tracer>> {
        if mode == TraceMode::Off {
            return Ok(None);
        }
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("locktrace")))
            .filter(|p| p.is_file());
        let problem = match sibling.or_else(|| which::which("locktrace").ok()) {
            // SAFETY: geteuid has no preconditions.
            Some(_) if unsafe { libc::geteuid() } != 0 => {
                "kernel tracing needs root (eBPF); run as root or use --trace off".to_string()
            }
            Some(bin) => return Ok(Some(Tracer { bin })),
            None => "the locktrace binary is neither next to lockbench nor on PATH \
                     (build it with `cargo build -p locktrace`)"
                .to_string(),
        };
        if mode == TraceMode::On {
            bail!("--trace on: {problem}");
        }
        eprintln!("note: {problem}; kernel figures skipped, store-clock figures only");
        Ok(None)
    }

    /// Starts tracing all lock files system-wide into `report`; returns once it is attached.
    /// Not `--quiet`: its "tracing with … hooks" line on stderr is the attach signal.
    pub fn start(&self, report: &Path, log: &Path) -> Result<Session> {
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&self.bin)
            .args(["record", "--all-locks", "-o"])
            .arg(report)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let mut session = Session {
            child,
            report: report.to_path_buf(),
            log: log.to_path_buf(),
        };
        session.wait_attached()?;
        Ok(session)
    }
}

impl Session {
    /// `locktrace record` says on stderr when its probes are attached; until then lock events
    /// would be missed.
    fn wait_attached(&mut self) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < ATTACH_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "locktrace record exited early ({status}){}",
                    self.log_tail()
                );
            }
            let log = fs::read_to_string(&self.log)
                .unwrap_or_default()
                .to_lowercase();
            if log.contains("tracing with") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "locktrace record did not attach within {}s{}",
            ATTACH_TIMEOUT.as_secs(),
            self.log_tail()
        )
    }

    /// Stops the tracer with SIGINT (it then writes its report) and reads the report.
    pub fn stop(mut self) -> Result<Report> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "locktrace record did not stop within {}s{}",
                    STOP_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            bail!("locktrace record failed ({status}){}", self.log_tail());
        }
        Report::read(&self.report)
            .with_context(|| format!("reading the kernel report {}", self.report.display()))
    }

    fn log_tail(&self) -> String {
        crate::log_tail(&self.log)
    }
}

/// Keeps only the locks that live under `root`: `--all-locks` is system-wide, and other stores on
/// the machine must not leak into this run's figures. Matches by path where the tracer resolved
/// one, else by device and inode of the lock files still under `root`.
pub fn only_under(mut report: Report, root: &Path) -> Report {
    use std::os::unix::fs::MetadataExt;
    let mut ids = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if entry.file_name().to_string_lossy().ends_with(".lock") {
                ids.insert((meta.dev(), meta.ino()));
            }
        }
    }
    report
        .locks
        .retain(|l| match (&l.key.path, l.key.dev, l.key.ino) {
            (Some(path), _, _) => Path::new(path).starts_with(root),
            (None, Some(dev), Some(ino)) => ids.contains(&(dev, ino)),
            _ => false,
        });
    report
}

impl Drop for Session {
    fn drop(&mut self) {
        // Never leave a system-wide tracer behind when a run aborts.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use locktrace_report::{
        Actor, LockKey, Metric, Mode, Recorder, ReportMeta, Source as ReportSource,
    };

    use super::*;

    #[test]
    fn only_under_keeps_this_runs_locks() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("store/overlay-layers/layers.lock");
        fs::create_dir_all(ours.parent().unwrap()).unwrap();
        fs::write(&ours, b"").unwrap();
        let meta = fs::metadata(&ours).unwrap();
        let other = tempfile::NamedTempFile::new().unwrap();
        let other_meta = other.as_file().metadata().unwrap();

        let key = |name: &str, path: Option<&Path>, dev, ino| LockKey {
            name: name.to_string(),
            path: path.map(|p| p.display().to_string()),
            dev: Some(dev),
            ino: Some(ino),
        };
        let mut rec = Recorder::new();
        let actor = Actor {
            pid: 1,
            comm: "x".into(),
        };
        for k in [
            key("layers.lock", None, meta.dev(), meta.ino()),
            key("layers.lock", None, other_meta.dev(), other_meta.ino()),
            key("images.lock", Some(&dir.path().join("store/i.lock")), 0, 0),
            key("images.lock", Some(Path::new("/elsewhere/i.lock")), 0, 0),
        ] {
            rec.record(&k, Mode::Write, Metric::Hold, 1000, &actor);
        }
        let report = rec.finish(ReportMeta::new("locktrace", ReportSource::Kernel));
        assert_eq!(report.locks.len(), 4);
        let kept = only_under(report, dir.path());
        let mut names: Vec<_> = kept
            .locks
            .iter()
            .map(|l| (l.key.name.clone(), l.key.ino))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ("images.lock".to_string(), Some(0)),
                ("layers.lock".to_string(), Some(meta.ino()))
            ]
        );
    }
}
