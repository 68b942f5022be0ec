//! POSIX lock files with containers/storage's semantics, and the store's lock order.
//!
//! Each lock file is locked with `fcntl(F_SETLKW)` (`F_RDLCK` or `F_WRLCK`, whole file) on an fd opened at
//! acquire time; the lock is released by **closing** that fd, never by `F_UNLCK`, exactly as
//! containers/storage does (tracers pair the `fcntl` with the `close`). POSIX locks belong to the process,
//! so an in-process reader/writer lock with a reader count sits in front: the first reader (or the writer)
//! takes the kernel lock, later readers in the same process only bump the count, the last one closes the fd.
//! One process therefore holds at most one kernel lock per path, and [`EventKind::LockWait`] /
//! [`EventKind::LockHold`] are reported once per kernel lock, labelled with the operation and thread that
//! took it (a read lock shared by several threads is released by whichever drops last).
//!
//! # Lock order
//!
//! A thread may only take a blocking lock whose [`Rank`] is strictly greater than every lock it holds:
//!
//! ```text
//! storage.lock  →  layers.lock  →  images.lock  →  containers.lock
//! ```
//!
//! This is checked on every acquire with a thread-local stack of held ranks. A violation (including taking
//! the same lock twice on one thread, which could deadlock behind a queued writer) panics in debug builds
//! and returns [`StoreError::LockOrder`] in release builds. Guards are `!Send` so the stack stays truthful.
//!
//! Writers also store a fresh random token in the file ([`WriteGuard::record_write`]); other processes
//! compare it with the token they last saw ([`ReadGuard::last_write`]) to know they must reload metadata.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Weak};

use crate::error::{IoContext, StoreError};
use crate::observer::{Emitter, EventKind, Observer, Op, current_tid, monotonic_ns};
use crate::sys;

/// Position of a lock in the store's lock order; locks must be taken in increasing rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// `storage.lock`, the graph root lock.
    Storage = 0,
    /// `overlay-layers/layers.lock`.
    Layers = 1,
    /// `overlay-images/images.lock`.
    Images = 2,
    /// `overlay-containers/containers.lock`.
    Containers = 3,
}

/// Size of the last-writer token stored at the start of every lock file.
pub const TOKEN_LEN: usize = 64;

/// The last-writer token read from a lock file; changes whenever a writer records a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastWrite([u8; TOKEN_LEN]);

/// A handle on one lock file. Handles for the same path in one process share their state.
#[derive(Clone)]
pub struct LockFile {
    shared: Arc<Shared>,
    emitter: Emitter,
}

struct Shared {
    path: PathBuf,
    rank: Rank,
    state: Mutex<State>,
    cond: Condvar,
}

#[derive(Default)]
struct State {
    readers: usize,
    writer: bool,
    /// A reader is inside `fcntl` for the kernel read lock; other readers wait for it.
    acquiring: bool,
    waiting_writers: usize,
    kernel: Option<KernelLock>,
}

/// The kernel lock this process holds on the file.
struct KernelLock {
    fd: OwnedFd,
    write: bool,
    acquired_ns: u64,
    op: Op,
    tid: u32,
    emitter: Emitter,
}

static REGISTRY: LazyLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = LazyLock::new(Default::default);

thread_local! {
    static HELD: RefCell<Vec<(Rank, u64)>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn lock_state(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding this mutex leaves counters consistent (they are updated in one step).
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl LockFile {
    /// A handle on the lock file at `path` (created on first acquire), with its place in the lock order.
    /// Timings of kernel locks taken through this handle go to `observer`.
    pub fn new(path: &Path, rank: Rank, observer: Option<Arc<dyn Observer>>) -> LockFile {
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        let shared = match reg.get(path).and_then(Weak::upgrade) {
            Some(s) => s,
            None => {
                reg.retain(|_, w| w.strong_count() > 0);
                let s = Arc::new(Shared {
                    path: path.to_path_buf(),
                    rank,
                    state: Mutex::default(),
                    cond: Condvar::new(),
                });
                reg.insert(path.to_path_buf(), Arc::downgrade(&s));
                s
            }
        };
        LockFile {
            shared,
            emitter: Emitter(observer),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Takes a shared lock; `op` labels the timings.
    pub fn read(&self, op: Op) -> Result<ReadGuard, StoreError> {
        let order_id = push_rank(self.shared.rank, &self.shared.path)?;
        let sh = &*self.shared;
        let mut st = lock_state(sh);
        // Writer preference: a queued writer stops new readers so it cannot starve.
        while st.writer || st.waiting_writers > 0 || st.acquiring {
            st = sh.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.readers += 1;
        if st.readers == 1 {
            st.acquiring = true;
            drop(st);
            let res = self.kernel_lock(false, op);
            st = lock_state(sh);
            st.acquiring = false;
            sh.cond.notify_all();
            match res {
                Ok(k) => st.kernel = Some(k),
                Err(e) => {
                    // No kernel lock was taken, so there is no fd to close.
                    st.readers -= 1;
                    drop(st);
                    pop_rank(order_id);
                    return Err(e);
                }
            }
        }
        Ok(ReadGuard(self.guard(false, order_id)))
    }

    fn guard(&self, write: bool, order_id: u64) -> Guard {
        Guard {
            shared: Arc::clone(&self.shared),
            write,
            order_id,
            _not_send: PhantomData,
        }
    }

    /// Takes an exclusive lock; `op` labels the timings.
    pub fn write(&self, op: Op) -> Result<WriteGuard, StoreError> {
        let order_id = push_rank(self.shared.rank, &self.shared.path)?;
        let sh = &*self.shared;
        let mut st = lock_state(sh);
        st.waiting_writers += 1;
        while st.writer || st.readers > 0 || st.acquiring {
            st = sh.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.waiting_writers -= 1;
        st.writer = true;
        drop(st);
        let res = self.kernel_lock(true, op);
        let mut st = lock_state(sh);
        match res {
            Ok(k) => {
                st.kernel = Some(k);
                Ok(WriteGuard(self.guard(true, order_id)))
            }
            Err(e) => {
                st.writer = false;
                sh.cond.notify_all();
                drop(st);
                pop_rank(order_id);
                Err(e)
            }
        }
    }

    /// Opens the file and blocks in `fcntl(F_SETLKW)`; the wait is timed exactly around that call.
    fn kernel_lock(&self, write: bool, op: Op) -> Result<KernelLock, StoreError> {
        let path = &self.shared.path;
        // O_CREAT only when missing: before Linux 6.12 it takes the directory's inode lock exclusively
        // even for an existing file, which would queue every acquire behind a metadata rename there.
        let fd = match sys::open(path, libc::O_RDWR, 0) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                sys::open(path, libc::O_RDWR | libc::O_CREAT, 0o644)
            }
            r => r,
        }
        .ctx(|| format!("opening lock file {}", path.display()))?;
        let fl = libc::flock {
            l_type: if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // A wait interrupted by a signal and retried counts as one wait from the first call.
        let start = monotonic_ns();
        let end = loop {
            // SAFETY: fd is open; fl is a valid flock.
            let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLKW, &fl) };
            let end = monotonic_ns();
            if r == 0 {
                break end;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(StoreError::io(format!("locking {}", path.display()), err));
            }
        };
        let tid = current_tid();
        let kind = EventKind::LockWait {
            lock: path.clone(),
            write,
        };
        self.emitter.emit_as(op, kind, start, end, tid);
        Ok(KernelLock {
            fd,
            write,
            acquired_ns: end,
            op,
            tid,
            emitter: self.emitter.clone(),
        })
    }
}

fn push_rank(rank: Rank, path: &Path) -> Result<u64, StoreError> {
    let held_max = HELD.with(|h| h.borrow().iter().map(|(r, _)| *r).max());
    if let Some(max) = held_max
        && max >= rank
    {
        let msg = format!(
            "taking {} ({rank:?}) while holding {max:?}; the order is Storage → Layers → Images → Containers",
            path.display()
        );
        if cfg!(debug_assertions) {
            panic!("lock order violation: {msg}");
        }
        return Err(StoreError::LockOrder(msg));
    }
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    HELD.with(|h| h.borrow_mut().push((rank, id)));
    Ok(id)
}

fn pop_rank(id: u64) {
    HELD.with(|h| h.borrow_mut().retain(|(_, i)| *i != id));
}

struct Guard {
    shared: Arc<Shared>,
    write: bool,
    order_id: u64,
    /// Guards must be dropped on the thread that took them (the held-rank stack is thread-local).
    _not_send: PhantomData<*const ()>,
}

impl Guard {
    fn last_write(&self) -> Result<LastWrite, StoreError> {
        let st = lock_state(&self.shared);
        let k = st
            .kernel
            .as_ref()
            .expect("a live guard implies a kernel lock");
        let mut buf = [0u8; TOKEN_LEN];
        // SAFETY: buf is writable for TOKEN_LEN bytes; a short read leaves zeros (fresh file).
        let n = unsafe { libc::pread(k.fd.as_raw_fd(), buf.as_mut_ptr().cast(), TOKEN_LEN, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return Err(StoreError::io(
                format!("reading {}", self.shared.path.display()),
                e,
            ));
        }
        Ok(LastWrite(buf))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let sh = &*self.shared;
        let mut st = lock_state(sh);
        let last = if self.write {
            st.writer = false;
            true
        } else {
            st.readers -= 1;
            st.readers == 0
        };
        let mut released = None;
        if last && let Some(k) = st.kernel.take() {
            let raw = k.fd.into_raw_fd();
            let end = monotonic_ns();
            // Closing the fd is what releases the kernel lock (never F_UNLCK). It happens under the
            // state mutex so no thread of ours can open a new fd for this path in between.
            // SAFETY: raw came from into_raw_fd and is closed exactly once.
            unsafe { libc::close(raw) };
            released = Some((k.op, k.write, k.acquired_ns, end, k.tid, k.emitter));
        }
        sh.cond.notify_all();
        drop(st);
        pop_rank(self.order_id);
        if let Some((op, write, start, end, tid, emitter)) = released {
            let kind = EventKind::LockHold {
                lock: sh.path.clone(),
                write,
            };
            emitter.emit_as(op, kind, start, end, tid);
        }
    }
}

/// A held shared lock; released (fd closed by the last reader of this process) on drop.
pub struct ReadGuard(Guard);

/// A held exclusive lock; released (fd closed) on drop.
pub struct WriteGuard(Guard);

impl ReadGuard {
    /// The last-writer token currently in the file.
    pub fn last_write(&self) -> Result<LastWrite, StoreError> {
        self.0.last_write()
    }

    /// The lock file held.
    pub(crate) fn path(&self) -> &Path {
        &self.0.shared.path
    }
}

impl WriteGuard {
    /// The last-writer token currently in the file.
    pub fn last_write(&self) -> Result<LastWrite, StoreError> {
        self.0.last_write()
    }

    /// The lock file held.
    pub(crate) fn path(&self) -> &Path {
        &self.0.shared.path
    }

    /// Stores a fresh random token so other processes know to reload; returns it.
    pub fn record_write(&self) -> Result<LastWrite, StoreError> {
        let mut token = [0u8; TOKEN_LEN];
        token.copy_from_slice(sys::random_hex(TOKEN_LEN / 2).as_bytes());
        let st = lock_state(&self.0.shared);
        let k = st
            .kernel
            .as_ref()
            .expect("a live guard implies a kernel lock");
        // SAFETY: token is readable for TOKEN_LEN bytes.
        let n = unsafe { libc::pwrite(k.fd.as_raw_fd(), token.as_ptr().cast(), TOKEN_LEN, 0) };
        if n != TOKEN_LEN as isize {
            let e = std::io::Error::last_os_error();
            return Err(StoreError::io(
                format!("writing {}", self.0.shared.path.display()),
                e,
            ));
        }
        Ok(LastWrite(token))
    }
}
