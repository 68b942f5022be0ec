//! What worker processes tell the parent: one JSON record per line in their events file, plus
//! `ready` on stdout; the parent answers `go` and, for readers, `stop` on their stdin.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use store_core::{Observer, StoreEvent};

pub const READY: &str = "ready";
pub const GO: &str = "go";
pub const STOP: &str = "stop";

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
/// Observer callbacks run on the store's thread, some while a lock is held, so they only hand the
/// record to a writer thread: serializing or a write(2) there would lengthen the holds we measure.
pub struct Sink {
    tx: Mutex<Option<mpsc::Sender<Record>>>,
    writer: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

impl Sink {
    pub fn create(path: &Path) -> Result<Sink> {
        let file = File::create(path)
            .with_context(|| format!("creating events file {}", path.display()))?;
        let (tx, rx) = mpsc::channel::<Record>();
        let writer = std::thread::spawn(move || {
            let mut w = BufWriter::with_capacity(64 << 10, file);
            for record in rx {
                serde_json::to_writer(&mut w, &record)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            w.get_ref().sync_data()
        });
        Ok(Sink {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    pub fn write(&self, record: Record) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            // A send only fails once the writer died; `finish` reports why.
            let _ = tx.send(record);
        }
    }

    /// Waits for every record to be written and synced; fails with the writer's error, e.g. a
    /// full disk.
    pub fn finish(&self) -> Result<()> {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        match writer.map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e).context("writing events file"),
            Some(Err(_)) => anyhow::bail!("events writer thread panicked"),
        }
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
