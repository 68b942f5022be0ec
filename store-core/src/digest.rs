//! A reader that sha256-hashes its source on a worker thread, so hashing overlaps with what the caller does
//! with the bytes (writing layer files) instead of adding to it.
//!
//! The source is read in large chunks; each chunk is shared with the hasher thread as soon as it is read and
//! comes back to a small pool once hashed, so memory stays at [`CHUNKS`] × [`CHUNK`].

use std::io::{self, BufRead, Read};
use std::mem;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};

use sha2::{Digest, Sha256};

/// Bytes read from the source at a time.
const CHUNK: usize = 1 << 20;
/// Chunks being consumed or hashed at most. Buffers are only added while the hasher lags, and a deep queue
/// lets the reader run on while the hasher waits for a CPU (with 4, readers stalled ~20% of the time on a
/// busy 2-CPU machine).
const CHUNKS: usize = 16;

/// Hashes and counts every byte it reads from `inner`; a [`BufRead`] over the chunks.
pub(crate) struct HashingReader<R> {
    inner: R,
    /// The chunk being consumed, `pos` bytes into it.
    chunk: Arc<Vec<u8>>,
    pos: usize,
    eof: bool,
    /// A source error that came after some bytes of a chunk; reported by the next fill.
    pending: Option<io::Error>,
    len: u64,
    /// Chunk buffers created so far (at most [`CHUNKS`]).
    allocated: usize,
    to_hasher: SyncSender<Arc<Vec<u8>>>,
    hashed: Receiver<Arc<Vec<u8>>>,
    hasher: JoinHandle<Sha256>,
}

fn hasher_gone() -> io::Error {
    io::Error::other("sha256 worker thread exited early")
}

impl<R: Read> HashingReader<R> {
    /// Starts the hasher thread.
    pub(crate) fn new(inner: R) -> io::Result<Self> {
        let (to_hasher, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(CHUNKS);
        // Never blocks: no more than CHUNKS buffers exist.
        let (back, hashed) = mpsc::sync_channel(CHUNKS);
        let hasher = thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for chunk in rx {
                    h.update(chunk.as_slice());
                    // The reader may be gone already (extraction failed); the buffer is then just freed.
                    let _ = back.send(chunk);
                }
                h
            })?;
        Ok(HashingReader {
            inner,
            chunk: Arc::default(),
            pos: 0,
            eof: false,
            pending: None,
            len: 0,
            allocated: 0,
            to_hasher,
            hashed,
            hasher,
        })
    }

    /// A buffer to read the next chunk into: a hashed one if any, else a new one while under the limit,
    /// else waits for the hasher to give one back.
    fn free_buffer(&mut self) -> io::Result<Vec<u8>> {
        let returned = match self.hashed.try_recv() {
            Ok(c) => Some(c),
            Err(_) if self.allocated < CHUNKS => None,
            Err(_) => Some(self.hashed.recv().map_err(|_| hasher_gone())?),
        };
        Ok(match returned {
            // The hasher sends back its reference after ours was dropped, so it is the only one.
            Some(c) => Arc::into_inner(c).unwrap_or_default(),
            None => {
                self.allocated += 1;
                Vec::new()
            }
        })
    }

    /// Reads the next chunk (as full as the source allows) and hands it to the hasher.
    fn fill(&mut self) -> io::Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let mut buf = match Arc::into_inner(mem::take(&mut self.chunk)) {
            // Never handed to the hasher (the source failed or ended), so it is still ours.
            Some(v) if v.capacity() > 0 => v,
            _ => self.free_buffer()?,
        };
        buf.resize(CHUNK, 0);
        let mut n = 0;
        let res = loop {
            if n == CHUNK {
                break Ok(());
            }
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => {
                    self.eof = true;
                    break Ok(());
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if n > 0 => {
                    self.pending = Some(e);
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        buf.truncate(n);
        self.chunk = Arc::new(buf);
        self.pos = 0;
        if n > 0 {
            self.len += n as u64;
            self.to_hasher
                .send(Arc::clone(&self.chunk))
                .map_err(|_| hasher_gone())?;
        }
        res
    }

    /// Reads and hashes the rest of the source without copying it anywhere.
    pub(crate) fn skip_rest(&mut self) -> io::Result<()> {
        loop {
            let n = self.fill_buf()?.len();
            if n == 0 {
                return Ok(());
            }
            self.consume(n);
        }
    }

    /// The `sha256:` digest and length of everything read from the source so far, and the source.
    pub(crate) fn finish(self) -> io::Result<(String, u64, R)> {
        let HashingReader {
            inner,
            len,
            to_hasher,
            hasher,
            ..
        } = self;
        drop(to_hasher);
        let h = hasher.join().map_err(|_| hasher_gone())?;
        Ok((format!("sha256:{}", hex::encode(h.finalize())), len, inner))
    }
}

impl<R: Read> BufRead for HashingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.chunk.len() && !self.eof {
            self.fill()?;
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.chunk.len());
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes per read, failing once after `fail_at` bytes.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        fail_at: Option<usize>,
        off: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail_at == Some(self.off) {
                self.fail_at = None;
                return Err(io::Error::other("flaky source"));
            }
            let end = self.data.len().min(self.off + self.step.min(buf.len()));
            let end = self.fail_at.map_or(end, |f| end.min(f));
            let n = end - self.off;
            buf[..n].copy_from_slice(&self.data[self.off..end]);
            self.off = end;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn expected(d: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(d)))
    }

    #[test]
    fn hashes_and_passes_through_every_byte() {
        // Empty, under one chunk, chunk boundaries, and more chunks than the buffer pool holds.
        let small = [0, 1, 4095, CHUNK, CHUNK + 1, CHUNK * 3 + 12345];
        let cases = small
            .iter()
            .flat_map(|&len| [1000, 7 << 10, CHUNK * 2].map(|step| (len, step)))
            .chain([(CHUNK * (CHUNKS + 2) + 5, 1 << 20)]);
        for (len, step) in cases {
            let d = data(len);
            let src = Trickle {
                data: &d,
                step,
                fail_at: None,
                off: 0,
            };
            let mut r = HashingReader::new(src).unwrap();
            let mut out = Vec::new();
            let mut buf = vec![0; 300_001];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert!(out == d, "len {len} step {step}: bytes differ");
            let (digest, n, _) = r.finish().unwrap();
            assert_eq!(digest, expected(&d), "len {len} step {step}");
            assert_eq!(n, len as u64);
        }
    }

    #[test]
    fn finish_covers_skipped_bytes() {
        let d = data(CHUNK * 2 + 99);
        let mut r = HashingReader::new(&d[..]).unwrap();
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        assert_eq!(head[..], d[..10]);
        r.skip_rest().unwrap();
        assert_eq!(r.fill_buf().unwrap().len(), 0);
        let (digest, n, _) = r.finish().unwrap();
        assert_eq!(digest, expected(&d));
        assert_eq!(n, d.len() as u64);
    }

    #[test]
    fn source_errors_surface_without_losing_bytes() {
        let d = data(CHUNK * 5 + 3);
        for fail_at in [0, 17, CHUNK, CHUNK * 3 + 5] {
            let src = Trickle {
                data: &d,
                step: 64 << 10,
                fail_at: Some(fail_at),
                off: 0,
            };
            let mut r = HashingReader::new(src).unwrap();
            let mut out = Vec::new();
            let mut errors = 0;
            let mut buf = vec![0; 1 << 16];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        assert_eq!(e.to_string(), "flaky source");
                        errors += 1;
                    }
                }
            }
            assert_eq!(errors, 1, "fail_at {fail_at}");
            assert!(out == d, "fail_at {fail_at}: bytes differ");
            assert_eq!(r.finish().unwrap().0, expected(&d), "fail_at {fail_at}");
        }
    }
}
