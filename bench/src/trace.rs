//! Kernel-side figures: runs `locktrace record` around a mode's workers and reads its report.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use locktrace_report::{LockKey, Report, ReportError, ReportMeta};

use crate::error::{Context, Error, Result};
use crate::model::{TraceMode, lock_name};
use crate::process;
use crate::text::log_tail;
use crate::tools;

/// How long the tracer gets to attach before the workers start anyway.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the tracer gets to write its report after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

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
        let problem = match tools::find("locktrace") {
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
            return Err(Error::Tracer(format!("--trace on: {problem}")));
        }
        eprintln!("note: {problem}; kernel figures skipped, store-clock figures only");
        Ok(None)
    }

    /// Starts tracing all lock files system-wide into `report` (and every wait and hold into the
    /// Perfetto trace `timeline`); returns once it is attached.
    /// Not `--quiet`: its "tracing with … hooks" line on stderr is the attach signal.
    pub fn start(&self, report: &Path, timeline: &Path, log: &Path) -> Result<Session> {
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&self.bin)
            .args(["record", "--all-locks", "-o"])
            .arg(report)
            .arg("--timeline")
            .arg(timeline)
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
            if let Some(status) = self.try_wait()? {
                return Err(Error::Tracer(format!(
                    "locktrace record exited early ({status}){}",
                    self.log_tail()
                )));
            }
            let log = fs::read_to_string(&self.log)
                .unwrap_or_default()
                .to_lowercase();
            if log.contains("tracing with") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Tracer(format!(
            "locktrace record did not attach within {}s{}",
            ATTACH_TIMEOUT.as_secs(),
            self.log_tail()
        )))
    }

    /// Stops the tracer with SIGINT (it then writes its report) and reads the report.
    pub fn stop(mut self) -> Result<Report> {
        process::interrupt(&self.child);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let waited = process::wait_until(&mut self.child, deadline, Duration::from_millis(20))
            .context("waiting for locktrace record")?;
        let Some(status) = waited else {
            return Err(Error::Tracer(format!(
                "locktrace record did not stop within {}s{}",
                STOP_TIMEOUT.as_secs(),
                self.log_tail()
            )));
        };
        if !status.success() {
            return Err(Error::Tracer(format!(
                "locktrace record failed ({status}){}",
                self.log_tail()
            )));
        }
        Report::read(&self.report)
            .with_context(|| format!("reading the kernel report {}", self.report.display()))
    }

    fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        self.child
            .try_wait()
            .context("waiting for locktrace record")
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

/// Keeps only the locks that live under `root`: `--all-locks` is system-wide, and other stores on
/// the machine must not leak into this run's figures. Matches by path where the tracer resolved
/// one, else by device and inode of the lock files still under `root`.
pub fn only_under(mut report: Report, root: &Path) -> Report {
    let files = lock_files(&[root]);
    report
        .locks
        .retain(|l| lock_path(&l.key, &files).is_some_and(|p| p.starts_with(root)));
    report
}

/// This run's locks, named as the store report names them (path relative to the worker's store,
/// `model::lock_name`), without path, device or inode, and one entry per name however many of the
/// `roots` (one per worker in isolated mode) hold that lock. So `combine` can add up repetitions
/// without the report's shape depending on --repeat or on where the stores were. Locks outside
/// `roots` are dropped, as in `only_under`.
pub fn by_store_name(mut report: Report, roots: &[PathBuf]) -> Result<Report> {
    let files = lock_files(roots);
    report.locks = std::mem::take(&mut report.locks)
        .into_iter()
        .filter_map(|mut lock| {
            let path = lock_path(&lock.key, &files)?;
            let root = roots.iter().find(|r| path.starts_with(r))?;
            lock.key = LockKey::named(lock_name(&path, root));
            Some(lock)
        })
        .collect();
    // Merging matches locks by name, so it also folds the renamed duplicates together.
    locktrace_report::merge(&[report]).context("merging the kernel report's locks by name")
}

/// One mode's kernel report over all its traced repetitions (each from `by_store_name`), added up
/// like the store report `like`, whose command and labels it takes: they describe the lockbench
/// run, where a single repetition's would name its own `locktrace record` command.
pub fn combine(reports: &[Report], like: &ReportMeta) -> Result<Option<Report>, ReportError> {
    if reports.is_empty() {
        return Ok(None);
    }
    let mut report = locktrace_report::merge(reports)?;
    report.meta.command = like.command.clone();
    report.meta.labels = like.labels.clone();
    Ok(Some(report))
}

/// The `*.lock` files under `roots`, by device and inode: where the tracer did not resolve a
/// lock's path, this finds it.
fn lock_files(roots: &[impl AsRef<Path>]) -> HashMap<(u64, u64), PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut files = HashMap::new();
    let mut stack: Vec<PathBuf> = roots.iter().map(|r| r.as_ref().to_path_buf()).collect();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if entry.file_name().to_string_lossy().ends_with(".lock") {
                files.insert((meta.dev(), meta.ino()), entry.path());
            }
        }
    }
    files
}

/// Where the lock file is: the path the tracer resolved, else the lock file with its inode.
fn lock_path(key: &LockKey, files: &HashMap<(u64, u64), PathBuf>) -> Option<PathBuf> {
    match (&key.path, key.dev, key.ino) {
        (Some(path), _, _) => Some(PathBuf::from(path)),
        (None, Some(dev), Some(ino)) => files.get(&(dev, ino)).cloned(),
        _ => None,
    }
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
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    use locktrace_report::{Actor, Metric, Mode, Recorder, Source as ReportSource};

    use super::*;

    /// What `locktrace record --all-locks` reports for one repetition of an isolated mode with two
    /// pull stores under `stores`: lock files named by their file name, with the path where it
    /// could resolve one and always device and inode; one layers.lock per store, a staging lock,
    /// and a lock of some other program.
    fn traced_repetition(stores: &Path, rep: usize) -> Report {
        let mut rec = Recorder::new();
        let actor = Actor {
            pid: 100 + rep as u32,
            comm: "lockbench".into(),
        };
        let mut lock = |rel: &str, with_path: bool, holds: u64| {
            let path = stores.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            // A repetition's stores are new: new files, new inodes.
            let _ = fs::remove_file(&path);
            fs::write(&path, b"").unwrap();
            let meta = fs::metadata(&path).unwrap();
            let key = LockKey {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                path: with_path.then(|| path.display().to_string()),
                dev: Some(meta.dev()),
                ino: Some(meta.ino()),
            };
            for _ in 0..holds {
                rec.record(&key, Mode::Write, Metric::Hold, 1000, &actor);
            }
        };
        lock("pull-0/overlay-layers/layers.lock", true, 3);
        lock("pull-1/overlay-layers/layers.lock", false, 2);
        lock("pull-0/storage.lock", true, 1);
        lock(&format!("pull-1/overlay/staging/{rep:032x}.lock"), true, 1);
        lock("../elsewhere/layers.lock", true, 5);
        let mut meta = ReportMeta::new("locktrace", ReportSource::Kernel);
        meta.command = vec![
            "locktrace".into(),
            "record".into(),
            "-o".into(),
            format!("runs/isolated-{rep}/kernel-report.json"),
        ];
        meta.duration_ns = 1_000_000;
        rec.finish(meta)
    }

    /// Lock names with their write hold counts.
    fn holds(report: &Report) -> BTreeMap<String, u64> {
        report
            .locks
            .iter()
            .map(|l| {
                assert_eq!(
                    (&l.key.path, l.key.dev, l.key.ino),
                    (&None, None, None),
                    "{}: run-specific location kept",
                    l.key.name
                );
                let count = l.modes[&Mode::Write].hold.summary.count;
                (l.key.name.clone(), count)
            })
            .collect()
    }

    #[test]
    fn kernel_reports_have_the_store_reports_keys_whatever_the_repeat_count() {
        let dir = tempfile::tempdir().unwrap();
        let stores = dir.path().join("stores");
        let roots = [stores.join("pull-0"), stores.join("pull-1")];
        let mut store_meta = ReportMeta::new("lockbench", ReportSource::Store);
        store_meta.command = vec!["lockbench".into(), "run".into()];
        store_meta.labels.insert("mode".into(), "isolated".into());

        let kernel_report = |repeat: usize| {
            let reps: Vec<Report> = (0..repeat)
                .map(|rep| by_store_name(traced_repetition(&stores, rep), &roots).unwrap())
                .collect();
            combine(&reps, &store_meta).unwrap().unwrap()
        };
        let once = kernel_report(1);
        let twice = kernel_report(2);
        let expect = |n: u64| {
            BTreeMap::from([
                ("overlay-layers/layers.lock".to_string(), 5 * n),
                ("overlay/staging/*.lock".to_string(), n),
                ("storage.lock".to_string(), n),
            ])
        };
        assert_eq!(holds(&once), expect(1));
        assert_eq!(holds(&twice), expect(2));
        // The names are the store report's: the same function names the store's locks.
        let layers = roots[1].join("overlay-layers/layers.lock");
        assert_eq!(lock_name(&layers, &roots[1]), "overlay-layers/layers.lock");
        for report in [&once, &twice] {
            assert_eq!(report.meta.source, ReportSource::Kernel);
            assert_eq!(report.meta.command, store_meta.command);
            assert_eq!(report.meta.labels, store_meta.labels);
        }
        assert_eq!(twice.meta.duration_ns, 2 * once.meta.duration_ns);
        assert!(combine(&[], &store_meta).unwrap().is_none());
    }

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
