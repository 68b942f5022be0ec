//! Worker processes of a run: started as hidden `lockbench worker` children, held until all are
//! ready, started together with `go`, waited for with timeouts, and readers stopped with `stop`.
//! A worker that hangs or dies becomes one failure naming it and its image; the others go on.

pub mod chroot;
pub mod overhead;
pub mod podman;
pub mod reader;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use store_core::monotonic_ns;

use crate::error::{Context, Result};
use crate::model::{BenchMode, RunConfig};
use crate::protocol::{GO, READY, Role, STOP};
use crate::text::log_tail;

/// Longest a mode may run before its remaining workers (or podman pulls) are killed and the run
/// marked failed.
pub const MODE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long readers get to finish their round after `stop`.
const READER_GRACE: Duration = Duration::from_secs(30);

/// One worker to start.
pub struct WorkerSpec {
    pub label: String,
    pub role: Role,
    pub store: PathBuf,
    /// Pull: `DIR:TAG`. Read: store image id.
    pub image: String,
    /// What failure messages call the image.
    pub image_name: String,
}

/// A started worker.
pub struct Running {
    pub spec: WorkerSpec,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub events: PathBuf,
    pub stderr: PathBuf,
    pub status: Option<ExitStatus>,
    /// Why the parent killed it (a timeout); already in the failures, and its exit status adds
    /// nothing to it.
    pub killed: Option<String>,
}

/// Starts `lockbench worker` for `spec`; its events and stderr go to `run_dir/<label>.*`.
pub fn spawn(
    spec: WorkerSpec,
    mode: BenchMode,
    cfg: &RunConfig,
    run_dir: &Path,
) -> Result<Running> {
    let exe = std::env::current_exe().context("locating the lockbench binary")?;
    let events = run_dir.join(format!("{}.ndjson", spec.label));
    let stderr = run_dir.join(format!("{}.stderr", spec.label));
    let stderr_file =
        File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
    let child = Command::new(exe)
        .arg("worker")
        .args(["--role", spec.role.name()])
        .arg("--store")
        .arg(&spec.store)
        .args(["--mode", &mode.extract_mode().to_string()])
        .args(["--label", &spec.label])
        .arg("--events")
        .arg(&events)
        .args(["--image", &spec.image])
        .args(["--extract-nice", &cfg.extract_nice.to_string()])
        .args(["--sync", &cfg.sync.to_string()])
        .args(["--max-layer-size", &cfg.max_layer_size.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr_file)
        .spawn()
        .with_context(|| format!("starting worker {}", spec.label))?;
    let mut running = Running {
        spec,
        child,
        stdin: None,
        events,
        stderr,
        status: None,
        killed: None,
    };
    running.stdin = running.child.stdin.take();
    Ok(running)
}

/// Starts the workers together, waits for the pulls, stops the readers; returns the go time.
pub fn drive(
    workers: &mut [Running],
    ready_timeout: Duration,
    bar: &ProgressBar,
    failures: &mut Vec<String>,
) -> Result<u64> {
    // Wait until every worker has its store open, so the go signal starts them together.
    let ready = wait_ready(workers, ready_timeout, failures)?;
    let t0 = monotonic_ns();
    for (w, ok) in workers.iter_mut().zip(&ready) {
        if *ok {
            send(w, GO);
        }
    }
    wait_for_pulls(workers, bar, failures)?;
    bar.finish_and_clear();
    stop_readers(workers, failures)?;
    Ok(t0)
}

/// Waits until every pull worker has exited; those still running after MODE_TIMEOUT are killed.
fn wait_for_pulls(
    workers: &mut [Running],
    bar: &ProgressBar,
    failures: &mut Vec<String>,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut pending = 0;
        for w in workers.iter_mut().filter(|w| w.spec.role == Role::Pull) {
            if w.status.is_none() {
                match w.try_wait()? {
                    Some(status) => {
                        w.status = Some(status);
                        bar.inc(1);
                    }
                    None => pending += 1,
                }
            }
        }
        if pending == 0 {
            return Ok(());
        }
        if started.elapsed() > MODE_TIMEOUT {
            for w in workers.iter_mut().filter(|w| w.status.is_none()) {
                let why = format!(
                    "worker {} ({}) timed out after {}s and was killed",
                    w.spec.label,
                    w.spec.image_name,
                    MODE_TIMEOUT.as_secs()
                );
                give_up(w, why, failures)?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Tells the readers to stop and closes every worker's stdin; waits READER_GRACE for the workers
/// still running, then kills them.
fn stop_readers(workers: &mut [Running], failures: &mut Vec<String>) -> Result<()> {
    for w in workers.iter_mut() {
        if w.spec.role == Role::Read {
            send(w, STOP);
        }
        w.stdin = None;
    }
    let grace = Instant::now();
    for w in workers.iter_mut().filter(|w| w.status.is_none()) {
        loop {
            match w.try_wait()? {
                Some(status) => {
                    w.status = Some(status);
                    break;
                }
                None if grace.elapsed() > READER_GRACE => {
                    let why = format!(
                        "worker {} ({}) did not stop within {}s and was killed",
                        w.spec.label,
                        w.spec.image_name,
                        READER_GRACE.as_secs()
                    );
                    give_up(w, why, failures)?;
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    Ok(())
}

impl Running {
    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let label = &self.spec.label;
        self.child
            .try_wait()
            .with_context(|| format!("waiting for worker {label}"))
    }
}

/// Per worker: whether it printed `ready` (false: it exited first). Workers still silent after
/// `timeout` are killed and become failures naming them, so a worker stuck opening its store
/// (locked by another process, say) cannot hang the run; the others still start.
pub fn wait_ready(
    workers: &mut [Running],
    timeout: Duration,
    failures: &mut Vec<String>,
) -> Result<Vec<bool>> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    let mut ready: Vec<Option<bool>> = vec![None; workers.len()];
    for (i, w) in workers.iter_mut().enumerate() {
        let Some(stdout) = w.child.stdout.take() else {
            ready[i] = Some(false);
            continue;
        };
        let tx = tx.clone();
        // A blocking read per worker: it ends with the worker's stdout, whether the worker
        // exits or is killed below, so the thread is not waited for.
        std::thread::Builder::new()
            .name(format!("ready-{}", w.spec.label))
            .spawn(move || {
                let mut line = String::new();
                let ok = matches!(BufReader::new(stdout).read_line(&mut line), Ok(n) if n > 0)
                    && line.trim() == READY;
                let _ = tx.send((i, ok));
            })
            .context("starting a thread to wait for a worker")?;
    }
    drop(tx);
    while ready.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, ok)) => ready[i] = Some(ok),
            Err(_) => break,
        }
    }
    for (w, r) in workers.iter_mut().zip(&ready) {
        if r.is_none() {
            let why = format!(
                "worker {} ({}) did not report ready within {}s (opening store {}) and was killed",
                w.spec.label,
                w.spec.image_name,
                timeout.as_secs_f64(),
                w.spec.store.display()
            );
            give_up(w, why, failures)?;
        }
    }
    Ok(ready.into_iter().map(|r| r == Some(true)).collect())
}

/// Kills a worker the parent stopped waiting for; `why` becomes its one failure.
fn give_up(w: &mut Running, why: String, failures: &mut Vec<String>) -> Result<()> {
    let _ = w.child.kill();
    w.status = Some(
        w.child
            .wait()
            .with_context(|| format!("waiting for worker {}", w.spec.label))?,
    );
    failures.push(why.clone());
    w.killed = Some(why);
    Ok(())
}

fn send(w: &mut Running, msg: &str) {
    if let Some(stdin) = w.stdin.as_mut() {
        // A worker that already died cannot read it; its exit status tells the story.
        let _ = writeln!(stdin, "{msg}").and_then(|_| stdin.flush());
    }
}

/// A one-line description of what went wrong with a worker, naming it and its image.
pub fn worker_problem(
    w: &Running,
    status: ExitStatus,
    error: Option<String>,
    finished: bool,
) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() && finished {
        return None;
    }
    let what = if let Some(e) = error {
        e
    } else if let Some(sig) = status.signal() {
        format!("killed by signal {sig}{}", log_tail(&w.stderr))
    } else if status.success() {
        "exited without reporting a result".to_string()
    } else {
        format!("exited with {status}{}", log_tail(&w.stderr))
    };
    Some(format!(
        "worker {} ({}): {what}",
        w.spec.label, w.spec.image_name
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// A worker stand-in: a real process that does what `script` says instead of lockbench's
    /// worker (printing `ready`, never getting to it, exiting early).
    fn worker(dir: &Path, label: &str, image: &str, script: &str) -> Running {
        let stderr = dir.join(format!("{label}.stderr"));
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Running {
            spec: WorkerSpec {
                label: label.to_string(),
                role: Role::Pull,
                store: dir.join("store"),
                image: String::new(),
                image_name: image.to_string(),
            },
            child,
            stdin: None,
            events: dir.join(format!("{label}.ndjson")),
            stderr,
            status: None,
            killed: None,
        }
    }

    #[test]
    fn a_worker_that_never_gets_ready_is_killed_and_named_and_the_others_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut workers = vec![
            worker(dir.path(), "pull-0", "img-00", "echo ready; exec sleep 60"),
            worker(dir.path(), "pull-1", "img-01", "exec sleep 60"),
            worker(dir.path(), "pull-2", "img-02", "exit 3"),
        ];
        // On a thread, so that a wait without a timeout fails the test instead of hanging it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let ready = wait_ready(&mut workers, Duration::from_millis(500), &mut failures);
            let _ = tx.send((ready.unwrap(), failures, workers));
        });
        let (ready, failures, mut workers) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("wait_ready did not return: no timeout");
        assert_eq!(ready, vec![true, false, false]);
        assert_eq!(failures.len(), 1, "{failures:#?}");
        assert!(
            failures[0].starts_with("worker pull-1 (img-01) did not report ready within 0.5s"),
            "{failures:#?}"
        );
        assert_eq!(workers[1].killed.as_ref(), Some(&failures[0]));
        let status = workers[1].status.expect("the stuck worker was reaped");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(workers[0].status.is_none() && workers[2].status.is_none());
        for w in &mut workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}
