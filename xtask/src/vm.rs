//! `cargo xtask vm-test`: the kernel tests inside QEMU guests that boot stock Debian kernels.
//!
//! This project's CI hosts refuse BPF trampolines, so `cargo xtask test` only ever exercises the
//! tracepoint attach mode there. Ordinary distro kernels allow fentry, so each pinned kernel below is
//! booted with an initramfs holding static busybox, the host-built `locktrace`, `lockload` and the
//! kernel test binary (with the shared libraries they link), and the very same tests run once with
//! `record --attach fentry` and once with `--attach tracepoint`, with their accuracy tolerances
//! unchanged (KVM where it works; otherwise software emulation with an instruction-counted clock,
//! which keeps host scheduling out of the guest's timings). The guest reports on a second serial
//! port; a hang, a panic or a missing result is a failure.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::setup;

/// A stock Debian cloud kernel: BTF, fentry/fexit and the serial port built in, no modules needed.
struct Kernel {
    label: &'static str,
    package: &'static str,
    version: &'static str,
}

/// Pinned exactly, so a run is reproducible; when Debian drops one from its archive, pick a current
/// one with `apt-cache search linux-image | grep cloud-amd64-unsigned`.
const KERNELS: &[Kernel] = &[
    Kernel {
        label: "6.1",
        package: "linux-image-6.1.0-56-cloud-amd64-unsigned",
        version: "6.1.192-2",
    },
    Kernel {
        label: "6.12",
        package: "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        version: "6.12.117-1~deb12u1",
    },
];

/// `--kernel`: one of [`KERNELS`] or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

impl KernelChoice {
    fn kernels(self) -> Vec<&'static Kernel> {
        let label = match self {
            KernelChoice::V6_1 => "6.1",
            KernelChoice::V6_12 => "6.12",
            KernelChoice::All => return KERNELS.iter().collect(),
        };
        KERNELS.iter().filter(|k| k.label == label).collect()
    }
}

const APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boots the test kernels"),
    (
        "busybox-static",
        "the guest's init, shell and mount (static, so it needs no libraries)",
    ),
];

const BUSYBOX: &str = "/bin/busybox";
const INIT: &str = include_str!("../vm/init");
const WRAPPER: &str = include_str!("../vm/locktrace-wrapper");
/// Where the real locktrace binary sits in the guest; the wrapper takes its build path.
const GUEST_LOCKTRACE: &str = "/opt/locktrace/locktrace";
const GUEST_KERNEL_TESTS: &str = "/opt/locktrace/kernel-tests";

/// Software emulation runs the whole guest (both attach modes) in about 70 s; this only catches
/// hangs.
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// A working KVM boots to the first serial line in about a second.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(choice: KernelChoice) -> Result<()> {
    let started = Instant::now();
    setup::setup()?;
    setup::apt_packages("vm-test", APT_PACKAGES)?;
    let target = target_dir()?;
    let cache = target.join("vm-cache");
    let work = target.join("vm");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let kernels = choice.kernels();
    let images = kernels
        .iter()
        .map(|k| kernel_image(k, &cache))
        .collect::<Result<Vec<_>>>()?;
    let binaries = build()?;
    let initramfs = work.join("initramfs.cpio");
    pack(&binaries, &initramfs)?;
    let accel = accelerator(&images[0], &initramfs, &work)?;
    eprintln!("xtask vm-test: booting with {}", accel.describe());

    let mut failed = Vec::new();
    for (kernel, image) in kernels.iter().zip(&images) {
        let t = Instant::now();
        let dir = work.join(kernel.label);
        match boot(image, &initramfs, &dir, accel, GUEST_TIMEOUT, false)
            .and_then(|out| verdict(&out))
        {
            Ok(summary) => eprintln!(
                "xtask vm-test: {} ({}): pass in {:.1}s: {summary}",
                kernel.label,
                kernel.package,
                t.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!(
                    "xtask vm-test: {} ({}): FAIL in {:.1}s: {e:#}",
                    kernel.label,
                    kernel.package,
                    t.elapsed().as_secs_f64()
                );
                failed.push(kernel.label);
            }
        }
    }
    eprintln!(
        "xtask vm-test: {} kernel(s) in {:.1}s",
        kernels.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("vm-test failed on kernel(s) {}", failed.join(", "));
    }
    Ok(())
}

fn target_dir() -> Result<PathBuf> {
    let out = crate::cargo_cmd(&["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed ({})", out.status);
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// The kernel's bzImage, downloaded with apt and unpacked once into the cache.
fn kernel_image(kernel: &Kernel, cache: &Path) -> Result<PathBuf> {
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
        let mut cmd = Command::new("apt-get");
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
    let fetched = fetch() || (setup::apt_update().is_ok() && fetch());
    if !fetched {
        bail!(
            "cannot download {spec}; if Debian dropped it, pin a current cloud kernel in KERNELS \
             (xtask/src/vm.rs): apt-cache search linux-image | grep cloud-amd64-unsigned"
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
        .args(["-x", "--wildcards", "./boot/vmlinuz-*"])
        .stdin(tar.stdout.context("dpkg-deb stdout")?)
        .status()
        .context("cannot run tar")?;
    if !st.success() {
        bail!("no boot/vmlinuz-* in {}", deb.display());
    }
    let found = fs::read_dir(extract.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .next()
        .context("vmlinuz missing after extraction")?;
    fs::rename(&found, &image)?;
    fs::remove_dir_all(&extract)?;
    fs::remove_dir_all(&download)?;
    Ok(image)
}

/// The host-built binaries the guest runs.
struct Binaries {
    locktrace: PathBuf,
    lockload: PathBuf,
    kernel_tests: PathBuf,
}

/// Builds the kernel test binary and the binaries it runs, optimized: under software emulation a
/// debug locktrace takes about 10 s to start, and the guests run three times as long.
/// (A static musl build is not possible: locktrace-report's plots pull in freetype, which
/// freetype-sys compiles as C++ for targets without pkg-config, and Debian has no musl C++
/// toolchain. The glibc binaries go in with their libraries instead.)
fn build() -> Result<Binaries> {
    eprintln!("xtask vm-test: building locktrace, lockload and the kernel tests");
    let out = crate::cargo_cmd(&[
        "test",
        "--package",
        "locktrace",
        "--test",
        "kernel",
        "--no-run",
        "--release",
        "--message-format=json-render-diagnostics",
    ])
    .stderr(Stdio::inherit())
    .output()
    .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the kernel tests failed ({})", out.status);
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            found.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    let mut take = |name: &str| {
        found
            .remove(name)
            .with_context(|| format!("cargo built no executable named {name}"))
    };
    Ok(Binaries {
        locktrace: take("locktrace")?,
        lockload: take("lockload")?,
        kernel_tests: take("kernel")?,
    })
}

/// One file of the initramfs.
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// Writes the guest's initramfs: /init and busybox for its shell, the real locktrace under
/// [`GUEST_LOCKTRACE`], the wrapper and lockload at their host paths (baked into the test binary
/// by cargo), and every shared library the binaries load.
fn pack(bin: &Binaries, out: &Path) -> Result<()> {
    let mut tree: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let mut add = |path: &Path, entry: Entry| {
        for dir in path.ancestors().skip(1) {
            if dir != Path::new("/") {
                tree.entry(dir.to_path_buf()).or_insert(Entry::Dir);
            }
        }
        tree.insert(path.to_path_buf(), entry);
    };
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let exe = |data| Entry::File { data, mode: 0o755 };
    for dir in ["/dev", "/proc", "/sys", "/tmp"] {
        add(Path::new(dir), Entry::Dir);
    }
    add(Path::new("/init"), exe(INIT.as_bytes().to_vec()));
    add(Path::new(BUSYBOX), exe(read(Path::new(BUSYBOX))?));
    add(Path::new("/bin/sh"), Entry::Symlink("busybox".into()));
    add(Path::new(GUEST_LOCKTRACE), exe(read(&bin.locktrace)?));
    add(Path::new(GUEST_KERNEL_TESTS), exe(read(&bin.kernel_tests)?));
    add(&bin.locktrace, exe(WRAPPER.as_bytes().to_vec()));
    add(&bin.lockload, exe(read(&bin.lockload)?));
    let mut lib_dirs = BTreeSet::new();
    for lib in shared_libraries(&[&bin.locktrace, &bin.lockload, &bin.kernel_tests])? {
        lib_dirs.insert(lib.parent().unwrap_or(Path::new("/")).to_path_buf());
        add(&lib, exe(read(&lib)?));
    }
    let lib_path: Vec<_> = lib_dirs.iter().map(|d| d.display().to_string()).collect();
    let env = format!(
        "export LOCKTRACE={GUEST_LOCKTRACE}\nexport KERNEL_TESTS={GUEST_KERNEL_TESTS}\n\
         export LD_LIBRARY_PATH={}\n",
        lib_path.join(":")
    );
    add(
        Path::new("/vm-test.env"),
        Entry::File {
            data: env.into_bytes(),
            mode: 0o644,
        },
    );
    let mut w = std::io::BufWriter::new(
        fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    for (ino, (path, entry)) in tree.iter().enumerate() {
        let name = path.strip_prefix("/").unwrap_or(path).to_string_lossy();
        let (mode, data): (u32, &[u8]) = match entry {
            Entry::Dir => (0o040_755, &[]),
            Entry::File { data, mode } => (0o100_000 | mode, data),
            Entry::Symlink(target) => (0o120_777, target.as_bytes()),
        };
        cpio_entry(&mut w, ino as u32 + 1, &name, mode, data)?;
    }
    cpio_entry(&mut w, 0, "TRAILER!!!", 0, &[])?;
    w.flush()?;
    Ok(())
}

/// One record of a `newc` cpio archive, the format the kernel unpacks an initramfs from.
fn cpio_entry(
    w: &mut impl std::io::Write,
    ino: u32,
    name: &str,
    mode: u32,
    data: &[u8],
) -> Result<()> {
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let mut header = String::from("070701");
    let size = u32::try_from(data.len()).context("initramfs file over 4 GiB")?;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    for f in fields {
        write!(header, "{f:08x}").expect("writing to a String");
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    w.write_all(&[0; 3][..pad4(header.len() + name.len() + 1)])?;
    w.write_all(data)?;
    w.write_all(&[0; 3][..pad4(data.len())])?;
    Ok(())
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Every shared library (and the dynamic loader) the binaries need, as ldd resolves them here.
fn shared_libraries(binaries: &[&Path]) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for bin in binaries {
        let out = Command::new("ldd")
            .arg(bin)
            .output()
            .context("cannot run ldd")?;
        if !out.status.success() {
            bail!(
                "ldd {}: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/.../libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)", or
            // the vDSO, which has no file.
            let path = line.split("=>").last().unwrap_or("").trim();
            let path = path.split(" (").next().unwrap_or("");
            if path.starts_with('/') {
                libs.insert(PathBuf::from(path));
            } else if line.contains("not found") {
                bail!("{}: {}", bin.display(), line.trim());
            }
        }
    }
    Ok(libs)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn describe(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "software emulation (TCG, instruction-counted clock; no usable KVM here)",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host", "-smp", "2"],
            // Guest time counted in executed instructions (1 ns each), not taken from the host:
            // a host that preempts the emulator between a syscall's return and the workload's
            // clock read would otherwise show up as milliseconds of lock time the tracer never
            // saw. `sleep=off` skips idle time, so the tests' sleeps cost nothing. Instruction
            // counting needs a single emulation thread, hence one CPU.
            Accel::Tcg => &[
                "-accel",
                "tcg",
                "-icount",
                "shift=0,sleep=off",
                "-cpu",
                "max",
                "-smp",
                "1",
            ],
        }
    }
}

/// KVM where it really boots a stock kernel: /dev/kvm can exist and still be unusable (nested
/// paravirtual hosts reject the MSRs a full guest sets, or hang it), so a probe boot decides.
fn accelerator(image: &Path, initramfs: &Path, work: &Path) -> Result<Accel> {
    let usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if usable
        && boot(
            image,
            initramfs,
            &work.join("kvm-probe"),
            Accel::Kvm,
            PROBE_TIMEOUT,
            true,
        )
        .is_ok_and(|out| out.results.contains("@@@ done"))
    {
        return Ok(Accel::Kvm);
    }
    Ok(Accel::Tcg)
}

/// What one guest left behind.
struct GuestOutput {
    results: String,
    console: String,
    timed_out: bool,
    dir: PathBuf,
}

fn boot(
    image: &Path,
    initramfs: &Path,
    dir: &Path,
    accel: Accel,
    timeout: Duration,
    probe: bool,
) -> Result<GuestOutput> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let console = dir.join("console.log");
    let results = dir.join("results.log");
    let mut append = String::from("console=ttyS0 panic=-1 oops=panic rdinit=/init quiet");
    if probe {
        append.push_str(" vmtest=probe");
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(accel.args())
        .args(["-m", "1024", "-nodefaults", "-display", "none"])
        .args(["-no-reboot", "-kernel"])
        .arg(image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append, "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("qemu.log"))?);
    let child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
    let timed_out = wait_or_kill(child, timeout)?;
    let text = |p: &Path| {
        fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    };
    Ok(GuestOutput {
        results: text(&results),
        console: text(&console) + &text(&dir.join("qemu.log")),
        timed_out,
        dir: dir.to_path_buf(),
    })
}

/// Waits for QEMU to exit; kills it after `timeout`. Returns whether it had to.
fn wait_or_kill(mut child: Child, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill()?;
    child.wait()?;
    Ok(true)
}

/// One `@@@ begin NAME` … `@@@ end NAME STATUS` section of the guest's results.
struct Step<'a> {
    name: &'a str,
    status: Option<i32>,
    output: String,
}

fn steps(results: &str) -> Vec<Step<'_>> {
    let mut steps: Vec<Step> = Vec::new();
    for line in results.lines() {
        if let Some(name) = line.strip_prefix("@@@ begin ") {
            steps.push(Step {
                name,
                status: None,
                output: String::new(),
            });
        } else if let Some(end) = line.strip_prefix("@@@ end ") {
            if let Some(step) = steps.last_mut() {
                step.status = end.rsplit(' ').next().and_then(|s| s.parse().ok());
            }
        } else if let Some(step) = steps.last_mut().filter(|s| s.status.is_none()) {
            step.output.push_str(line);
            step.output.push('\n');
        }
    }
    steps
}

/// Pass with a one-line summary, or an error that carries the guest's output.
fn verdict(out: &GuestOutput) -> Result<String> {
    let problem = check(out);
    match problem {
        Ok(summary) => Ok(summary),
        Err(why) => {
            let mut msg = format!("{why}\n--- guest results ({}):\n", out.dir.display());
            msg.push_str(if out.results.is_empty() {
                "(nothing)\n"
            } else {
                &out.results
            });
            let tail: Vec<&str> = out.console.lines().rev().take(40).collect();
            msg.push_str("--- console (last 40 lines):\n");
            for line in tail.iter().rev() {
                msg.push_str(line);
                msg.push('\n');
            }
            bail!(msg)
        }
    }
}

fn check(out: &GuestOutput) -> Result<String, String> {
    if out.timed_out {
        return Err(format!(
            "guest hung: no power-off within {}s",
            GUEST_TIMEOUT.as_secs()
        ));
    }
    if out.console.contains("Kernel panic") {
        return Err("guest kernel panicked".into());
    }
    let Some(release) = out
        .results
        .lines()
        .find_map(|l| l.strip_prefix("@@@ booted "))
    else {
        return Err("the guest never reported (boot failure?)".into());
    };
    if !out.results.lines().any(|l| l == "@@@ done") {
        return Err("the guest stopped before finishing its steps".into());
    }
    let steps = steps(&out.results);
    let step = |name: &str| {
        let step = steps
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("step {name} missing from the guest's results"))?;
        match step.status {
            Some(0) => Ok(step),
            status => Err(format!("step {name} failed (exit {status:?})")),
        }
    };
    let doctor = step("doctor")?;
    let fentry_ok = doctor.output.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some("ok") && words.next() == Some("fentry")
    });
    if !fentry_ok || !doctor.output.contains("record would attach with: fentry") {
        return Err("doctor did not find fentry usable".into());
    }
    let mut summary = vec![format!("kernel {release}"), "doctor: fentry".into()];
    for mode in ["fentry", "tracepoint"] {
        let passed = test_counts(&step(&format!("tests-{mode}"))?.output)?;
        // The wrapper counts the record runs it forced into this mode; none means the tests ran
        // some other locktrace and this mode went untested.
        let forced = out
            .results
            .lines()
            .find_map(|l| l.strip_prefix(&format!("@@@ forced {mode} ")))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if forced == 0 {
            return Err(format!(
                "the tests never ran record through the wrapper forcing --attach {mode}"
            ));
        }
        summary.push(format!("{mode}: {passed} ({forced} records)"));
    }
    Ok(summary.join(", "))
}

/// "N passed" from libtest's summary; zero passed tests would prove nothing.
fn test_counts(output: &str) -> Result<String, String> {
    let line = output
        .lines()
        .find(|l| l.starts_with("test result: "))
        .ok_or("no libtest summary")?;
    let passed: u32 = line
        .split(';')
        .next()
        .and_then(|s| s.split_whitespace().rev().nth(1))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unreadable libtest summary: {line}"))?;
    if passed == 0 {
        return Err(format!("no test ran: {line}"));
    }
    Ok(format!("{passed} passed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(results: &str) -> GuestOutput {
        GuestOutput {
            results: results.into(),
            console: String::new(),
            timed_out: false,
            dir: PathBuf::from("/nowhere"),
        }
    }

    const DOCTOR: &str = "@@@ begin doctor\nok   fentry       loaded and attached (trial)\n\
                          record would attach with: fentry\n@@@ end doctor 0\n";

    const OK: &str = "test result: ok. 6 passed; 0 failed; 0 ignored";

    /// One tests step as /init writes it, with how many record runs the wrapper forced.
    fn tests(mode: &str, summary: &str, status: i32, forced: u32) -> String {
        format!(
            "@@@ begin tests-{mode}\n{summary}\n@@@ end tests-{mode} {status}\n\
             @@@ forced {mode} {forced}\n"
        )
    }

    fn guest(fentry: &str, tracepoint: &str) -> String {
        format!("@@@ booted 6.12.0\n{DOCTOR}{fentry}{tracepoint}@@@ done\n")
    }

    #[test]
    fn a_complete_passing_guest_passes() {
        let r = guest(&tests("fentry", OK, 0, 14), &tests("tracepoint", OK, 0, 14));
        let summary = check(&output(&r)).unwrap();
        assert!(
            summary.contains("fentry: 6 passed (14 records)"),
            "{summary}"
        );
    }

    #[test]
    fn failures_hangs_and_missing_results_fail() {
        let bad = "test result: FAILED. 5 passed; 1 failed; 0 ignored";
        let failing = guest(
            &tests("fentry", bad, 101, 14),
            &tests("tracepoint", OK, 0, 14),
        );
        let err = check(&output(&failing)).unwrap_err();
        assert!(err.contains("tests-fentry"), "{err}");
        let none_ran = guest(
            &tests("fentry", "test result: ok. 0 passed; 0 failed", 0, 0),
            &tests("tracepoint", OK, 0, 14),
        );
        let err = check(&output(&none_ran)).unwrap_err();
        assert!(err.contains("no test ran"), "{err}");
        // Passing tests that bypassed the wrapper tested auto mode, not tracepoints.
        let unforced = guest(&tests("fentry", OK, 0, 14), &tests("tracepoint", OK, 0, 0));
        let err = check(&output(&unforced)).unwrap_err();
        assert!(err.contains("--attach tracepoint"), "{err}");
        let unfinished = format!("@@@ booted 6.1.0\n{DOCTOR}");
        assert!(check(&output(&unfinished)).is_err());
        assert!(check(&output("")).is_err());
        let mut hung = output(&failing);
        hung.timed_out = true;
        assert!(check(&hung).unwrap_err().contains("hung"));
        let no_fentry = "@@@ booted 6.1.0\n@@@ begin doctor\nno   fentry       refused\n\
                         record would attach with: tracepoint\n@@@ end doctor 0\n@@@ done\n";
        assert!(check(&output(no_fentry)).unwrap_err().contains("fentry"));
    }

    #[test]
    fn cpio_records_are_aligned_and_sized() {
        let mut buf = Vec::new();
        cpio_entry(&mut buf, 1, "init", 0o100_755, b"#!/bin/sh\n").unwrap();
        assert_eq!(&buf[..6], b"070701");
        assert_eq!(buf.len() % 4, 0);
        // 110-byte header + "init\0" padded to 116, then 10 data bytes padded to 12.
        assert_eq!(buf.len(), 116 + 12);
        assert_eq!(&buf[54..62], b"0000000a", "file size field");
    }
}
