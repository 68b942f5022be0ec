//! The exporter checked by its real consumers: `promtool check metrics`, and two real Prometheus
//! servers scraping a live `locktrace record --listen` while lockload runs known holds: one
//! scraping the text format (classic buckets), one with native histograms enabled (protobuf). The
//! PromQL answers must agree with the JSON report the same run writes, and every query of the
//! Grafana dashboard in contrib/ must return data.
//!
//! Needs Debian's `prometheus` package (prometheus and promtool); where `cargo xtask test` sets
//! LOCKTRACE_REQUIRE_KERNEL_TESTS a missing one fails instead of skipping.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

mod common;

use locktrace::exporter::{BUCKETS_NS, Series, Snapshot, TracerStats, families, native, text};
use locktrace_report::{
    Actor, LockKey, LockReport, Metric, Mode, Recorder, Report, ReportMeta, Source, Summary,
};
use serde_json::Value;

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when `program` runs; otherwise a skip, or a failure where the tests are required.
fn have(program: &str) -> bool {
    if installed(program) {
        return true;
    }
    if std::env::var_os("LOCKTRACE_REQUIRE_KERNEL_TESTS").is_some() {
        panic!("{program} is required here (apt-get install prometheus) but is not installed");
    }
    eprintln!("skipped: {program} is not installed");
    false
}

/// `promtool check metrics` on `exposition`: its complaints, empty when it is clean.
fn promtool(exposition: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.success() {
        true => said.trim().to_string(),
        false => format!("promtool failed: {said}"),
    }
}

#[test]
fn promtool_accepts_the_exposition_of_a_built_report() {
    if !have("promtool") {
        return;
    }
    let actor = Actor {
        pid: 1,
        comm: "podman".into(),
    };
    let mut rec = Recorder::new();
    for (path, mode) in [
        (
            "/var/lib/containers/storage/overlay-layers/layers.lock",
            Mode::Write,
        ),
        (
            "/var/lib/containers/storage/overlay-images/images.lock",
            Mode::Read,
        ),
        ("/odd/pa\"th\\with\nescapes/x.lock", Mode::Write),
    ] {
        let key = LockKey {
            path: Some(path.into()),
            ..LockKey::named(path.rsplit('/').next().unwrap())
        };
        for ns in [800, 15_000, 2_000_000, 70_000_000_000] {
            rec.record(&key, mode, Metric::Wait, ns, &actor);
            rec.record(&key, mode, Metric::Hold, ns * 2, &actor);
        }
    }
    let report = rec.snapshot(ReportMeta::new("test", Source::Kernel));
    let now = Instant::now();
    let mut series = Series::new(Duration::from_secs(60), 100);
    series.update(&report, now);
    let snap = Snapshot {
        report,
        tracer: TracerStats::default(),
        at: now,
    };
    let exposition = text::render(&families(&snap, &series, &mut 0));
    assert_eq!(promtool(&exposition), "", "{exposition}");
    // A counter named without _total is what promtool catches: the check can fail.
    let bad = "# HELP x_events Events.\n# TYPE x_events counter\nx_events 1\n";
    assert!(promtool(bad).contains("_total"), "{}", promtool(bad));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET: (status, headers, body).
fn get(port: u16, target: &str, accept: Option<&str>) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head, raw[split + 4..].to_vec()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server of our own, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    /// Evaluation time of queries (seconds since the epoch); once locktrace stops its series go
    /// stale, so they are read as of the last scrape.
    at: Option<f64>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16, native: bool) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: locktrace\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap());
        if native {
            // 2.42 needs the feature flag; with it, it asks for protobuf and keeps native only.
            cmd.arg("--enable-feature=native-histograms");
        }
        Prometheus {
            child: cmd.spawn().unwrap(),
            port,
            at: None,
            _dir: dir,
        }
    }

    /// The result vector of an instant query (Err: Prometheus' error or no answer).
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let time = self.at.map_or(String::new(), |t| format!("&time={t:.3}"));
        let (status, _, body) = get(
            self.port,
            &format!("/api/v1/query?query={}{time}", urlencode(promql)),
            None,
        )
        .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{status}: {e}"))?;
        match v["status"].as_str() {
            Some("success") => Ok(v["data"]["result"].as_array().cloned().unwrap_or_default()),
            _ => Err(format!("{promql}: {v}")),
        }
    }

    /// The one value of a query that must return exactly one series.
    fn scalar(&self, promql: &str) -> f64 {
        let r = self.query(promql).unwrap();
        assert_eq!(
            r.len(),
            1,
            "{promql} at {:?}: {r:?}; counts there: {:?}",
            self.at,
            (
                self.query("count by (__name__) ({job=\"locktrace\"})"),
                self.query("timestamp(up)")
            )
        );
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    }

    /// Waits until the last scrape of locktrace is newer than `after` (seconds since the epoch).
    fn wait_scraped_after(&mut self, after: f64, locktrace: &mut Child) {
        self.at = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // timestamp() of a plain selector is the scrape's time (of an expression, the query's).
            let last = self
                .query("timestamp(up{job=\"locktrace\"})")
                .ok()
                .and_then(|r| r.first().cloned())
                .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()));
            if let Some(t) = last.filter(|t| *t > after) {
                self.at = Some(t + 0.001);
                assert_eq!(self.scalar("up{job=\"locktrace\"}"), 1.0, "scrape failed");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus on {} did not scrape locktrace in time (last scrape {last:?})",
                self.port
            );
            assert!(locktrace.try_wait().unwrap().is_none(), "locktrace exited");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn lockload(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_lockload"))
        .args(args)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "lockload {args:?}: {out:?}");
}

fn summary(report: &Report, name: &str, mode: Mode, metric: Metric) -> Summary {
    let lock: &LockReport = report.find(name).next().unwrap();
    lock.modes[&mode].metric(metric).summary
}

/// The classic bucket a value in seconds falls into (index of its `le`; past the last, +Inf).
fn classic_bucket(seconds: f64) -> usize {
    let ns = (seconds * 1e9).round() as u64;
    BUCKETS_NS
        .iter()
        .position(|&le| ns <= le)
        .unwrap_or(BUCKETS_NS.len())
}

/// The dashboard's queries with the Grafana variables they use filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contrib/grafana/locktrace.json");
    let dash: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace("$instance", ".+");
            assert!(!expr.contains('$'), "unsubstituted variable in {expr}");
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

/// Starts `locktrace record --listen` and returns once it traces.
fn start_locktrace(port: u16, locks: &[&Path], report: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_locktrace"));
    cmd.args(["record", "--listen", &format!("127.0.0.1:{port}")]);
    for l in locks {
        cmd.arg("--path").arg(l);
    }
    let mut child = cmd
        .arg("-o")
        .arg(report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("tracing with") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "locktrace ended before tracing: {:?}",
            child.wait()
        );
    }
    // Keep reading so the final lines never block on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    child
}

#[test]
fn prometheus_scrapes_what_the_report_says() {
    if !common::kernel_tests_can_run("prometheus test", &[])
        || !have("prometheus")
        || !have("promtool")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layers = dir.path().join("layers.lock");
    let images = dir.path().join("images.lock");
    std::fs::write(&layers, b"").unwrap();
    std::fs::write(&images, b"").unwrap();
    let report_path = dir.path().join("report.json");
    let port = free_port();
    let mut locktrace = start_locktrace(port, &[&layers, &images], &report_path);

    // One uncontended lock of each kind first, scraped before the workload: the series exist
    // before it, so rates over it are not zero.
    let (l, i) = (layers.to_str().unwrap(), images.to_str().unwrap());
    lockload(&["hold", "--path", l, "--hold", "1ms"]);
    lockload(&["hold", "--path", i, "--hold", "1ms", "--mode", "read"]);
    let mut classic = Prometheus::start(port, false);
    let mut native = Prometheus::start(port, true);
    let started = now_secs();
    classic.wait_scraped_after(started, &mut locktrace);
    native.wait_scraped_after(started, &mut locktrace);

    // Known holds: 7 contended write rounds on layers.lock, read waiters behind a writer on images.lock.
    let truth = dir.path().join("truth.json");
    let t = truth.to_str().unwrap();
    lockload(&[
        "scenario",
        "--path",
        l,
        "--truth",
        t,
        "--holds",
        "1ms,2ms,5ms,10ms,20ms,50ms,100ms",
    ]);
    lockload(&[
        "blockers",
        "--path",
        i,
        "--truth",
        t,
        "--waiters",
        "3",
        "--holds",
        "20ms,50ms",
    ]);
    let done = now_secs();
    classic.wait_scraped_after(done + 0.2, &mut locktrace);
    native.wait_scraped_after(done + 0.2, &mut locktrace);

    // The live exposition passes promtool; the protobuf one is what the native server got.
    let (status, head, body) = get(port, "/metrics", None).unwrap();
    assert_eq!(status, 200, "{head}");
    let exposition = String::from_utf8(body).unwrap();
    assert_eq!(promtool(&exposition), "", "{exposition}");
    for line in exposition.lines().filter(|l| l.contains("_count{")) {
        eprintln!("exposition: {line}");
    }
    let (_, head, _) = get(port, "/metrics", Some(native::CONTENT_TYPE)).unwrap();
    assert!(head.contains("application/vnd.google.protobuf"), "{head}");
    assert_eq!(get(port, "/", None).unwrap().0, 404);

    // SAFETY: kill only sends a signal to the locktrace process this test started.
    assert_eq!(
        unsafe { libc::kill(locktrace.id() as i32, libc::SIGINT) },
        0
    );
    assert!(locktrace.wait().unwrap().success());
    let report = Report::read(&report_path).unwrap();

    let hold = summary(&report, "layers.lock", Mode::Write, Metric::Hold);
    let wait = summary(&report, "images.lock", Mode::Read, Metric::Wait);
    assert_eq!(
        hold.count, 15,
        "the first, 7 holders and 7 waiters: {hold:?}"
    );
    assert_eq!(wait.count, 7, "the first, 3 waiters twice: {wait:?}");
    let sel_hold = r#"{name="layers.lock",mode="write"}"#;
    let sel_wait = r#"{name="images.lock",mode="read"}"#;

    // Classic: exact count, sum and max; p99 within one bucket.
    let q = |s: &str| classic.scalar(s);
    let count = q(&format!("locktrace_lock_hold_seconds_count{sel_hold}"));
    let sum = q(&format!("locktrace_lock_hold_seconds_sum{sel_hold}"));
    let max = q(&format!("locktrace_lock_hold_seconds_max{sel_hold}"));
    let p99 = q(&format!(
        "histogram_quantile(0.99, locktrace_lock_hold_seconds_bucket{sel_hold})"
    ));
    let wait_count = q(&format!("locktrace_lock_wait_seconds_count{sel_wait}"));
    let wait_p99 = q(&format!(
        "histogram_quantile(0.99, locktrace_lock_wait_seconds_bucket{sel_wait})"
    ));
    eprintln!(
        "classic: hold count {count} (report {}), sum {sum} s (report {} ns), max {max} s (report {} ns), \
         p99 {p99} s (report {} ns); read wait count {wait_count} (report {}), p99 {wait_p99} s (report {} ns)",
        hold.count, hold.total, hold.max, hold.p99, wait.count, wait.p99
    );
    assert_eq!(count as u64, hold.count);
    assert_eq!(wait_count as u64, wait.count);
    assert!((sum - hold.total as f64 / 1e9).abs() < 1e-9, "sum {sum}");
    assert_eq!(max, hold.max as f64 / 1e9);
    for (got, want) in [(p99, hold.p99), (wait_p99, wait.p99)] {
        let (g, w) = (classic_bucket(got), classic_bucket(want as f64 / 1e9));
        assert!(
            g.abs_diff(w) <= 1,
            "p99 {got} s in bucket {g}, report {want} ns in {w}"
        );
    }

    // Native (protobuf): the same count and sum, p99 within one native bucket.
    let n = |s: &str| native.scalar(s);
    let ncount = n(&format!(
        "histogram_count(locktrace_lock_hold_seconds{sel_hold})"
    ));
    let nsum = n(&format!(
        "histogram_sum(locktrace_lock_hold_seconds{sel_hold})"
    ));
    let np99 = n(&format!(
        "histogram_quantile(0.99, locktrace_lock_hold_seconds{sel_hold})"
    ));
    eprintln!(
        "native: hold count {ncount}, sum {nsum} s, p99 {np99} s (schema {})",
        native::SCHEMA
    );
    assert_eq!(ncount as u64, hold.count);
    assert!(
        (nsum - hold.total as f64 / 1e9).abs() < 1e-9,
        "native sum {nsum}"
    );
    let (g, w) = (native::index(np99), native::index(hold.p99 as f64 / 1e9));
    assert!(
        g.abs_diff(w) <= 1,
        "native p99 {np99} s in bucket {g}, report {} ns in {w}",
        hold.p99
    );
    // Prometheus 2.42 with the feature keeps the native histogram only (no _count, no _bucket).
    let classic_too = !native
        .query("locktrace_lock_hold_seconds_count")
        .unwrap()
        .is_empty();
    eprintln!("native server also stored classic series: {classic_too}");

    // Every dashboard query answers.
    for (title, expr) in dashboard_queries() {
        let result = classic.query(&expr).unwrap();
        let values: Vec<&str> = result
            .iter()
            .filter_map(|r| r["value"][1].as_str())
            .collect();
        eprintln!("dashboard {title:?}: {values:?} from {expr}");
        assert!(
            values
                .iter()
                .any(|v| v.parse::<f64>().is_ok_and(f64::is_finite)),
            "dashboard panel {title:?} has no data: {expr}: {result:?}"
        );
    }
}
