//! The timeline of a recording as a Perfetto trace (`record --timeline`, `export --format
//! perfetto`): every wait and hold the ledger completes ([`crate::ledger::Interval`]) becomes a
//! slice, written as it completes, so a recording of any length keeps only its open tracks in
//! memory. The protobuf encoding (and why protobuf, not JSON) is
//! [`locktrace_report::perfetto`]; this module decides the tracks and flows.
//!
//! - One track per lock file (named by its path), with child tracks `holds` and `waits`: Perfetto
//!   draws slices on one track as a stack that must nest, and read holds of one file (or waits
//!   behind one holder) overlap without nesting, so each slice goes to the first child track
//!   ("lane") whose previous slice ended before it began; write holds, being exclusive, stay on
//!   the first. Slices are named `MODE METRIC: COMM PID`.
//! - One track per process (named by its comm, as Perfetto's process tracks are), with lanes
//!   named `locks` carrying the same waits and holds named `MODE METRIC: LOCK`.
//! - A flow (arrow) from each holder that blocked a wait to the hold the wait was granted: it
//!   leaves a `release` instant at the holder's release on the holder's lane (the hold's slice
//!   was written when it ended, before anyone knew whom it blocked) and ends at the waiter's hold.
//!
//! Timestamps are the kernel's CLOCK_MONOTONIC nanoseconds, written as the trace's default clock.

mod events;

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
};

use locktrace_report::{
    Metric,
    perfetto::{
        TraceWriter,
        proto::{
            DebugAnnotation, ProcessDescriptor, TYPE_INSTANT, TYPE_SLICE_BEGIN, TYPE_SLICE_END,
            TrackDescriptor, TrackEvent,
        },
    },
};

pub use events::{EventsError, from_ndjson};

use crate::{holders::FileId, ledger::Interval};

/// Released holds remembered for the flows of waits that end later (oldest forgotten first).
pub const KEEP_HOLDS: usize = 65_536;
/// Flows waiting for a hold to end (its own, or the waiter's it leads to), at most.
pub const KEEP_PENDING: usize = 65_536;

/// A hold: (file, owner, start).
type HoldId = (FileId, u64, u64);

/// What a timeline holds, for the closing line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Waits and holds (each drawn twice: on its lock's track and on its process's).
    pub slices: u64,
    pub flows: u64,
    /// Flows not drawn: the blocking hold was forgotten, or too many were pending.
    pub flows_lost: u64,
}

/// Child tracks of one parent, each with the end of its last slice.
struct Lanes {
    parent: u64,
    name: &'static str,
    lanes: Vec<(u64, u64)>,
}

impl Lanes {
    fn new(parent: u64, name: &'static str) -> Self {
        Lanes {
            parent,
            name,
            lanes: Vec::new(),
        }
    }
}

struct LockTracks {
    holds: Lanes,
    waits: Lanes,
}

/// A Perfetto trace being written from intervals.
pub struct Timeline<W: Write> {
    writer: TraceWriter<W>,
    next_uuid: u64,
    locks: HashMap<FileId, LockTracks>,
    processes: HashMap<u32, Lanes>,
    /// Lock lanes of released holds, by hold.
    released: HashMap<HoldId, u64>,
    released_order: VecDeque<HoldId>,
    /// Flows leaving holds not yet ended (events out of order), put on their end.
    pending_out: HashMap<HoldId, Vec<u64>>,
    /// Flows arriving at waiters' holds not yet ended, put on their begin.
    pending_in: HashMap<HoldId, Vec<u64>>,
    next_flow: u64,
    stats: Stats,
}

impl Timeline<BufWriter<File>> {
    /// A timeline written to a new file at `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Timeline::new(BufWriter::new(File::create(path)?)))
    }
}

impl<W: Write> Timeline<W> {
    pub fn new(out: W) -> Self {
        Timeline {
            writer: TraceWriter::new(out),
            next_uuid: 1,
            locks: HashMap::new(),
            processes: HashMap::new(),
            released: HashMap::new(),
            released_order: VecDeque::new(),
            pending_out: HashMap::new(),
            pending_in: HashMap::new(),
            next_flow: 1,
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Writes one completed wait or hold (and the flows it closes or opens).
    pub fn add(&mut self, iv: &Interval) -> io::Result<()> {
        let lock_lane = self.lock_lane(iv)?;
        let process_lane = self.process_lane(iv)?;
        let id: HoldId = (iv.file, iv.owner, iv.start_ns);
        let (mut flows_in, mut flows_out) = (Vec::new(), Vec::new());
        match iv.metric {
            Metric::Hold => {
                flows_in = self.pending_in.remove(&id).unwrap_or_default();
                flows_out = self.pending_out.remove(&id).unwrap_or_default();
                self.remember_released(id, lock_lane);
            }
            Metric::Wait if iv.acquired => self.flows(iv)?,
            Metric::Wait => {}
        }
        let metric = iv.metric.to_string();
        let mut args = vec![
            DebugAnnotation::string("mode", &iv.mode.to_string()),
            DebugAnnotation::uint("pid", iv.pid.into()),
            DebugAnnotation::uint("tid", iv.tid.into()),
            DebugAnnotation::string("comm", &iv.comm),
        ];
        if iv.metric == Metric::Wait {
            let pids: Vec<String> = iv.blocked_by.iter().map(|b| b.pid.to_string()).collect();
            args.push(DebugAnnotation::string("blocked_by", &pids.join(",")));
        }
        let lock_name = iv.lock.path.as_deref().unwrap_or(&iv.lock.name);
        let on_lock = format!("{} {metric}: {} {}", iv.mode, iv.comm, iv.pid);
        let on_process = format!("{} {metric}: {}", iv.mode, iv.lock.name);
        let mut process_args = args.clone();
        process_args.push(DebugAnnotation::string("lock", lock_name));
        for (track, name, args, flows_in, flows_out) in [
            (lock_lane, on_lock, args, flows_in, flows_out),
            (
                process_lane,
                on_process,
                process_args,
                Vec::new(),
                Vec::new(),
            ),
        ] {
            let begin = TrackEvent {
                r#type: Some(TYPE_SLICE_BEGIN),
                track_uuid: Some(track),
                categories: vec![metric.clone()],
                name: Some(name),
                debug_annotations: args,
                terminating_flow_ids: flows_in,
                ..TrackEvent::default()
            };
            let end = TrackEvent {
                r#type: Some(TYPE_SLICE_END),
                track_uuid: Some(track),
                flow_ids: flows_out,
                ..TrackEvent::default()
            };
            self.writer
                .events(vec![(iv.start_ns, begin), (iv.end_ns, end)])?;
        }
        self.stats.slices += 1;
        Ok(())
    }

    /// A granted wait's flows: from each hold that blocked it to the hold it starts.
    fn flows(&mut self, iv: &Interval) -> io::Result<()> {
        let granted: HoldId = (iv.file, iv.owner, iv.end_ns);
        for b in &iv.blocked_by {
            let from: HoldId = (iv.file, b.owner, b.since_ns);
            let flow = self.next_flow;
            let pending = self.pending_in.len() + self.pending_out.len();
            match b.until_ns {
                Some(until) => {
                    let Some(&lane) = self.released.get(&from) else {
                        self.stats.flows_lost += 1;
                        continue;
                    };
                    let release = TrackEvent {
                        r#type: Some(TYPE_INSTANT),
                        track_uuid: Some(lane),
                        name: Some("release".into()),
                        flow_ids: vec![flow],
                        ..TrackEvent::default()
                    };
                    self.writer.events(vec![(until, release)])?;
                }
                None if pending < KEEP_PENDING => {
                    self.pending_out.entry(from).or_default().push(flow)
                }
                None => {
                    self.stats.flows_lost += 1;
                    continue;
                }
            }
            self.next_flow += 1;
            self.stats.flows += 1;
            self.pending_in.entry(granted).or_default().push(flow);
        }
        Ok(())
    }

    fn remember_released(&mut self, id: HoldId, lane: u64) {
        if self.released.insert(id, lane).is_none() {
            self.released_order.push_back(id);
        }
        while self.released_order.len() > KEEP_HOLDS {
            if let Some(old) = self.released_order.pop_front() {
                self.released.remove(&old);
            }
        }
    }

    fn uuid(&mut self) -> u64 {
        let uuid = self.next_uuid;
        self.next_uuid += 1;
        uuid
    }

    fn lock_lane(&mut self, iv: &Interval) -> io::Result<u64> {
        if !self.locks.contains_key(&iv.file) {
            let uuid = self.uuid();
            let name = iv.lock.path.clone().unwrap_or_else(|| iv.lock.name.clone());
            self.writer.track(TrackDescriptor {
                uuid: Some(uuid),
                name: Some(name),
                ..TrackDescriptor::default()
            })?;
            let tracks = LockTracks {
                holds: Lanes::new(uuid, "holds"),
                waits: Lanes::new(uuid, "waits"),
            };
            self.locks.insert(iv.file, tracks);
        }
        let Some(tracks) = self.locks.get_mut(&iv.file) else {
            return Err(io::Error::other("lock track vanished"));
        };
        let lanes = match iv.metric {
            Metric::Hold => &mut tracks.holds,
            Metric::Wait => &mut tracks.waits,
        };
        let (lane, new) = lane(lanes, &mut self.next_uuid, iv);
        if let Some(descriptor) = new {
            self.writer.track(descriptor)?;
        }
        Ok(lane)
    }

    fn process_lane(&mut self, iv: &Interval) -> io::Result<u64> {
        if !self.processes.contains_key(&iv.pid) {
            let uuid = self.uuid();
            self.writer.track(TrackDescriptor {
                uuid: Some(uuid),
                process: Some(ProcessDescriptor {
                    pid: Some(iv.pid as i32),
                    process_name: Some(iv.comm.clone()),
                }),
                ..TrackDescriptor::default()
            })?;
            self.processes.insert(iv.pid, Lanes::new(uuid, "locks"));
        }
        let Some(lanes) = self.processes.get_mut(&iv.pid) else {
            return Err(io::Error::other("process track vanished"));
        };
        let (lane, new) = lane(lanes, &mut self.next_uuid, iv);
        if let Some(descriptor) = new {
            self.writer.track(descriptor)?;
        }
        Ok(lane)
    }

    /// Writes what is buffered, so the file is a valid trace up to here.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Flushes and hands back the output.
    pub fn finish(self) -> io::Result<W> {
        self.writer.finish()
    }
}

/// The first lane of `lanes` free over the interval (its last slice ended before the interval
/// began), or a new one and its descriptor; the lane is then busy until the interval's end.
fn lane(lanes: &mut Lanes, next_uuid: &mut u64, iv: &Interval) -> (u64, Option<TrackDescriptor>) {
    if let Some(free) = lanes.lanes.iter_mut().find(|(_, end)| *end < iv.start_ns) {
        free.1 = iv.end_ns;
        return (free.0, None);
    }
    let uuid = *next_uuid;
    *next_uuid += 1;
    lanes.lanes.push((uuid, iv.end_ns));
    let descriptor = TrackDescriptor {
        uuid: Some(uuid),
        parent_uuid: Some(lanes.parent),
        name: Some(lanes.name.to_owned()),
        ..TrackDescriptor::default()
    };
    (uuid, Some(descriptor))
}

#[cfg(test)]
mod tests;
