//! Builds and runs the test programs of `testdata/` (Go and C) for the symbolizer's tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use tempfile::TempDir;

pub const GO_PROGRAM: &str = include_str!("testdata/goprog.go");
pub const GO_CGO_PROGRAM: &str = include_str!("testdata/gocgo.go");
pub const C_PROGRAM: &str = include_str!("testdata/cprog.c");

/// How to build a Go test program.
#[derive(Debug, Clone, Copy)]
pub enum GoMode {
    /// `CGO_ENABLED=0`, default build mode: static, non-PIE, internal linking.
    Static,
    /// `CGO_ENABLED=0 -buildmode=pie`: internal linking, textStart relocated at load time.
    Pie,
    /// cgo and `-buildmode=pie`: external linking through gcc, as podman is built.
    CgoPie,
}

/// A built program; the directory goes when it is dropped.
pub struct Built {
    _dir: TempDir,
    pub path: PathBuf,
}

/// The `go` command, or a failure that says how to get it (never a silent skip).
fn go() -> PathBuf {
    which_go().unwrap_or_else(|| {
        panic!("`go` not found on PATH nor at /usr/bin/go: run `cargo xtask setup` to install it")
    })
}

fn which_go() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/go/bin")])
        .map(|dir| dir.join("go"))
        .find(|p| p.is_file())
}

/// Go's build cache, shared by the tests of a run and kept between runs under the temp dir so
/// that the standard library compiles once (HOME may be unset on CI).
fn go_env(cmd: &mut Command) {
    let base = std::env::temp_dir().join("locktrace-test-go");
    cmd.env("GOCACHE", base.join("cache"))
        .env("GOPATH", base.join("path"))
        .env("GOENV", "off")
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GO111MODULE", "on");
}

/// Builds `source` as `main.go` of a one-file module; `stripped` adds `-ldflags='-s -w'`.
pub fn go_build(source: &str, mode: GoMode, stripped: bool) -> Built {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("go.mod"),
        "module locktracetest\n\ngo 1.19\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("main.go"), source).unwrap();
    let path = dir.path().join("prog");
    let mut cmd = Command::new(go());
    cmd.current_dir(dir.path())
        .arg("build")
        .arg("-o")
        .arg(&path);
    go_env(&mut cmd);
    match mode {
        GoMode::Static => cmd.env("CGO_ENABLED", "0"),
        GoMode::Pie => cmd.env("CGO_ENABLED", "0").arg("-buildmode=pie"),
        GoMode::CgoPie => cmd.env("CGO_ENABLED", "1").arg("-buildmode=pie"),
    };
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    run_ok(cmd.arg("."), "go build");
    Built { _dir: dir, path }
}

/// `go tool nm` of `binary`: the text symbols (types T and t) as (address, name), by address.
pub fn go_nm(binary: &Path) -> Vec<(u64, String)> {
    let mut cmd = Command::new(go());
    go_env(&mut cmd);
    let out = run_ok(cmd.args(["tool", "nm", "-n"]).arg(binary), "go tool nm");
    out.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let name = f.collect::<Vec<_>>().join(" ");
            matches!(kind, "T" | "t").then_some((addr, name))
        })
        .collect()
}

/// Compiles a C program with gcc (default flags: PIE on Debian), keeping its symbol table.
pub fn gcc_build(source: &str) -> Built {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("prog.c");
    std::fs::write(&src, source).unwrap();
    let path = dir.path().join("prog");
    let mut cmd = Command::new("gcc");
    run_ok(cmd.arg("-O1").arg("-o").arg(&path).arg(&src), "gcc");
    Built { _dir: dir, path }
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running test program that printed the address of its distinctive function; it exits when
/// its stdin closes, and is killed if still running when dropped.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    pub addr: u64,
}

impl Running {
    pub fn start(binary: &Path) -> Self {
        let mut child = Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the program's first line");
        let hex = line.split_whitespace().next().unwrap_or_default();
        let addr = u64::from_str_radix(hex.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("no address in {line:?}"));
        Self { child, stdin, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
