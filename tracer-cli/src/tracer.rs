//! Loads the embedded eBPF object, configures it for this kernel and filter, attaches it and hands
//! out its events.

use std::{
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
};
use tracer_common::{
    Config, Event, HeldInfo, HeldKey, InodeKey, NAME_LEN, PathRecord, counter, option,
    summary::{ActorTotals, BucketTotals, LockKey, LockTotals, MetricKey},
};

use crate::{
    Error,
    attach::{self, AttachMode, AttachRequest, Skipped},
    filter::Filter,
    kernel,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub ringbuf_full: u64,
    pub map_full: u64,
    pub read_failed: u64,
    pub stack_lost: u64,
}

/// Distinct user stacks the kernel keeps with `--stacks`: 16 MiB of map (127 frames each). A stack
/// whose hash bucket is taken by another is lost and counted, never swapped for a wrong one.
pub const STACK_ENTRIES: u32 = 16384;

/// Summary mode's map sizes: lock files × modes, histogram buckets in use (a lock mode's samples
/// spread over a few dozen), and per-process shares. A full map is a counted drop. The maps are
/// per CPU and preallocated: about 0.5 MiB per CPU.
pub const SUMMARY_LOCK_ENTRIES: u32 = 1024;
pub const SUMMARY_BUCKET_ENTRIES: u32 = 16384;
pub const SUMMARY_ACTOR_ENTRIES: u32 = 4096;
/// Threads that can be inside a lock call (event mode) or waiting for a lock (summary mode) at once;
/// one more is a counted `map_full`.
pub const THREAD_ENTRIES: u32 = 16384;

/// What the kernel side captures beyond the lock events themselves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// Each lock call's user stack (`--stacks`).
    pub stacks: bool,
    /// Aggregate in kernel maps instead of sending events (`--summary`).
    pub summary: bool,
}

impl Capture {
    fn options(self) -> u32 {
        let mut options = 0;
        if self.stacks {
            options |= option::USER_STACKS;
        }
        if self.summary {
            options |= option::SUMMARY;
        }
        options
    }
}

/// Summary mode's aggregates, summed over CPUs (the extremes taken over CPUs).
#[derive(Debug, Default)]
pub struct KernelSummary {
    pub locks: Vec<(LockKey, LockTotals)>,
    pub buckets: Vec<(MetricKey, BucketTotals)>,
    pub actors: Vec<(MetricKey, ActorTotals)>,
    /// Locks held when read: their holds have not ended yet.
    pub held: u64,
}

/// What the kernel side sends.
pub enum Record {
    /// A lock call or a release.
    Lock(Event),
    /// A traced file's path, once per inode, before its first lock event.
    Path(Box<PathRecord>),
}

pub struct Tracer {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub mode: AttachMode,
    /// Why preferred attach modes were not used (empty when the first one worked).
    pub skipped: Vec<Skipped>,
}

/// Why the eBPF object could not be loaded (its maps created), before any program is.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// EPERM or EACCES creating a map: missing privileges, or the locked-memory limit that kernels
    /// before 5.11 charge maps to.
    #[error("loading the eBPF object: the kernel refused to create map {map}: {errno}")]
    MapRefused { map: String, errno: std::io::Error },
    #[error("loading the eBPF object: {}", attach::one_line(.0))]
    Object(aya::EbpfError),
}

impl From<aya::EbpfError> for LoadError {
    fn from(error: aya::EbpfError) -> Self {
        match error {
            aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error })
                if matches!(io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES)) =>
            {
                LoadError::MapRefused {
                    map: name,
                    errno: io_error,
                }
            }
            error => LoadError::Object(error),
        }
    }
}

/// Whether this process may load tracing programs.
pub fn privileged() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    caps & (1 << CAP_BPF) != 0 && caps & (1 << CAP_PERFMON) != 0
}

impl Tracer {
    /// Loads, configures and attaches the programs, capturing what `capture` asks for.
    pub fn start(
        filter: &Filter,
        request: AttachRequest,
        capture: Capture,
    ) -> Result<Tracer, Error> {
        if !privileged() {
            return Err(Error::Privileges);
        }
        kernel::ensure_tracefs()?;
        let compiled = filter.compile()?;
        let config = Config {
            flags: compiled.flags,
            options: capture.options(),
            cgroup_id: compiled.cgroup_id,
            offsets: kernel::offsets()?,
        };
        let mut ebpf = load(&config, capture)?;
        {
            let mut names: HashMap<_, [u8; NAME_LEN], u8> = map(&mut ebpf, "NAMES")?;
            for name in &compiled.names {
                names.insert(name, 1, 0).map_err(|error| Error::Map {
                    map: "NAMES",
                    error,
                })?;
            }
        }
        {
            let mut inodes: HashMap<_, InodeKey, u8> = map(&mut ebpf, "INODES")?;
            for key in &compiled.inodes {
                inodes.insert(key, 1, 0).map_err(|error| Error::Map {
                    map: "INODES",
                    error,
                })?;
            }
        }
        let (mode, skipped) = attach::attach(
            &mut ebpf,
            request,
            !compiled.pids.is_empty(),
            capture.summary,
        )?;
        // Kernel debug messages are optional: a kernel build without them still traces.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        let events = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| Error::MapMissing("EVENTS"))?,
        )
        .map_err(|error| Error::Map {
            map: "EVENTS",
            error,
        })?;
        let mut tracer = Tracer {
            ebpf,
            events,
            logger,
            mode,
            skipped,
        };
        for pid in compiled.pids {
            tracer.follow(pid)?;
        }
        Ok(tracer)
    }

    /// Adds a process (and, through the fork hook, its future children) to the pid filter.
    pub fn follow(&mut self, pid: u32) -> Result<(), Error> {
        let mut pids: HashMap<_, u32, u8> = map(&mut self.ebpf, "PIDS")?;
        pids.insert(pid, 1, 0)
            .map_err(|error| Error::Map { map: "PIDS", error })
    }

    /// Waits up to `timeout` for events and passes each to `sink`. Returns how many it passed.
    pub fn poll(&mut self, timeout: Duration, mut sink: impl FnMut(Record)) -> usize {
        let mut fds = [libc::pollfd {
            fd: self.events.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: fds is one valid pollfd, matching the count of 1, alive for the call. A failed
        // or interrupted poll only means the drain below finds what is there.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        let mut n = 0;
        while let Some(item) = self.events.next() {
            // The kernel side sends two record types of different sizes.
            let record = if let Some(ev) = record_as::<Event>(&item) {
                Record::Lock(ev)
            } else if let Some(path) = record_as::<PathRecord>(&item) {
                Record::Path(Box::new(path))
            } else {
                continue;
            };
            sink(record);
            n += 1;
        }
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
        n
    }

    pub fn counters(&self) -> Result<Counters, Error> {
        let map_ref = self
            .ebpf
            .map("COUNTERS")
            .ok_or_else(|| Error::MapMissing("COUNTERS"))?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map_ref).map_err(|error| Error::Map {
                map: "COUNTERS",
                error,
            })?;
        let sum = |i: u32| -> Result<u64, Error> {
            Ok(array
                .get(&i, 0)
                .map_err(|error| Error::Map {
                    map: "COUNTERS",
                    error,
                })?
                .iter()
                .sum())
        };
        Ok(Counters {
            ringbuf_full: sum(counter::RINGBUF_FULL)?,
            map_full: sum(counter::MAP_FULL)?,
            read_failed: sum(counter::READ_FAILED)?,
            stack_lost: sum(counter::STACK_LOST)?,
        })
    }

    /// Summary mode's aggregates as they stand.
    pub fn summary(&self) -> Result<KernelSummary, Error> {
        Ok(KernelSummary {
            locks: per_cpu(&self.ebpf, "SUMMARY_LOCKS", |a: &mut LockTotals, b| {
                for (x, y) in [(&mut a.wait, &b.wait), (&mut a.hold, &b.hold)] {
                    if y.count > 0 {
                        x.min_ns = if x.count == 0 {
                            y.min_ns
                        } else {
                            x.min_ns.min(y.min_ns)
                        };
                    }
                    x.count += y.count;
                    x.total_ns += y.total_ns;
                    x.max_ns = x.max_ns.max(y.max_ns);
                }
                a.acquired += b.acquired;
                a.refused += b.refused;
                a.errors += b.errors;
                a.interrupted += b.interrupted;
                a.edeadlk += b.edeadlk;
            })?,
            buckets: per_cpu(&self.ebpf, "SUMMARY_BUCKETS", |a: &mut BucketTotals, b| {
                a.count += b.count;
                a.total_ns += b.total_ns;
            })?,
            actors: per_cpu(&self.ebpf, "SUMMARY_ACTORS", |a: &mut ActorTotals, b| {
                if a.count == 0 {
                    a.comm = b.comm;
                }
                a.count += b.count;
                a.total_ns += b.total_ns;
            })?,
            held: {
                let map = self.ebpf.map("HELD").ok_or(Error::MapMissing("HELD"))?;
                let held: HashMap<_, HeldKey, HeldInfo> =
                    HashMap::try_from(map).map_err(|error| Error::Map { map: "HELD", error })?;
                held.keys().filter(Result::is_ok).count() as u64
            },
        })
    }

    /// The stack map, for a reader that outlives [`Tracer::poll`]'s borrow; `None` once taken.
    pub fn take_stacks(&mut self) -> Option<Result<StackTraceMap<MapData>, Error>> {
        let map = self.ebpf.take_map("STACKS")?;
        Some(StackTraceMap::try_from(map).map_err(|error| Error::Map {
            map: "STACKS",
            error,
        }))
    }
}

/// Every entry of a per-CPU hash map, its CPUs' values folded into the first by `add`. Entries
/// that vanish while being read (none do while tracing) are skipped.
fn per_cpu<K: aya::Pod, V: aya::Pod + Default>(
    ebpf: &Ebpf,
    name: &'static str,
    add: impl Fn(&mut V, &V),
) -> Result<Vec<(K, V)>, Error> {
    let map = ebpf.map(name).ok_or(Error::MapMissing(name))?;
    let map: PerCpuHashMap<_, K, V> =
        PerCpuHashMap::try_from(map).map_err(|error| Error::Map { map: name, error })?;
    Ok(map
        .iter()
        .filter_map(Result::ok)
        .map(|(key, values)| {
            let mut sum = V::default();
            for v in values.iter() {
                add(&mut sum, v);
            }
            (key, sum)
        })
        .collect())
}

/// A ring-buffer record as a `T`, when its length is `T`'s.
fn record_as<T: aya::Pod>(item: &[u8]) -> Option<T> {
    (item.len() == size_of::<T>()).then(|| {
        // SAFETY: item holds size_of::<T>() bytes and T: Pod accepts any bytes; read_unaligned
        // because ring-buffer records are only 8-byte aligned by contract.
        unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) }
    })
}

/// Loads the object (creating its maps, the ring buffer among them) without attaching anything;
/// the maps of what `capture` leaves out get one entry.
pub fn load(config: &Config, capture: Capture) -> Result<Ebpf, LoadError> {
    let sized = |on: bool, entries: u32| if on { entries } else { 1 };
    Ok(EbpfLoader::new()
        .override_global("CONFIG", config, true)
        .map_max_entries("STACKS", sized(capture.stacks, STACK_ENTRIES))
        .map_max_entries("PENDING", sized(!capture.summary, THREAD_ENTRIES))
        .map_max_entries("WAITING", sized(capture.summary, THREAD_ENTRIES))
        .map_max_entries(
            "SUMMARY_LOCKS",
            sized(capture.summary, SUMMARY_LOCK_ENTRIES),
        )
        .map_max_entries(
            "SUMMARY_BUCKETS",
            sized(capture.summary, SUMMARY_BUCKET_ENTRIES),
        )
        .map_max_entries(
            "SUMMARY_ACTORS",
            sized(capture.summary, SUMMARY_ACTOR_ENTRIES),
        )
        .load(OBJECT)?)
}

fn map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, Error> {
    let m = ebpf.map_mut(name).ok_or_else(|| Error::MapMissing(name))?;
    HashMap::try_from(m).map_err(|error| Error::Map { map: name, error })
}
