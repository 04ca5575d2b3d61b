//! Moving bytes for one capsule in one direction: message bodies by their
//! framing (content-length, chunked, until-close) and raw tunnel streams.
//! Bytes already read along with a head are sent from the buffer; everything
//! else goes socket → pipe → socket with `splice`, never through user space.
//! Every byte is counted on the capsule and passes its bandwidth bucket.

use std::io;
use std::time::Duration;

use crate::buf::{BufPool, InBuf};
use crate::head::Framing;
use crate::ratelimit::Resource;
use crate::table::Limits;
use crate::tracking::CapsuleStats;
use warren_runtime::{self as runtime, PipePool, Socket};

/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 4096;

/// One direction of traffic for one capsule.
pub struct Flow<'a> {
    /// The capsule's counters (and buckets).
    pub stats: &'a CapsuleStats,
    /// The capsule's limits at routing time.
    pub limits: &'a Limits,
    /// Client → capsule when true.
    pub to_capsule: bool,
    /// The core's pipes.
    pub pipes: &'a PipePool,
    /// The core's read buffers.
    pub bufs: &'a BufPool,
    /// Longest wait for the next byte (`None`: wait as long as the peer stays).
    pub idle: Option<Duration>,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no data within the idle timeout")
}

fn bad_chunk(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed chunked body: {what}"),
    )
}

impl Flow<'_> {
    async fn account(&self, bytes: usize) {
        let bytes = bytes as u64;
        self.stats.count_bytes(self.to_capsule, bytes);
        if self.limits.bandwidth.is_some() {
            self.stats
                .limiter
                .acquire(self.limits, Resource::Bandwidth, bytes)
                .await;
        }
    }

    async fn wait_readable(&self, from: &Socket) -> io::Result<()> {
        match self.idle {
            Some(idle) => runtime::timeout(idle, from.readable())
                .await
                .ok_or_else(timed_out)?,
            None => from.readable().await,
        }
    }

    /// Sends `bytes` (already in memory) to `to`.
    pub async fn send(&self, to: &Socket, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.account(bytes.len()).await;
        to.send_all(bytes).await
    }

    /// Splices up to `max` bytes from `from` to `to`; `0` at end of stream.
    pub async fn splice_some(&self, from: &Socket, to: &Socket, max: usize) -> io::Result<usize> {
        let max = match self.limits.bandwidth {
            // Chunks no larger than the bucket keep the rate smooth.
            Some(bucket) if bucket.size > 0 => {
                max.min(usize::try_from(bucket.size).unwrap_or(usize::MAX))
            }
            _ => max,
        };
        loop {
            let pipe = self.pipes.take()?;
            match pipe.fill_from(from, max)? {
                None => {
                    self.pipes.put(pipe);
                    self.wait_readable(from).await?;
                }
                Some(0) => {
                    self.pipes.put(pipe);
                    return Ok(0);
                }
                Some(n) => {
                    self.account(n).await;
                    // On error the pipe may hold bytes: it is dropped, not pooled.
                    pipe.drain_to(to, n).await?;
                    self.pipes.put(pipe);
                    return Ok(n);
                }
            }
        }
    }

    /// Moves exactly `len` bytes: first from `buf`, then spliced from `from`.
    async fn copy_exact(
        &self,
        from: &Socket,
        buf: &mut InBuf,
        to: &Socket,
        mut len: u64,
    ) -> io::Result<()> {
        let buffered = buf
            .data()
            .len()
            .min(usize::try_from(len).unwrap_or(usize::MAX));
        self.send(to, &buf.data()[..buffered]).await?;
        buf.consume(buffered);
        len -= buffered as u64;
        while len > 0 {
            let n = self
                .splice_some(from, to, usize::try_from(len).unwrap_or(usize::MAX))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            len -= n as u64;
        }
        Ok(())
    }

    /// Reads until `buf` holds a CRLF-terminated line; returns its length
    /// including the CRLF.
    async fn line(&self, from: &Socket, buf: &mut InBuf) -> io::Result<usize> {
        loop {
            if let Some(pos) = buf.data().windows(2).position(|w| w == b"\r\n") {
                return Ok(pos + 2);
            }
            if buf.data().len() >= MAX_LINE || buf.is_full() {
                return Err(bad_chunk("line too long"));
            }
            if buf.try_fill(from, self.bufs)?.is_none() {
                self.wait_readable(from).await?;
                continue;
            }
            if buf.data().is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Relays a body with `framing`. `out` holds bytes to send first (the
    /// head); it is flushed before any wait. Returns when the body is done.
    pub async fn body(
        &self,
        from: &Socket,
        buf: &mut InBuf,
        to: &Socket,
        out: &mut Vec<u8>,
        framing: Framing,
    ) -> io::Result<()> {
        match framing {
            Framing::Empty => self.flush(to, out).await,
            Framing::Length(len) => {
                let buffered = buf
                    .data()
                    .len()
                    .min(usize::try_from(len).unwrap_or(usize::MAX));
                out.extend_from_slice(&buf.data()[..buffered]);
                buf.consume(buffered);
                self.flush(to, out).await?;
                self.copy_exact(from, buf, to, len - buffered as u64).await
            }
            Framing::Chunked => self.chunked(from, buf, to, out).await,
            Framing::UntilClose => {
                out.extend_from_slice(buf.data());
                let n = buf.data().len();
                buf.consume(n);
                self.flush(to, out).await?;
                while self.splice_some(from, to, usize::MAX).await? > 0 {}
                Ok(())
            }
        }
    }

    async fn flush(&self, to: &Socket, out: &mut Vec<u8>) -> io::Result<()> {
        let result = self.send(to, out).await;
        out.clear();
        result
    }

    /// A chunked body, forwarded verbatim: size lines and trailers go through
    /// the buffer (batched into `out`), chunk data is spliced.
    async fn chunked(
        &self,
        from: &Socket,
        buf: &mut InBuf,
        to: &Socket,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        loop {
            if buf.data().len() < MAX_LINE && !buf.data().windows(2).any(|w| w == b"\r\n") {
                // About to wait for bytes: let the peer have what we hold.
                self.flush(to, out).await?;
            }
            let len = self.line(from, buf).await?;
            let line = &buf.data()[..len];
            let size_end = line
                .iter()
                .position(|&b| b == b';' || b == b'\r')
                .unwrap_or(0);
            let size = parse_hex(&line[..size_end]).ok_or_else(|| bad_chunk("bad chunk size"))?;
            out.extend_from_slice(line);
            buf.consume(len);
            if size == 0 {
                // Trailer section: lines up to and including an empty one.
                loop {
                    if !buf.data().windows(2).any(|w| w == b"\r\n") {
                        self.flush(to, out).await?;
                    }
                    let len = self.line(from, buf).await?;
                    out.extend_from_slice(&buf.data()[..len]);
                    buf.consume(len);
                    if len == 2 {
                        return self.flush(to, out).await;
                    }
                }
            }
            let buffered = buf
                .data()
                .len()
                .min(usize::try_from(size).unwrap_or(usize::MAX));
            out.extend_from_slice(&buf.data()[..buffered]);
            buf.consume(buffered);
            if (buffered as u64) < size {
                self.flush(to, out).await?;
                self.copy_exact(from, buf, to, size - buffered as u64)
                    .await?;
            }
            while buf.data().len() < 2 {
                if buf.data().is_empty() {
                    self.flush(to, out).await?;
                }
                if buf.fill(from, self.bufs).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            if &buf.data()[..2] != b"\r\n" {
                return Err(bad_chunk("missing CRLF after chunk data"));
            }
            out.extend_from_slice(b"\r\n");
            buf.consume(2);
        }
    }
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    let digits = crate::head::trim(digits);
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        Some(n * 16 + u64::from((d as char).to_digit(16)?))
    })
}

/// Pumps one direction of an upgraded connection until end of stream, then
/// half-closes the other side; one op per read when the capsule has limits.
pub async fn pump(flow: &Flow<'_>, from: &Socket, to: &Socket) -> io::Result<()> {
    loop {
        if flow.limits.ops.is_some() {
            flow.stats
                .limiter
                .acquire(flow.limits, Resource::Ops, 1)
                .await;
        }
        if flow.splice_some(from, to, usize::MAX).await? == 0 {
            to.shutdown_write();
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_hex;

    #[test]
    fn hex_sizes() {
        assert_eq!(parse_hex(b"1aF"), Some(0x1af));
        assert_eq!(parse_hex(b"0"), Some(0));
        assert_eq!(parse_hex(b""), None);
        assert_eq!(parse_hex(b"g"), None);
        assert_eq!(parse_hex(b"1234567890abcdef0"), None);
    }
}
