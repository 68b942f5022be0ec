//! Crash storm: concurrent `lockbench pull`s into one store, SIGKILLed at random moments and at
//! deterministic crash points (the N-th rename/fsync/write/unlink/mkdir, injected with strace), then
//! the store is opened (crash recovery), every image is pulled again without kills, and the store must
//! be exactly what uninterrupted pulls of the same images build: the same layer and image records, the
//! same paths, and under each layer's diff the same file types, modes, owners, sizes, mtimes and
//! content hashes. Recovery must leave no staging directory, temp file or incomplete layer behind.
//!
//! Bounded by LOCKTRACE_STORM_SECS (default 60: that many seconds of storm, plus setup and the final
//! check); LOCKTRACE_STORM_SEED replays a run (the seed is printed). Crash points need `strace`:
//! without it they are skipped, except under `cargo xtask test` (LOCKTRACE_REQUIRE_KERNEL_TESTS),
//! where that is a failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use store_core::{Store, StoreOptions};

const LOCKBENCH: &str = env!("CARGO_BIN_EXE_lockbench");
/// Two new ones per wave.
const IMAGES: usize = 2 * WAVES_PER_STORE;
/// Processes started together into one store.
const WAVE: usize = 4;
/// Waves into one store before it is checked; the second one crashes into the first one's debris.
const WAVES_PER_STORE: usize = 2;
/// A pull that takes longer than this is hung (a lock nobody will release).
const HANG: Duration = Duration::from_secs(120);

/// Syscall families a crash point stops at, and the most calls of any one of them a thread makes in a
/// pull of one generated image (counted with `strace -f -c`, staged and locked, durable or not).
/// strace counts per syscall and per thread, so crash point N kills at the N-th call of any syscall
/// of the family in any thread; N runs from 1 to that most.
const CRASH_POINTS: &[(&str, &str, u32)] = &[
    ("rename", "rename,renameat,renameat2", 10),
    ("fsync", "fsync,fdatasync,syncfs", 17),
    ("write", "write,pwrite64,writev", 26),
    ("unlink", "unlink,unlinkat,rmdir", 3),
    ("mkdir", "mkdir,mkdirat", 15),
];

#[derive(Debug, Clone, Copy)]
enum Fate {
    Survive,
    KillAfter(Duration),
    CrashPoint(CrashPoint),
}

#[derive(Debug, Clone, Copy)]
struct CrashPoint {
    family: &'static str,
    syscalls: &'static str,
    n: u32,
}

/// Every crash point, families interleaved so that any stretch of the list covers all of them.
fn crash_points() -> Vec<CrashPoint> {
    let max = CRASH_POINTS.iter().map(|c| c.2).max().unwrap_or(0);
    (1..=max)
        .flat_map(|n| {
            CRASH_POINTS
                .iter()
                .filter(move |c| n <= c.2)
                .map(move |&(family, syscalls, _)| CrashPoint {
                    family,
                    syscalls,
                    n,
                })
        })
        .collect()
}

#[derive(Debug)]
struct Worker {
    image: usize,
    mode: &'static str,
    durable: bool,
    fate: Fate,
}

struct Running {
    worker: Worker,
    child: Child,
    started: Instant,
    stderr: PathBuf,
    status: Option<ExitStatus>,
    took: Duration,
}

/// What the storm did, for the summary and for a failure message.
#[derive(Default)]
struct Tally {
    processes: usize,
    killed: usize,
    /// Crash points that killed their pull (family, N), and how many did not (the pull made fewer
    /// such calls, e.g. because another pull had created the layers first).
    crash_points: Vec<(&'static str, u32)>,
    crash_points_missed: usize,
    finished: usize,
    /// How long the latest pulls that ran to their end took: random kills aim within that.
    recent: Vec<Duration>,
    failed: usize,
    stores: usize,
    log: String,
}

/// The median of the latest pull times (at least 10 ms), keeping only the latest few: pulls of
/// images already in the store take milliseconds, pulls that extract take much longer.
fn typical(recent: &mut Vec<Duration>) -> Duration {
    const KEEP: usize = 24;
    if recent.len() > KEEP {
        recent.drain(..recent.len() - KEEP);
    }
    let mut sorted = recent.clone();
    sorted.sort();
    sorted
        .get(sorted.len() / 2)
        .copied()
        .unwrap_or_default()
        .max(Duration::from_millis(10))
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
    )
}

fn image_dir(images: &Path, i: usize) -> PathBuf {
    images.join(format!("img-{i:02}"))
}

fn pull_cmd(store: &Path, image: &Path, mode: &str, durable: bool) -> Command {
    let mut cmd = Command::new(LOCKBENCH);
    cmd.arg("pull")
        .arg("--store")
        .arg(store)
        .arg("--mode")
        .arg(mode)
        .arg(image);
    if durable {
        cmd.arg("--durable");
    }
    cmd
}

/// `lockbench gen --out out ARGS…`, which must succeed.
fn generate(out: &Path, args: &[&str]) {
    let run = Command::new(LOCKBENCH)
        .arg("gen")
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .expect("starting lockbench gen");
    assert!(
        run.status.success(),
        "lockbench gen failed: {}",
        String::from_utf8_lossy(&run.stderr).trim()
    );
}

/// A pull that nobody interrupts; it must succeed.
fn pull(store: &Path, image: &Path, mode: &str) {
    let out = pull_cmd(store, image, mode, false)
        .output()
        .expect("starting lockbench pull");
    assert!(
        out.status.success(),
        "lockbench pull {} into {} ({mode}) failed: {}",
        image.display(),
        store.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn spawn(store: &Path, images: &Path, logs: &Path, id: usize, w: Worker) -> Running {
    let pull = pull_cmd(store, &image_dir(images, w.image), w.mode, w.durable);
    let mut cmd = match w.fate {
        Fate::CrashPoint(p) => {
            let mut strace = Command::new("strace");
            strace
                // Not --seccomp-bpf: with it strace 6.1 injects nothing.
                .args(["-f", "-qq", "-o", "/dev/null"])
                .arg(format!("-etrace={}", p.syscalls))
                .arg(format!("-einject={}:signal=KILL:when={}", p.syscalls, p.n))
                .arg(pull.get_program())
                .args(pull.get_args());
            strace
        }
        _ => pull,
    };
    let stderr = logs.join(format!("{id}.err"));
    let child = cmd
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).expect("creating a worker log"))
        .spawn()
        .expect("starting a pull");
    Running {
        worker: w,
        child,
        started: Instant::now(),
        stderr,
        status: None,
        took: Duration::ZERO,
    }
}

/// Runs one wave to the end: kills the workers whose time has come, waits for all.
fn run_wave(mut wave: Vec<Running>, tally: &mut Tally, problems: &mut Vec<String>) {
    while wave.iter().any(|r| r.status.is_none()) {
        for r in wave.iter_mut().filter(|r| r.status.is_none()) {
            if let Some(status) = r.child.try_wait().expect("waiting for a pull") {
                r.status = Some(status);
                r.took = r.started.elapsed();
                continue;
            }
            let due = match r.worker.fate {
                Fate::KillAfter(d) => r.started.elapsed() >= d,
                _ => false,
            };
            if due || r.started.elapsed() > HANG {
                if !due {
                    problems.push(format!("hung for {HANG:?}: {:?}", r.worker));
                }
                // Exited meanwhile: then the signal goes nowhere and the status says so.
                let _ = r.child.kill();
                r.status = Some(r.child.wait().expect("waiting for a killed pull"));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for r in wave {
        let status = r.status.expect("every worker was waited for");
        let stderr = fs::read_to_string(&r.stderr).unwrap_or_default();
        let err_line = stderr.lines().last().unwrap_or("").trim();
        tally.processes += 1;
        let outcome = match status.signal() {
            Some(libc::SIGKILL) => {
                match r.worker.fate {
                    Fate::CrashPoint(p) => {
                        tally.crash_points.push((p.family, p.n));
                    }
                    _ => tally.killed += 1,
                }
                "killed".to_string()
            }
            Some(sig) => {
                problems.push(format!("{:?} died of signal {sig}: {err_line}", r.worker));
                format!("signal {sig}")
            }
            None if status.success() => {
                tally.finished += 1;
                if !matches!(r.worker.fate, Fate::CrashPoint(_)) {
                    tally.recent.push(r.took);
                }
                if matches!(r.worker.fate, Fate::CrashPoint(_)) {
                    tally.crash_points_missed += 1;
                }
                "finished".to_string()
            }
            // A panic is a bug whatever else happened.
            None if status.code() == Some(101) => {
                problems.push(format!("{:?} panicked: {stderr}", r.worker));
                "panicked".to_string()
            }
            // A pull beside a crashed one may be refused (e.g. a crash left a layer directory that
            // only the next recovery removes); what counts is that the store recovers, checked later.
            None => {
                tally.failed += 1;
                format!("failed: {err_line}")
            }
        };
        let _ = writeln!(tally.log, "  {:?}: {outcome}", r.worker);
    }
}

/// One file system entry as the comparison sees it. Outside layer diffs only the kind counts: lock
/// files and metadata differ in tokens and timestamps, which the record comparison leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    detail: Option<String>,
}

fn kind_of(ft: fs::FileType) -> &'static str {
    match () {
        _ if ft.is_dir() => "dir",
        _ if ft.is_file() => "file",
        _ if ft.is_symlink() => "symlink",
        _ if ft.is_char_device() => "char device",
        _ if ft.is_block_device() => "block device",
        _ if ft.is_fifo() => "fifo",
        _ => "socket",
    }
}

fn sha256_file(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if n == 0 {
            return hex::encode(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// Every path under `root`, relative, with what is compared about it.
fn tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("reading a directory entry").path();
            let md = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("inspecting {}: {e}", path.display()));
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let kind = kind_of(md.file_type());
            // overlay/<id>/diff/…: the layer's contents. The diff directory itself is made by the
            // store, not taken from the tar, so its mtime is the extraction's.
            let in_diff = rel
                .components()
                .nth(2)
                .is_some_and(|c| c.as_os_str() == "diff");
            let diff_root = in_diff && rel.components().count() == 3;
            let detail = in_diff.then(|| {
                let content = match kind {
                    "file" => sha256_file(&path),
                    "symlink" => fs::read_link(&path)
                        .expect("reading a symlink")
                        .display()
                        .to_string(),
                    _ if md.file_type().is_char_device() => format!("rdev {}", md.rdev()),
                    _ => String::new(),
                };
                format!(
                    "mode {:o} owner {}:{} size {} mtime {} {content}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    if kind == "dir" { 0 } else { md.size() },
                    if diff_root { 0 } else { md.mtime() }
                )
            });
            if md.is_dir() {
                stack.push(path);
            }
            out.insert(rel, Entry { kind, detail });
        }
    }
    out
}

/// Layer and image records without their creation times, and the whole tree.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    layers: BTreeMap<String, String>,
    images: BTreeMap<String, String>,
    tree: BTreeMap<PathBuf, Entry>,
}

fn snapshot(root: &Path) -> Result<Snapshot, String> {
    let store = Store::open(root, StoreOptions::default())
        .map_err(|e| format!("opening the store: {e}"))?;
    let layers = store
        .layers()
        .map_err(|e| format!("listing layers: {e}"))?
        .into_iter()
        .map(|mut l| {
            l.created = 0;
            (l.id.clone(), format!("{l:?}"))
        })
        .collect();
    let images = store
        .images()
        .map_err(|e| format!("listing images: {e}"))?
        .into_iter()
        .map(|mut i| {
            i.created = 0;
            (i.id.clone(), format!("{i:?}"))
        })
        .collect();
    drop(store);
    Ok(Snapshot {
        layers,
        images,
        tree: tree(root),
    })
}

/// What crash recovery must have removed when the store is opened with nobody else using it.
fn leftovers(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let staging = root.join("overlay/staging");
    for e in fs::read_dir(&staging).into_iter().flatten().flatten() {
        found.push(format!("staging entry {}", e.path().display()));
    }
    for dir in ["overlay-layers", "overlay-images", "overlay-containers"] {
        for e in fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || name.starts_with("tmp-") {
                found.push(format!("temp file {dir}/{name}"));
            }
        }
    }
    let layers_json = root.join("overlay-layers/layers.json");
    if let Ok(text) = fs::read(&layers_json) {
        let records: Vec<serde_json::Value> = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", layers_json.display()));
        for r in records.iter().filter(|r| r["incomplete"] == true) {
            found.push(format!("incomplete layer record {}", r["id"]));
        }
    }
    found
}

/// Differences between a store and the clean one, one line each.
fn differences(clean: &Snapshot, got: &Snapshot) -> Vec<String> {
    fn diff_maps<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
        what: &str,
        clean: &BTreeMap<K, V>,
        got: &BTreeMap<K, V>,
        out: &mut Vec<String>,
    ) {
        for (k, v) in clean {
            match got.get(k) {
                None => out.push(format!("{what} {k:?} missing")),
                Some(g) if g != v => out.push(format!("{what} {k:?} is {g:?}, clean: {v:?}")),
                Some(_) => {}
            }
        }
        for (k, v) in got {
            if !clean.contains_key(k) {
                out.push(format!("{what} {k:?} is extra: {v:?}"));
            }
        }
    }
    let mut out = Vec::new();
    diff_maps("layer", &clean.layers, &got.layers, &mut out);
    diff_maps("image", &clean.images, &got.images, &mut out);
    diff_maps("path", &clean.tree, &got.tree, &mut out);
    out
}

/// Opens the stormed store (recovery), checks for leftovers, pulls every image again without kills
/// and compares with the clean store.
fn check_store(store: &Path, images: &Path, clean: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = Store::open(store, StoreOptions::default()) {
        problems.push(format!("opening the store after the storm: {e}"));
        return problems;
    }
    problems.extend(
        leftovers(store)
            .into_iter()
            .map(|l| format!("after recovery: {l}")),
    );
    for i in 0..IMAGES {
        let out = pull_cmd(
            store,
            &image_dir(images, i),
            ["staged", "locked"][i % 2],
            false,
        )
        .output()
        .expect("starting lockbench pull");
        if !out.status.success() {
            problems.push(format!(
                "re-pull of img-{i:02} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    match snapshot(store) {
        Ok(got) => problems.extend(differences(clean, &got)),
        Err(e) => problems.push(e),
    }
    problems
}

#[test]
fn killed_pulls_leave_a_store_that_recovers_to_what_clean_pulls_build() {
    let budget = Duration::from_secs(env_u64("LOCKTRACE_STORM_SECS").unwrap_or(60));
    let seed = env_u64("LOCKTRACE_STORM_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64
    });
    eprintln!("crash storm: seed {seed} (LOCKTRACE_STORM_SEED={seed} replays it), {budget:?}");
    let strace = strace_available();
    if !strace {
        assert!(
            std::env::var_os("LOCKTRACE_REQUIRE_KERNEL_TESTS").is_none(),
            "strace is required for the storm's crash points here (cargo xtask setup installs it)"
        );
        eprintln!("strace not found: random kills only, no injected crash points");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("creating a temp dir");
    let images = tmp.path().join("images");
    generate(
        &images,
        &[
            "--images",
            &IMAGES.to_string(),
            "--layers",
            "3",
            "--layer-size",
            "256K",
            "--files-per-layer",
            "6",
            "--seed",
            "13",
        ],
    );

    let clean_root = tmp.path().join("clean");
    let mut tally = Tally::default();
    for i in 0..IMAGES {
        let t = Instant::now();
        pull(&clean_root, &image_dir(&images, i), "staged");
        tally.recent.push(t.elapsed());
    }
    let clean = snapshot(&clean_root).expect("the clean store opens");
    assert_eq!(
        clean.images.len(),
        IMAGES,
        "clean store: {:?}",
        clean.images
    );

    let points = crash_points();
    let mut next_point = (seed % points.len() as u64) as usize;
    let start = Instant::now();
    while tally.stores == 0 || start.elapsed() < budget {
        tally.stores += 1;
        let store = tmp.path().join(format!("storm-{}", tally.stores));
        let logs = tmp.path().join(format!("logs-{}", tally.stores));
        fs::create_dir_all(&logs).expect("creating the log dir");
        tally.log.clear();
        let mut problems = Vec::new();
        // Each wave brings two images this store has not seen; the crash point pulls the first of
        // them, so it has layers to create, the others pull any image seen so far.
        let kill_window = typical(&mut tally.recent);
        let mut order: Vec<usize> = (0..IMAGES).collect();
        order.shuffle(&mut rng);
        for wave_no in 0..WAVES_PER_STORE {
            let seen = &order[..2 * wave_no + 2];
            let wave = (0..WAVE)
                .map(|slot| {
                    let fate = if slot == 0 && strace {
                        next_point = (next_point + 1) % points.len();
                        Fate::CrashPoint(points[next_point])
                    } else if rng.random_bool(0.7) {
                        Fate::KillAfter(kill_window.mul_f64(rng.random::<f64>()))
                    } else {
                        Fate::Survive
                    };
                    let point_durable = matches!(fate, Fate::CrashPoint(p) if p.family == "fsync");
                    let w = Worker {
                        image: if slot == 0 {
                            seen[2 * wave_no]
                        } else {
                            seen[rng.random_range(0..seen.len())]
                        },
                        mode: ["staged", "locked"][rng.random_range(0..2)],
                        durable: point_durable || rng.random_bool(0.3),
                        fate,
                    };
                    spawn(&store, &images, &logs, wave_no * WAVE + slot, w)
                })
                .collect();
            run_wave(wave, &mut tally, &mut problems);
        }
        problems.extend(check_store(&store, &images, &clean));
        assert!(
            problems.is_empty(),
            "crash storm (seed {seed}), store {}: {} problems:\n  {}\nits processes:\n{}",
            tally.stores,
            problems.len(),
            problems.join("\n  "),
            tally.log
        );
        fs::remove_dir_all(&store).expect("removing a checked store");
    }
    eprintln!(
        "crash storm: {} stores, {} processes in {:.1?}: {} killed at random, {} at crash points, \
         {} finished, {} refused beside a crash; all stores recovered to the clean state",
        tally.stores,
        tally.processes,
        start.elapsed(),
        tally.killed,
        tally.crash_points.len(),
        tally.finished,
        tally.failed
    );
    let fired: std::collections::BTreeSet<_> = tally.crash_points.iter().collect();
    let families: Vec<String> = CRASH_POINTS
        .iter()
        .map(|&(family, _, max)| {
            let n = fired.iter().filter(|(f, _)| *f == family).count();
            format!("{family} {n}/{max}")
        })
        .collect();
    eprintln!(
        "crash storm: distinct crash points that killed a pull: {} ({} more came after the pull's \
         last such call)",
        families.join(", "),
        tally.crash_points_missed
    );
}

#[test]
fn store_check_reports_leftovers_and_changed_files() {
    let tmp = tempfile::tempdir().expect("creating a temp dir");
    let images = tmp.path().join("images");
    generate(
        &images,
        &["--images", "1", "--layers", "1", "--layer-size", "16K"],
    );
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    pull(&a, &image_dir(&images, 0), "staged");
    pull(&b, &image_dir(&images, 0), "locked");
    let clean = snapshot(&a).expect("store a opens");
    assert_eq!(
        differences(&clean, &snapshot(&b).expect("store b opens")),
        Vec::<String>::new(),
        "a staged and a locked pull of one image differ"
    );

    fs::write(b.join("overlay-images/.images.json.tmp"), "[]").unwrap();
    fs::create_dir(b.join("overlay/staging/0123abcd")).unwrap();
    assert_eq!(
        leftovers(&b),
        [
            format!(
                "staging entry {}",
                b.join("overlay/staging/0123abcd").display()
            ),
            "temp file overlay-images/.images.json.tmp".to_string(),
        ]
    );
    let layer = clean.layers.keys().next().expect("one layer");
    let diff = b.join("overlay").join(layer).join("diff");
    let file = tree(&diff)
        .into_iter()
        .find(|(_, e)| e.kind == "file")
        .map(|(p, _)| diff.join(p))
        .expect("the layer has a file");
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut changed = Snapshot {
        tree: tree(&b),
        ..snapshot(&a).expect("store a opens")
    };
    changed.layers.clear();
    let diffs = differences(&clean, &changed);
    let rel = file.strip_prefix(&b).unwrap();
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with(&format!("path {rel:?} is ")) && d.contains("mode 100600")),
        "{diffs:#?}"
    );
    assert!(
        diffs.iter().any(|d| d.contains(".images.json.tmp")
            && d.ends_with("is extra: Entry { kind: \"file\", detail: None }")),
        "{diffs:#?}"
    );
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with(&format!("layer {layer:?} missing"))),
        "{diffs:#?}"
    );
}
