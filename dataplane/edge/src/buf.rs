//! Read buffers for heads (and the body bytes that arrive with them). A
//! buffer is taken from the core's pool when bytes are about to arrive and
//! given back once consumed, so idle keep-alive connections hold none.

use std::cell::RefCell;
use std::io;

use warren_runtime::Socket;

/// Idle buffers kept per core.
const POOL_MAX: usize = 1024;

/// A core's idle read buffers, all of one size.
pub struct BufPool {
    size: usize,
    idle: RefCell<Vec<Box<[u8]>>>,
}

impl BufPool {
    /// Buffers of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            idle: RefCell::default(),
        }
    }

    fn take(&self) -> Box<[u8]> {
        self.idle
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    fn put(&self, buf: Box<[u8]>) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < POOL_MAX {
            idle.push(buf);
        }
    }
}

/// Bytes received on one socket and not consumed yet.
#[derive(Default)]
pub struct InBuf {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl InBuf {
    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        self.buf
            .as_deref()
            .map_or(&[], |b| &b[self.start..self.end])
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// True when no more bytes fit even after compaction.
    pub fn is_full(&self) -> bool {
        self.buf
            .as_ref()
            .is_some_and(|b| self.start == 0 && self.end == b.len())
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Gives the buffer back to the pool when empty.
    pub fn release(&mut self, pool: &BufPool) {
        if self.is_empty()
            && let Some(buf) = self.buf.take()
        {
            pool.put(buf);
        }
    }

    fn spare(&mut self, pool: &BufPool) -> &mut [u8] {
        let buf = self.buf.get_or_insert_with(|| pool.take());
        if self.end == buf.len() && self.start > 0 {
            buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut buf[self.end..]
    }

    /// Receives what is already waiting on `sock` without blocking: `None`
    /// when nothing is, `Some(0)` at end of stream (or when full).
    pub fn try_fill(&mut self, sock: &Socket, pool: &BufPool) -> io::Result<Option<usize>> {
        let spare = self.spare(pool);
        if spare.is_empty() {
            return Ok(Some(0));
        }
        let n = sock.try_recv(spare)?;
        if let Some(n) = n {
            self.end += n;
        }
        Ok(n)
    }

    /// Receives at least one byte; `0` means end of stream (or full: check
    /// [`InBuf::is_full`] first).
    pub async fn fill(&mut self, sock: &Socket, pool: &BufPool) -> io::Result<usize> {
        loop {
            if let Some(n) = self.try_fill(sock, pool)? {
                return Ok(n);
            }
            sock.readable().await?;
        }
    }
}
