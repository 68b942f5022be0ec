//! The user stacks the kernel captured for `record --stacks`: read from the stack map by ID and
//! named while their process is still alive, once per process and stack.

use std::collections::HashMap;

use aya::maps::{MapData, StackTraceMap};
use locktrace_report::{Frames, LOST_STACK};
use tracer_common::{Event, F_UNLCK, kind};

use crate::symbolize::Symbolizer;

/// Distinct (process, stack) pairs named and kept; past this the cache starts over, so a long
/// system-wide run stays bounded at the cost of naming some stacks again.
const MAX_NAMED: usize = 65536;

pub struct Stacks {
    map: StackTraceMap<MapData>,
    symbolizer: Symbolizer,
    named: HashMap<(u32, u32), Frames>,
    lost: Frames,
    /// Stack IDs the map did not give back, or gave back empty (neither should happen: entries
    /// are never replaced, and a capture without user frames fails in the kernel).
    pub unreadable: u64,
}

impl Stacks {
    pub fn new(map: StackTraceMap<MapData>) -> Self {
        Stacks {
            map,
            symbolizer: Symbolizer::new(),
            named: HashMap::new(),
            lost: vec![LOST_STACK.to_string()].into(),
            unreadable: 0,
        }
    }

    /// The named stack of a lock call, leaf first; [`LOST_STACK`] when the kernel could not
    /// capture it. `None` for releases and unlock calls, which have no stack of their own.
    pub fn of(&mut self, ev: &Event) -> Option<Frames> {
        if ev.kind != kind::LOCK || ev.lock_type == F_UNLCK {
            return None;
        }
        let Ok(id) = u32::try_from(ev.stack_id) else {
            return Some(self.lost.clone());
        };
        if let Some(frames) = self.named.get(&(ev.pid, id)) {
            return Some(frames.clone());
        }
        let trace = match self.map.get(&id, 0) {
            Ok(trace) if !trace.frames().is_empty() => trace,
            _ => {
                self.unreadable += 1;
                return Some(self.lost.clone());
            }
        };
        // Leaf first, as captured; the symbolizer knows the frames past the leaf are return
        // addresses.
        let addrs: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
        let frames: Frames = self.symbolizer.symbolize(ev.pid, &addrs).into();
        if self.named.len() >= MAX_NAMED {
            self.named.clear();
        }
        self.named.insert((ev.pid, id), frames.clone());
        Some(frames)
    }

    /// Frames named and left unknown so far.
    pub fn symbolized(&self) -> crate::symbolize::Stats {
        self.symbolizer.stats()
    }
}
