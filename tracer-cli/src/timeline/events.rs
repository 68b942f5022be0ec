//! A timeline from a recorded event stream (`record --format ndjson`, then `export --format
//! perfetto`): each lock and release line becomes the kernel event again and goes through a
//! [`Ledger`], so waits, holds and blockers are paired exactly as while recording.
//!
//! Nothing is looked up on this machine: the processes and files of the recording may be gone, or
//! be others by now. Locks are named by the basename in the events; `dev` is the userspace device
//! number the lines carry.

use std::io::{BufRead, Write};

use locktrace_report::glob_match;
use serde_json::Value;
use tracer_common::{COMM_LEN, Event, NAME_LEN, NO_STACK, event_flag, kind};

use super::{Stats, Timeline};
use crate::{kernel, ledger::Ledger, process::Processes};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("reading the events: {0}")]
    Read(#[source] std::io::Error),
    #[error("line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("writing the timeline: {0}")]
    Write(#[source] std::io::Error),
}

/// Reads an ndjson event stream and writes its timeline to `out`; only locks whose basename or
/// path matches the glob `lock`, if given.
pub fn from_ndjson<W: Write>(
    input: impl BufRead,
    out: W,
    lock: Option<&str>,
) -> Result<(W, Stats), EventsError> {
    let mut ledger =
        Ledger::with_processes(Processes::new(|_| Default::default())).with_intervals();
    let mut timeline = Timeline::new(out);
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(EventsError::Read)?;
        let at = |what: String| EventsError::Line { line: i + 1, what };
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|e| at(format!("not JSON: {e}")))?;
        let Some(ev) = event(&value).map_err(at)? else {
            continue;
        };
        ledger.record(&ev);
        for iv in ledger.take_intervals() {
            let keep = lock.is_none_or(|p| {
                glob_match(p, &iv.lock.name)
                    || iv
                        .lock
                        .path
                        .as_deref()
                        .is_some_and(|path| glob_match(p, path))
            });
            if keep {
                timeline.add(&iv).map_err(EventsError::Write)?;
            }
        }
    }
    let stats = timeline.stats();
    let out = timeline.finish().map_err(EventsError::Write)?;
    Ok((out, stats))
}

/// The kernel event a line stands for; `None` for lines that are no lock or release event (the
/// final report).
fn event(v: &Value) -> Result<Option<Event>, String> {
    let what = v
        .get("event")
        .and_then(Value::as_str)
        .ok_or("no \"event\" field: not a locktrace event stream")?;
    let kind = match what {
        "lock" => kind::LOCK,
        "release_unlock" => kind::RELEASE_UNLOCK,
        "release_close" => kind::RELEASE_CLOSE,
        "release_exit" => kind::RELEASE_EXIT,
        _ => return Ok(None),
    };
    let uint = |field: &str| -> Result<u64, String> {
        match v.get(field) {
            Some(x) => x
                .as_u64()
                .ok_or_else(|| format!("\"{field}\" is not a non-negative integer")),
            None if field == "owner" => Err("no \"owner\" field (recorded by a locktrace \
                 older than the timeline; record again)"
                .into()),
            None => Err(format!("no \"{field}\" field")),
        }
    };
    let small = |field: &str| -> Result<u32, String> {
        u32::try_from(uint(field)?).map_err(|_| format!("\"{field}\" is out of range"))
    };
    let int = |field: &str| -> Result<i32, String> {
        v.get(field)
            .and_then(Value::as_i64)
            .and_then(|x| i32::try_from(x).ok())
            .ok_or_else(|| format!("\"{field}\" is missing or not a 32-bit integer"))
    };
    let text = |field: &str| -> Result<&str, String> {
        v.get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("\"{field}\" is missing or not a string"))
    };
    let name = text("name")?;
    let mut ev = Event {
        start_ns: uint("start_ns")?,
        end_ns: uint("end_ns")?,
        dev: kernel::kernel_dev(uint("dev")?),
        ino: uint("ino")?,
        owner: uint("owner")?,
        pid: small("pid")?,
        tid: small("tid")?,
        // No fd: the ledger would otherwise ask /proc of this machine for the file's path.
        fd: -1,
        ret: int("ret")?,
        kind,
        cmd: small("cmd")?,
        lock_type: small("lock_type")?,
        flags: if name.is_empty() {
            event_flag::NAME_MISSING
        } else {
            0
        },
        stack_id: NO_STACK,
        _reserved: 0,
        comm: [0; COMM_LEN],
        name: [0; NAME_LEN],
    };
    fill(&mut ev.comm, text("comm")?);
    fill(&mut ev.name, name);
    Ok(Some(ev))
}

/// `s` NUL-padded into `buf`, cut to fit (as the kernel cuts names).
fn fill(buf: &mut [u8], s: &str) {
    let n = s.len().min(buf.len());
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
}
