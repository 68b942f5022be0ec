//! Resource limits while extracting: the uncompressed size of a layer and the free space left on the
//! store's filesystem, charged as the stream is read and as file contents are written.

use std::cell::Cell;
use std::io::{self, Read};
use std::os::fd::RawFd;
use std::rc::Rc;

use crate::error::{Limit, StoreError};
use crate::options::FreeSpaceReserve;
use crate::sys;

/// Free space is checked at the start and again after this many bytes are read or written: often
/// enough that a fast writer cannot run far past the reserve, rare enough to cost nothing.
const CHECK_EVERY: u64 = 8 << 20;

/// What one extraction may still use. Lives on the extracting thread (cells, no locks).
pub(super) struct Budget {
    max: Option<u64>,
    reserve: u64,
    /// A directory on the store's filesystem, open for the whole extraction.
    fs: RawFd,
    stream: Cell<u64>,
    written: Cell<u64>,
    next_check: Cell<u64>,
    /// The limit hit, kept so the error that surfaces (wrapped by the tar or gzip reader) can be
    /// replaced by the typed one.
    hit: Cell<Option<Limit>>,
}

impl Budget {
    /// Resolves `reserve` against the filesystem holding `fs`.
    pub(super) fn new(
        max: Option<u64>,
        reserve: FreeSpaceReserve,
        fs: RawFd,
    ) -> Result<Budget, StoreError> {
        let reserve = match reserve {
            FreeSpaceReserve::Off => 0,
            FreeSpaceReserve::Bytes(b) => b,
            FreeSpaceReserve::Percent(p) => {
                let size = sys::filesystem_size(fs)
                    .map_err(|e| StoreError::io("measuring the store's filesystem", e))?;
                size / 100 * u64::from(p.min(100))
            }
        };
        Ok(Budget {
            max,
            reserve,
            fs,
            stream: Cell::new(0),
            written: Cell::new(0),
            next_check: Cell::new(0),
            hit: Cell::new(None),
        })
    }

    /// The limit hit so far, if any.
    pub(super) fn hit(&self) -> Option<Limit> {
        self.hit.get()
    }

    fn fail(&self, limit: Limit) -> StoreError {
        self.hit.set(Some(limit));
        StoreError::LimitExceeded(limit)
    }

    /// Checks free space when due (always on the first call).
    pub(super) fn check_space(&self) -> Result<(), StoreError> {
        let used = self.stream.get() + self.written.get();
        if self.reserve == 0 || used < self.next_check.get() {
            return Ok(());
        }
        self.next_check.set(used + CHECK_EVERY);
        let available = sys::free_space(self.fs)
            .map_err(|e| StoreError::io("checking free space on the store's filesystem", e))?;
        if available < self.reserve {
            return Err(self.fail(Limit::FreeSpace {
                reserve: self.reserve,
                available,
            }));
        }
        Ok(())
    }

    fn charge(&self, counter: &Cell<u64>, n: usize) -> Result<(), StoreError> {
        let total = counter.get().saturating_add(n as u64);
        counter.set(total);
        if let Some(max) = self.max
            && total > max
        {
            return Err(self.fail(Limit::LayerSize { max }));
        }
        self.check_space()
    }

    /// Counts `n` bytes of file content about to be written.
    pub(super) fn charge_written(&self, n: usize) -> Result<(), StoreError> {
        self.charge(&self.written, n)
    }
}

/// Counts the uncompressed stream against a [`Budget`] as it is read; fails the read past a limit.
pub(super) struct Metered<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R> Metered<R> {
    pub(super) fn new(inner: R, budget: &Rc<Budget>) -> Self {
        Metered {
            inner,
            budget: Rc::clone(budget),
        }
    }

    pub(super) fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.budget
            .charge(&self.budget.stream, n)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(n)
    }
}
