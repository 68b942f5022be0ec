//! The guest's initramfs: the host-built test binaries, their shared libraries, busybox and /init,
//! packed as a `newc` cpio archive.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

const BUSYBOX: &str = "/bin/busybox";
const INIT: &str = include_str!("../../vm/init");
const WRAPPER: &str = include_str!("../../vm/locktrace-wrapper");
/// Where the real locktrace binary sits in the guest; the wrapper takes its build path.
const GUEST_LOCKTRACE: &str = "/opt/locktrace/locktrace";
const GUEST_KERNEL_TESTS: &str = "/opt/locktrace/kernel-tests";
/// Where the stack tests find their programs in the guest (LOCKTRACE_STACK_PROGRAMS).
const GUEST_STACK_PROGRAMS: &str = "/opt/locktrace/stack-programs";
const STACK_PROGRAMS: [&str; 2] = ["lockstack-c", "lockstack-go"];

/// The host-built binaries the guest runs.
pub(super) struct Binaries {
    locktrace: PathBuf,
    lockload: PathBuf,
    kernel_tests: PathBuf,
    /// The directory holding [`STACK_PROGRAMS`].
    stack_programs: PathBuf,
}

/// Builds the kernel test binary and the binaries it runs, optimized: under software emulation a
/// debug locktrace takes about 10 s to start, and the guests run three times as long.
/// (A static musl build is not possible: locktrace-report's plots pull in freetype, which
/// freetype-sys compiles as C++ for targets without pkg-config, and Debian has no musl C++
/// toolchain. The glibc binaries go in with their libraries instead.)
pub(super) fn build(work: &Path) -> Result<Binaries> {
    eprintln!("xtask vm-test: building locktrace, lockload, the kernel tests and their programs");
    let stack_programs = work.join("stack-programs");
    fs::create_dir_all(&stack_programs)
        .with_context(|| format!("creating {}", stack_programs.display()))?;
    // The guests have no compilers: the stack tests' programs are built here, by the same script
    // the tests use on the host.
    let script = crate::workspace_root().join("tracer-cli/tests/programs/build.sh");
    let status = Command::new("sh")
        .arg(&script)
        .arg(&stack_programs)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("building the stack test programs failed ({status})");
    }
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
        stack_programs,
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
pub(super) fn pack(bin: &Binaries, out: &Path) -> Result<()> {
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
    let programs = STACK_PROGRAMS.map(|name| bin.stack_programs.join(name));
    for program in &programs {
        let name = program.file_name().unwrap_or_default();
        add(
            &Path::new(GUEST_STACK_PROGRAMS).join(name),
            exe(read(program)?),
        );
    }
    let mut lib_dirs = BTreeSet::new();
    // Not the Go program: it is static, and ldd refuses it.
    let dynamic = [
        &bin.locktrace,
        &bin.lockload,
        &bin.kernel_tests,
        &programs[0],
    ];
    for lib in shared_libraries(&dynamic)? {
        lib_dirs.insert(lib.parent().unwrap_or(Path::new("/")).to_path_buf());
        add(&lib, exe(read(&lib)?));
    }
    let lib_path: Vec<_> = lib_dirs.iter().map(|d| d.display().to_string()).collect();
    let env = format!(
        "export LOCKTRACE={GUEST_LOCKTRACE}\nexport KERNEL_TESTS={GUEST_KERNEL_TESTS}\n\
         export LOCKTRACE_STACK_PROGRAMS={GUEST_STACK_PROGRAMS}\n\
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
fn shared_libraries(binaries: &[&PathBuf]) -> Result<BTreeSet<PathBuf>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
