use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Receives the store's own timings. Called synchronously on the thread doing the work, so keep it cheap.
pub trait Observer: Send + Sync {
    /// One finished measurement.
    fn event(&self, ev: &StoreEvent);
}

/// The store operation a measurement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    CreateLayer,
    DeleteLayer,
    CreateImage,
    CreateContainer,
    DeleteContainer,
    ReadLayers,
    ReadImages,
    ReadContainers,
    Pull,
    Recover,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// Time blocked in `fcntl(F_SETLKW)` for the kernel lock on `lock`.
    LockWait { lock: PathBuf, write: bool },
    /// From the return of `fcntl(F_SETLKW)` to the `close()` that released the kernel lock.
    LockHold { lock: PathBuf, write: bool },
    /// Unpacking a layer's tar stream.
    Extract,
    /// Making a new layer visible: conflict re-check, rename/record and metadata write, under `layers.lock`.
    Commit,
}

/// One measurement, on the same clock as `bpf_ktime_get_ns` (CLOCK_MONOTONIC). For lock events `tid` is the
/// thread that took the kernel lock (the hold ends when the process's last user of it closes the fd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreEvent {
    pub op: Op,
    pub kind: EventKind,
    pub start_mono_ns: u64,
    pub duration_ns: u64,
    pub pid: u32,
    pub tid: u32,
}

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn current_tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Sends events to an optional observer.
#[derive(Clone, Default)]
pub(crate) struct Emitter(pub(crate) Option<Arc<dyn Observer>>);

impl Emitter {
    pub(crate) fn emit(&self, op: Op, kind: EventKind, start_mono_ns: u64, end_mono_ns: u64) {
        self.emit_as(op, kind, start_mono_ns, end_mono_ns, current_tid());
    }

    pub(crate) fn emit_as(&self, op: Op, kind: EventKind, start: u64, end: u64, tid: u32) {
        if let Some(obs) = &self.0 {
            obs.event(&StoreEvent {
                op,
                kind,
                start_mono_ns: start,
                duration_ns: end.saturating_sub(start),
                pid: std::process::id(),
                tid,
            });
        }
    }

    /// Runs `f` and reports its duration as `kind`.
    pub(crate) fn timed<T>(&self, op: Op, kind: EventKind, f: impl FnOnce() -> T) -> T {
        let start = monotonic_ns();
        let out = f();
        self.emit(op, kind, start, monotonic_ns());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let ev = StoreEvent {
            op: Op::CreateLayer,
            kind: EventKind::LockHold {
                lock: PathBuf::from("/g/overlay-layers/layers.lock"),
                write: true,
            },
            start_mono_ns: 5,
            duration_ns: 7,
            pid: 1,
            tid: 2,
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert!(line.contains(r#""type":"lock_hold""#), "{line}");
        assert_eq!(serde_json::from_str::<StoreEvent>(&line).unwrap(), ev);
        let extract = StoreEvent {
            kind: EventKind::Extract,
            ..ev
        };
        let line = serde_json::to_string(&extract).unwrap();
        assert_eq!(serde_json::from_str::<StoreEvent>(&line).unwrap(), extract);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
