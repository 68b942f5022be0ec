//! What worker processes tell the parent: one JSON record per line in their events file, plus
//! `ready` on stdout; the parent answers `go` and, for readers, `stop` on their stdin.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use store_core::{Observer, StoreEvent};

use crate::error::{Context, Error, Result};

pub const READY: &str = "ready";
pub const GO: &str = "go";
pub const STOP: &str = "stop";

/// What a worker process does: one pull, or reader rounds until `stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Pull,
    Read,
}

impl Role {
    /// The `--role` value.
    pub fn name(self) -> &'static str {
        match self {
            Role::Pull => "pull",
            Role::Read => "read",
        }
    }
}

/// A reader's store operation, each timed by the reader around the store-core call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderOp {
    /// `Store::layers`: what `podman images`/`podman run` do to resolve layers.
    ListLayers,
    /// `Store::create_container`: the store half of `podman run`.
    CreateContainer,
    /// `Store::delete_container`: the store half of `podman rm`.
    DeleteContainer,
}

impl ReaderOp {
    pub const ALL: [ReaderOp; 3] = [
        ReaderOp::ListLayers,
        ReaderOp::CreateContainer,
        ReaderOp::DeleteContainer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReaderOp::ListLayers => "list layers",
            ReaderOp::CreateContainer => "create container",
            ReaderOp::DeleteContainer => "delete container",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A store-core observer event (store clock: CLOCK_MONOTONIC in the worker).
    Store { event: StoreEvent },
    /// A finished pull, timed by the worker around `oci::pull`.
    Pull {
        image: String,
        start_mono_ns: u64,
        duration_ns: u64,
        bytes: u64,
        layers_created: usize,
        layers_reused: usize,
    },
    /// One reader operation; `error` is set when the store refused it.
    Op {
        op: ReaderOp,
        start_mono_ns: u64,
        duration_ns: u64,
        error: Option<String>,
    },
    /// The worker's fatal error, also printed on its stderr.
    Error { message: String },
}

/// Appends records to a worker's events file; doubles as the store observer.
///
/// Observer callbacks run on the store's thread, some while a lock is held, so they only push the
/// record onto a buffer: serializing, a write(2), or even waking the writer thread there would
/// lengthen the holds we measure (a woken thread can preempt the lock holder on its CPU). The
/// writer thread collects the buffer on its own every [`Sink::PERIOD`].
pub struct Sink {
    shared: Arc<(Mutex<Pending>, Condvar)>,
    writer: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

#[derive(Default)]
struct Pending {
    records: Vec<Record>,
    closed: bool,
}

impl Sink {
    const PERIOD: Duration = Duration::from_millis(50);

    pub fn create(path: &Path) -> Result<Sink> {
        let file = File::create(path)
            .with_context(|| format!("creating events file {}", path.display()))?;
        let shared = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        let writer = std::thread::spawn(move || {
            let written = write_batches(file, &theirs);
            // A writer that failed takes no more records, so they cannot pile up in memory.
            theirs.0.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            written
        });
        Ok(Sink {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    pub fn write(&self, record: Record) {
        let mut p = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        // After `finish` nothing is written any more; `finish` reports why it ended.
        if !p.closed {
            p.records.push(record);
        }
    }

    /// Waits for every record to be written and synced; fails with the writer's error, e.g. a
    /// full disk.
    pub fn finish(&self) -> Result<()> {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.1.notify_all();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        match writer.map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e).context("writing events file"),
            Some(Err(_)) => Err(Error::Worker("events writer thread panicked".into())),
        }
    }
}

fn write_batches(file: File, shared: &(Mutex<Pending>, Condvar)) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(64 << 10, file);
    let (pending, wake) = shared;
    loop {
        let (batch, closed) = {
            let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
            if !p.closed {
                p = wake
                    .wait_timeout(p, Sink::PERIOD)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            (std::mem::take(&mut p.records), p.closed)
        };
        for record in &batch {
            serde_json::to_writer(&mut w, record)?;
            w.write_all(b"\n")?;
        }
        if closed {
            break;
        }
    }
    w.flush()?;
    w.get_ref().sync_data()
}

impl Drop for Sink {
    /// A sink dropped without `finish` (an early error) still stops its writer thread, which then
    /// writes what it has.
    fn drop(&mut self) {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.1.notify_all();
    }
}

impl Observer for Sink {
    fn event(&self, ev: &StoreEvent) {
        self.write(Record::Store { event: ev.clone() });
    }
}

/// Reads an events file; a torn last line (worker killed mid-write) is skipped, not fatal.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut records = Vec::new();
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<io::Result<_>>()
        .with_context(|| format!("reading {}", path.display()))?;
    let last = lines.len().saturating_sub(1);
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(r) => records.push(r),
            Err(_) if n == last => break,
            Err(e) => {
                return Err(e).with_context(|| format!("{}:{}: bad record", path.display(), n + 1));
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: u64) -> Record {
        Record::Op {
            op: ReaderOp::ListLayers,
            start_mono_ns: n,
            duration_ns: 1,
            error: None,
        }
    }

    #[test]
    fn sink_writes_every_record_in_order_across_batches_and_nothing_after_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let sink = Arc::new(Sink::create(&path).unwrap());
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        sink.write(op(t * 1000 + i));
                        if i % 100 == 0 {
                            // Spread the records over several of the writer's batches.
                            std::thread::sleep(Sink::PERIOD);
                        }
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        sink.finish().unwrap();
        sink.write(op(99_999));
        let starts: Vec<u64> = read_records(&path)
            .unwrap()
            .into_iter()
            .map(|r| match r {
                Record::Op { start_mono_ns, .. } => start_mono_ns,
                other => panic!("unexpected record {other:?}"),
            })
            .collect();
        assert_eq!(starts.len(), 1000);
        for t in 0..2u64 {
            let mine: Vec<u64> = starts.iter().copied().filter(|s| s / 1000 == t).collect();
            assert_eq!(mine, (0..500).map(|i| t * 1000 + i).collect::<Vec<_>>());
        }
    }
}
