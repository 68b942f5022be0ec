//! lockload's workloads: the lock calls, holds and releases, each measured by lockload's own
//! clock (the ground truth), and the processes that run them. `main.rs` parses the command line.

use std::{
    ffi::CString,
    io::{BufRead, BufReader, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// What `lockload blockers` writes: who held the lock, and every wait behind it.
#[derive(Serialize, Deserialize, Debug)]
pub struct BlockersTruth {
    pub holder_pid: u32,
    pub waits: Vec<Truth>,
}

#[derive(Parser, Clone)]
pub struct HoldArgs {
    #[arg(long)]
    path: PathBuf,
    #[arg(long, value_enum, default_value_t = Mode::Write)]
    mode: Mode,
    /// Open file description lock (F_OFD_SETLKW) instead of a POSIX one.
    #[arg(long)]
    ofd: bool,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
    hold: Duration,
    #[arg(long, value_enum, default_value_t = Release::Close)]
    release: Release,
    /// Keep running this long after the release (so a release by unlock is not confused with exit).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    linger: Duration,
    /// Stop waiting for the lock after this long: a signal interrupts the wait (the call fails
    /// with EINTR), and the process prints how long it waited and exits.
    #[arg(long, value_parser = humantime::parse_duration)]
    give_up_after: Option<Duration>,
}

/// What `hold --give-up-after` prints when it gave up: its wait, by its own clock.
#[derive(Serialize, Deserialize, Debug)]
pub struct GaveUp {
    pub pid: u32,
    pub wait_ns: u64,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Mode {
    Read,
    Write,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Release {
    /// close() the locking fd.
    Close,
    /// fcntl(F_UNLCK), fd kept open.
    Unlock,
    /// close() another fd of the same file (POSIX: releases the lock; OFD: does not).
    DupClose,
    /// Exit without closing.
    Exit,
}

/// What one `hold` process measured, by its own monotonic clock.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Truth {
    pub pid: u32,
    pub wait_ns: u64,
    /// From the lock call's return to the start of the release call.
    pub hold_ns: u64,
    /// How long the release call itself took: the kernel's release lies inside it (0 for exit).
    pub release_ns: u64,
}

pub fn thread_exec(tid_file: PathBuf, command: &[String]) -> Result<()> {
    let argv: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()?;
    let program = command[0].clone();
    std::thread::spawn(move || -> Result<()> {
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        std::fs::write(&tid_file, tid.to_string())
            .with_context(|| format!("writing {}", tid_file.display()))?;
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        // SAFETY: ptrs is a NULL-terminated array of pointers into argv's C strings, which
        // outlive the call; execvp only returns on failure.
        unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
        bail!("exec {program}: {}", std::io::Error::last_os_error())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("exec thread panicked"))?
}

fn setlk(fd: i32, cmd: i32, l_type: i16) -> std::io::Result<()> {
    // SAFETY: struct flock is plain integers, for which all zeroes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: fl is a valid, writable struct flock, which every lock command takes.
    if unsafe { libc::fcntl(fd, cmd, &mut fl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn open(path: &Path) -> Result<i32> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: c is a NUL-terminated path that lives across the call; O_CREAT gets its mode.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        bail!(
            "open {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(fd)
}

/// CLOCK_MONOTONIC in ns: the clock the kernel side stamps events with, comparable across processes.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a writable timespec; CLOCK_MONOTONIC always exists, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Keeps page faults and preemption out of the measured windows: a first-touch fault between the syscall and the
/// clock read costs tens of microseconds, which would be blamed on the tracer. So lock all pages in
/// memory (best effort: unprivileged users may not) and run the measured path once untraced
/// (F_GETLK is not a lock request).
fn warm_up(fd: i32) -> Result<()> {
    // SAFETY: mlockall only takes flags; a refusal (no privilege) leaves memory as it was.
    unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    // Best effort as well: a real-time policy keeps other load from preempting us between a
    // syscall and the clock read (the process sleeps almost all the time, so it starves nobody).
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: param is a valid sched_param that lives across the call; pid 0 is this process.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    let t = Instant::now();
    setlk(fd, libc::F_GETLK, libc::F_WRLCK as i16).context("F_GETLK")?;
    let _ = (mono_ns(), t.elapsed());
    serde_json::to_string(&Truth {
        pid: 0,
        wait_ns: 0,
        hold_ns: 0,
        release_ns: 0,
    })?;
    Ok(())
}

pub fn hold(a: &HoldArgs) -> Result<()> {
    let fd = open(&a.path)?;
    warm_up(fd)?;
    let other = if a.release == Release::DupClose {
        Some(open(&a.path)?)
    } else {
        None
    };
    let l_type = if a.mode == Mode::Read {
        libc::F_RDLCK
    } else {
        libc::F_WRLCK
    } as i16;
    let cmd = if a.ofd {
        libc::F_OFD_SETLKW
    } else {
        libc::F_SETLKW
    };
    if let Some(after) = a.give_up_after {
        alarm(after)?;
    }
    let t0 = Instant::now();
    let locked = setlk(fd, cmd, l_type);
    let t1 = Instant::now();
    if a.give_up_after.is_some() {
        alarm(Duration::ZERO)?;
        if locked
            .as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::EINTR))
        {
            let gave_up = GaveUp {
                pid: std::process::id(),
                wait_ns: (t1 - t0).as_nanos() as u64,
            };
            println!("{}", serde_json::to_string(&gave_up)?);
            return Ok(());
        }
    }
    locked.context("lock")?;
    println!("@locked {}", mono_ns());
    std::io::stdout().flush()?;
    std::thread::sleep(a.hold);
    let t2 = Instant::now();
    let mut truth = Truth {
        pid: std::process::id(),
        wait_ns: (t1 - t0).as_nanos() as u64,
        hold_ns: (t2 - t1).as_nanos() as u64,
        release_ns: 0,
    };
    match a.release {
        // SAFETY: fd is open and owned by this function; nothing uses it after the close.
        Release::Close => unsafe {
            libc::close(fd);
        },
        Release::Unlock => setlk(
            fd,
            if a.ofd {
                libc::F_OFD_SETLK
            } else {
                libc::F_SETLK
            },
            libc::F_UNLCK as i16,
        )?,
        // SAFETY: `other` is a second fd opened above for this release and used nowhere else.
        Release::DupClose => unsafe {
            libc::close(other.expect("opened above"));
        },
        Release::Exit => {
            // The release happens inside the kernel's exit path; only a parent watching for the exit
            // can bound it (`lockload exit-hold`).
            println!("{}", serde_json::to_string(&truth)?);
            println!("@exiting {}", mono_ns());
            std::io::stdout().flush()?;
            // SAFETY: _exit ends the process at once; stdout was flushed above, and skipping the
            // fd closes is the point (the kernel releases the lock in its exit path).
            unsafe { libc::_exit(0) };
        }
    }
    truth.release_ns = t2.elapsed().as_nanos() as u64;
    println!("{}", serde_json::to_string(&truth)?);
    std::io::stdout().flush()?;
    std::thread::sleep(a.linger);
    Ok(())
}

fn spawn_hold(
    path: &Path,
    hold: Duration,
    extra: &[&str],
) -> Result<(Child, BufReader<std::process::ChildStdout>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("hold")
        .arg("--path")
        .arg(path)
        .arg("--hold")
        .arg(format!("{}us", hold.as_micros()))
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning lockload hold")?;
    let out = BufReader::new(child.stdout.take().expect("piped"));
    Ok((child, out))
}

fn wait_line(out: &mut BufReader<std::process::ChildStdout>, want: &str) -> Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            bail!("lockload hold ended before printing {want}");
        }
        if line.trim_start().starts_with(want) {
            return Ok(line);
        }
    }
}

fn finish(mut child: Child, mut out: BufReader<std::process::ChildStdout>) -> Result<Truth> {
    let line = wait_line(&mut out, "{")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("lockload hold failed: {status}");
    }
    Ok(serde_json::from_str(&line)?)
}

pub fn nest(first: &Path, second: &Path) -> Result<()> {
    let outer = open(first)?;
    setlk(outer, libc::F_SETLKW, libc::F_WRLCK as i16).context("lock --first")?;
    let inner = open(second)?;
    setlk(inner, libc::F_SETLKW, libc::F_WRLCK as i16).context("lock --second")?;
    // SAFETY: both fds are this function's own, open, and not used after closing.
    unsafe {
        libc::close(inner);
        libc::close(outer);
    }
    println!("{}", serde_json::json!({ "pid": std::process::id() }));
    Ok(())
}

/// Makes the kernel refuse a lock with EDEADLK: this process write-locks --first; a child
/// (`lockload nest`) write-locks --second and then waits for --first; once it sleeps there, this
/// process asks for --second, which would close the cycle. Prints this process's pid.
pub fn deadlock(first: &Path, second: &Path) -> Result<()> {
    let outer = open(first)?;
    setlk(outer, libc::F_SETLKW, libc::F_WRLCK as i16).context("lock --first")?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("nest")
        .arg("--first")
        .arg(second)
        .arg("--second")
        .arg(first)
        .stdout(Stdio::null())
        .spawn()
        .context("spawning lockload nest")?;
    wait_blocked(child.id())?;
    let inner = open(second)?;
    let refused = setlk(inner, libc::F_SETLKW, libc::F_WRLCK as i16);
    // SAFETY: both fds are this function's own, open, and not used after closing; closing
    // --first lets the child finish.
    unsafe {
        libc::close(outer);
        libc::close(inner);
    }
    let status = child.wait()?;
    match refused {
        Err(e) if e.raw_os_error() == Some(libc::EDEADLK) => {}
        other => bail!("lock --second: expected EDEADLK, got {other:?}"),
    }
    if !status.success() {
        bail!("lockload nest failed: {status}");
    }
    println!("{}", serde_json::json!({ "pid": std::process::id() }));
    Ok(())
}

/// Handles SIGALRM by doing nothing: its only job is to interrupt a waiting lock call.
extern "C" fn on_alarm(_: libc::c_int) {}

/// Arms a SIGALRM `after` from now (zero disarms it). The handler is installed without
/// `SA_RESTART`, so the kernel ends a waiting `fcntl` with EINTR instead of restarting it.
fn alarm(after: Duration) -> Result<()> {
    // SAFETY: sigaction is plain integers and a function pointer, for which all zeroes is valid;
    // the handler is an `extern "C"` function that touches nothing (async-signal-safe), and both
    // structs live across the calls that read them.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error()).context("sigaction(SIGALRM)");
        }
        let timer = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: after.as_secs() as libc::time_t,
                tv_usec: after.subsec_micros() as libc::suseconds_t,
            },
        };
        if libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error()).context("setitimer");
        }
    }
    Ok(())
}

pub fn lock_loop(path: &Path, count: u64) -> Result<()> {
    let fd = open(path)?;
    let start = Instant::now();
    for _ in 0..count {
        setlk(fd, libc::F_SETLKW, libc::F_WRLCK as i16).context("lock")?;
        setlk(fd, libc::F_SETLK, libc::F_UNLCK as i16).context("unlock")?;
    }
    let ns = start.elapsed().as_nanos() as u64;
    println!(
        "{}",
        serde_json::json!({ "pairs": count, "ns_per_pair": ns / count.max(1) })
    );
    Ok(())
}

/// Untimed cycles before the timed ones: page faults, the dentry and the lock structures' caches
/// settle, and a tracer's maps have their entries.
const WARMUP_CYCLES: u64 = 1000;

/// What `lockload cycles` prints: a tracer that traced the loop saw `warmup + cycles` lock calls.
#[derive(Serialize)]
struct CyclesResult {
    cycles: u64,
    warmup: u64,
    elapsed_ns: u64,
    ns_per_cycle: f64,
}

pub fn lock_cycles(path: &Path, cycles: u64) -> Result<()> {
    // SAFETY: mlockall only takes flags; a refusal (no privilege) leaves memory as it was.
    unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    let cycle = || -> Result<()> {
        let fd = open(path)?;
        let locked = setlk(fd, libc::F_SETLKW, libc::F_WRLCK as i16).context("lock");
        // SAFETY: fd was opened above and is used nowhere else; closing it releases the lock.
        unsafe { libc::close(fd) };
        locked
    };
    for _ in 0..WARMUP_CYCLES {
        cycle()?;
    }
    let start = Instant::now();
    for _ in 0..cycles {
        cycle()?;
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let result = CyclesResult {
        cycles,
        warmup: WARMUP_CYCLES,
        elapsed_ns,
        ns_per_cycle: elapsed_ns as f64 / cycles as f64,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

pub fn exit_hold(path: &Path, hold: Duration) -> Result<()> {
    let (mut child, mut out) = spawn_hold(path, hold, &["--release", "exit"])?;
    let line = wait_line(&mut out, "{")?;
    let mut truth: Truth = serde_json::from_str(&line)?;
    let exiting: u64 = wait_line(&mut out, "@exiting")?
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("bad @exiting line")?;
    let status = child.wait()?;
    truth.release_ns = mono_ns().saturating_sub(exiting);
    if !status.success() {
        bail!("lockload hold failed: {status}");
    }
    println!("{}", serde_json::to_string(&truth)?);
    Ok(())
}

/// For each hold duration: a holder takes the lock, a waiter blocks on it until the holder closes,
/// then holds it briefly itself. Every process's own figures go to the truth file.
pub fn scenario(path: &Path, truth_path: &Path, holds: &[Duration]) -> Result<()> {
    let mut truth = Vec::new();
    for &d in holds {
        let (holder, mut hout) = spawn_hold(path, d, &[])?;
        wait_line(&mut hout, "@locked")?;
        let (waiter, wout) = spawn_hold(path, Duration::from_millis(1), &[])?;
        truth.push(finish(holder, hout)?);
        truth.push(finish(waiter, wout)?);
    }
    std::fs::write(truth_path, serde_json::to_vec_pretty(&truth)?)?;
    Ok(())
}

pub fn blockers(path: &Path, truth_path: &Path, waiters: usize, holds: &[Duration]) -> Result<()> {
    let fd = open(path)?;
    // Its own lock calls are uncontended: keep preemption from stretching one past the tracer's
    // "must have been blocked" threshold.
    warm_up(fd)?;
    let mut truth = BlockersTruth {
        holder_pid: std::process::id(),
        waits: Vec::new(),
    };
    for &d in holds {
        setlk(fd, libc::F_SETLKW, libc::F_WRLCK as i16).context("lock")?;
        let mut running = Vec::new();
        for _ in 0..waiters {
            let (child, out) = spawn_hold(path, Duration::from_millis(1), &["--mode", "read"])?;
            wait_blocked(child.id())?;
            running.push((child, out));
        }
        std::thread::sleep(d);
        setlk(fd, libc::F_SETLK, libc::F_UNLCK as i16).context("unlock")?;
        for (child, out) in running {
            truth.waits.push(finish(child, out)?);
        }
    }
    std::fs::write(truth_path, serde_json::to_vec_pretty(&truth)?)?;
    Ok(())
}

/// Waits until process `pid` sleeps in `fcntl(F_SETLKW)` (its /proc/PID/syscall says so).
fn wait_blocked(pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let mut fields = now.split_whitespace();
        let nr = fields.next().and_then(|n| n.parse::<libc::c_long>().ok());
        let cmd = fields
            .nth(1)
            .and_then(|c| i64::from_str_radix(c.trim_start_matches("0x"), 16).ok());
        if nr == Some(libc::SYS_fcntl) && cmd == Some(libc::F_SETLKW.into()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("lockload hold {pid} did not block on the lock within 10 s (syscall: {now:?})");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
