//! `lockbench compare-podman`: the same parallel pulls done by real podman (containers/storage),
//! into one shared store and into a store each, as a reality check for the store-core demo.
//! podman reports no lock timings of its own, so lock figures come only from locktrace (kernel).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lockbench::imagegen::{self, GenSet, GenSpec, ImageInfo};
use locktrace_report::write_atomic;
use locktrace_report::{Metric, Mode, Report, human_duration};
use serde::Serialize;

use crate::results::{LAYERS_LOCK, Latency, PullResult, lock_stats};
use crate::table::{Row, Table};
use crate::trace::{TraceMode, Tracer, only_under};

/// Longest one mode may run before the remaining podman processes are killed.
const MODE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub struct PodmanConfig {
    pub pulls: usize,
    pub images: GenSpec,
    pub driver: String,
    pub podman: String,
    pub trace: TraceMode,
    pub out: PathBuf,
    pub quiet: bool,
    pub command: Vec<String>,
}

/// `podman-report.json`.
#[derive(Serialize)]
struct PodmanReport {
    schema: &'static str,
    podman_version: String,
    driver: String,
    command: Vec<String>,
    modes: Vec<PodmanMode>,
    failed: bool,
    failures: Vec<String>,
}

#[derive(Serialize)]
struct PodmanMode {
    /// `shared`: all pulls into one store; `isolated`: a store each.
    mode: &'static str,
    /// Parent clock, from starting the first podman to the last one exiting.
    makespan_ns: u64,
    /// Parent clock per podman process (podman reports no timings itself).
    pulls: Vec<PullResult>,
    pull_time: Latency,
    throughput_mb_s: f64,
    kernel_report: Option<Report>,
    kernel_note: Option<String>,
}

pub fn run(cfg: &PodmanConfig) -> Result<bool> {
    let podman = which::which(&cfg.podman).with_context(|| {
        format!(
            "{} not found; compare-podman needs podman (e.g. apt-get install podman)",
            cfg.podman
        )
    })?;
    let version = Command::new(&podman)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", podman.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let tracer = Tracer::detect(cfg.trace)?;
    fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let out = cfg.out.canonicalize()?;
    let images_dir = out.join("images");
    let bar = crate::byte_bar(cfg.images.total_bytes(), "generating", cfg.quiet);
    let (set, _) = imagegen::ensure(&images_dir, &cfg.images, &|n| bar.inc(n))
        .with_context(|| format!("generating images in {}", images_dir.display()))?;
    bar.finish_and_clear();
    crate::scenario::warm_page_cache(&set)?;

    let mut modes = Vec::new();
    let mut failures = Vec::new();
    for shared in [true, false] {
        let (mode, mut errs) = run_mode(cfg, &podman, &out, shared, &set, tracer.as_ref())?;
        if !cfg.quiet {
            eprintln!(
                "podman {}: makespan {}",
                mode.mode,
                human_duration(mode.makespan_ns)
            );
        }
        failures.extend(errs.drain(..).map(|e| format!("{}: {e}", mode.mode)));
        modes.push(mode);
    }
    let report = PodmanReport {
        schema: "lockbench-podman/1",
        podman_version: version,
        driver: cfg.driver.clone(),
        command: cfg.command.clone(),
        failed: !failures.is_empty(),
        failures,
        modes,
    };
    let path = out.join("podman-report.json");
    write_atomic(
        &path,
        &serde_json::to_vec_pretty(&report).context("serializing the podman report")?,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    println!("{}", table(&report).to_text());
    for note in report.modes.iter().filter_map(|m| m.kernel_note.as_deref()) {
        println!("note: {note}");
    }
    for f in &report.failures {
        eprintln!("lockbench: failed: {f}");
    }
    println!("report: {}", path.display());
    Ok(!report.failed)
}

fn table(report: &PodmanReport) -> Table {
    let modes = &report.modes;
    let mut rows = Vec::new();
    let mut row = |label: &str, source: &'static str, f: &dyn Fn(&PodmanMode) -> String| {
        rows.push(Row {
            label: label.to_string(),
            source,
            cells: modes.iter().map(f).collect(),
        });
    };
    row("makespan", "parent", &|m| human_duration(m.makespan_ns));
    row("pull time p50", "parent", &|m| {
        human_duration(m.pull_time.p50_ns)
    });
    row("pull time max", "parent", &|m| {
        human_duration(m.pull_time.max_ns)
    });
    row("throughput MB/s", "parent", &|m| {
        format!("{:.1}", m.throughput_mb_s)
    });
    let kernel = |mode: Mode, metric: Metric, pick: fn(&crate::results::LockStats) -> u64| {
        move |m: &PodmanMode| {
            m.kernel_report
                .as_ref()
                .and_then(|r| lock_stats(r, LAYERS_LOCK, mode, metric))
                .map_or_else(|| "-".to_string(), |s| human_duration(pick(&s)))
        }
    };
    row(
        "layers.lock W hold p50",
        "kernel",
        &kernel(Mode::Write, Metric::Hold, |s| s.p50),
    );
    row(
        "layers.lock W hold p99",
        "kernel",
        &kernel(Mode::Write, Metric::Hold, |s| s.p99),
    );
    row(
        "layers.lock W wait p99",
        "kernel",
        &kernel(Mode::Write, Metric::Wait, |s| s.p99),
    );
    row("failures", "", &|m| {
        m.pulls
            .iter()
            .filter(|p| p.error.is_some())
            .count()
            .to_string()
    });
    Table {
        modes: modes.iter().map(|m| format!("podman {}", m.mode)).collect(),
        rows,
    }
}

fn runroot(store: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lockbench-{}-{store}", std::process::id()))
}

struct Pull<'a> {
    label: String,
    image: &'a ImageInfo,
    child: Child,
    stderr: PathBuf,
    took: Option<(Duration, ExitStatus)>,
    /// Killed at the mode timeout: that, not its exit status, is its failure.
    timed_out: bool,
}

fn run_mode(
    cfg: &PodmanConfig,
    podman: &Path,
    out: &Path,
    shared: bool,
    set: &GenSet,
    tracer: Option<&Tracer>,
) -> Result<(PodmanMode, Vec<String>)> {
    let name = if shared { "shared" } else { "isolated" };
    let base = out.join("podman").join(name);
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let mut kernel_note = tracer.is_none().then(|| cfg.trace.skip_note());
    let session = match tracer.map(|t| {
        t.start(
            &base.join("kernel-report.json"),
            &base.join("locktrace.log"),
        )
    }) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) if cfg.trace == TraceMode::On => return Err(e),
        Some(Err(e)) => {
            kernel_note = Some(format!(
                "kernel tracing failed to start: {}",
                crate::one_line(&e)
            ));
            None
        }
    };
    let started = Instant::now();
    let mut pulls = Vec::new();
    for (i, image) in set.images.iter().take(cfg.pulls).enumerate() {
        let label = format!("pull-{i}");
        let store = if shared {
            "store".to_string()
        } else {
            format!("store-{i}")
        };
        let stderr = base.join(format!("{label}.stderr"));
        // podman caps the runroot path at 50 characters, so it lives in a short temp dir.
        let runroot = runroot(&store);
        let child = Command::new(podman)
            .arg("--root")
            .arg(base.join(&store))
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", &cfg.driver, "--events-backend", "none"])
            .args(["pull", "--quiet"])
            // podman names the image after the layout path, which must be lowercase: a relative
            // path from the images directory gives `localhost/img-00`.
            .arg(format!("oci:{}:{}", image.name, image.tag))
            .current_dir(image.dir.parent().unwrap_or(&image.dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?,
            )
            .spawn()
            .with_context(|| format!("starting {}", podman.display()))?;
        pulls.push(Pull {
            label,
            image,
            child,
            stderr,
            took: None,
            timed_out: false,
        });
    }
    wait_all(&mut pulls, started, MODE_TIMEOUT)?;
    let makespan = started.elapsed();
    let kernel_report = match session.map(|s| s.stop()) {
        None => None,
        Some(Ok(r)) => Some(only_under(r, &base)),
        Some(Err(e)) => {
            kernel_note = Some(format!("kernel trace unavailable: {}", crate::one_line(&e)));
            None
        }
    };
    let (results, errors) = collect(pulls);
    let bytes: u64 = results.iter().map(|r| r.bytes).sum();
    // The stores are large and not looked at again.
    let stores =
        std::iter::once("store".to_string()).chain((0..cfg.pulls).map(|i| format!("store-{i}")));
    for store in stores {
        let _ = fs::remove_dir_all(base.join(&store));
        let _ = fs::remove_dir_all(runroot(&store));
    }
    let times: Vec<u64> = results.iter().filter_map(|r| r.duration_ns).collect();
    Ok((
        PodmanMode {
            mode: name,
            makespan_ns: makespan.as_nanos() as u64,
            pull_time: Latency::of(&times),
            throughput_mb_s: bytes as f64 / 1e6 / makespan.as_secs_f64().max(1e-9),
            pulls: results,
            kernel_report,
            kernel_note,
        },
        errors,
    ))
}

/// Waits for every pull; those still running `timeout` after `started` are killed.
fn wait_all(pulls: &mut [Pull], started: Instant, timeout: Duration) -> Result<()> {
    while pulls.iter().any(|p| p.took.is_none()) {
        for p in pulls.iter_mut().filter(|p| p.took.is_none()) {
            if let Some(status) = p.child.try_wait()? {
                p.took = Some((started.elapsed(), status));
            } else if started.elapsed() > timeout {
                let _ = p.child.kill();
                let status = p.child.wait()?;
                p.took = Some((started.elapsed(), status));
                p.timed_out = true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// One result per pull, and each failed pull's error once for the failures list.
fn collect(pulls: Vec<Pull>) -> (Vec<PullResult>, Vec<String>) {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for p in pulls {
        let (took, status) = p.took.expect("every pull was waited for");
        let error = if p.timed_out {
            Some(format!(
                "podman {} ({}) timed out after {}s and was killed",
                p.label,
                p.image.name,
                took.as_secs()
            ))
        } else {
            (!status.success()).then(|| {
                format!(
                    "podman {} ({}): exited with {status}{}",
                    p.label,
                    p.image.name,
                    crate::log_tail(&p.stderr)
                )
            })
        };
        errors.extend(error.clone());
        let ok = error.is_none();
        results.push(PullResult {
            worker: p.label,
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
            errors[0].starts_with("podman pull-1 (img-01) timed out after"),
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
