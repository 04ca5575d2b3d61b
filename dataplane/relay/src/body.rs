//! Moving bytes in one direction: message bodies by their framing
//! (content-length, chunked, until-close) and raw tunnel streams. Bytes
//! already read along with a head are sent from the buffer; between two plain
//! sockets everything else goes socket → pipe → socket with `splice`, never
//! through user space (a TLS side makes them pass through a pooled buffer).
//! Every byte is counted on the tracked key and passes its bandwidth bucket.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use crate::buf::{BufPool, InBuf};
use crate::head::Framing;
use crate::ratelimit::Limits;
use crate::ratelimit::Resource;
use crate::tracking::CapsuleStats;
use warren_runtime::{self as runtime, PipePool, Stream};

/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 4096;

/// One direction of traffic for one tracked key (a capsule).
pub struct Flow<'a> {
    /// The key's counters (and buckets).
    pub stats: &'a CapsuleStats,
    /// The key's limits at admission time.
    pub limits: &'a Limits,
    /// Client → upstream when true.
    pub to_capsule: bool,
    /// The core's pipes.
    pub pipes: &'a PipePool,
    /// The core's read buffers.
    pub bufs: &'a BufPool,
    /// Longest wait for the next byte (`None`: wait as long as the peer stays).
    pub idle: Option<Duration>,
    /// Set to now whenever bytes move (a tunnel's idle watchdog reads it).
    pub activity: Option<&'a Cell<Instant>>,
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
        if let Some(activity) = self.activity {
            activity.set(Instant::now());
        }
        let bytes = bytes as u64;
        self.stats.count_bytes(self.to_capsule, bytes);
        if self.limits.bandwidth.is_some() {
            self.stats
                .limiter
                .acquire(self.limits, Resource::Bandwidth, bytes)
                .await;
        }
    }

    async fn wait_readable(&self, from: &impl Stream) -> io::Result<()> {
        match self.idle {
            Some(idle) => runtime::timeout(idle, from.readable())
                .await
                .ok_or_else(timed_out)?,
            None => from.readable().await,
        }
    }

    /// Sends `bytes` (already in memory) to `to`.
    pub async fn send(&self, to: &impl Stream, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.account(bytes.len()).await;
        to.send_all(bytes).await
    }

    /// Moves up to `max` bytes from `from` to `to` (spliced between plain
    /// sockets, copied through a pooled buffer otherwise); `0` at end of stream.
    pub async fn splice_some(
        &self,
        from: &impl Stream,
        to: &impl Stream,
        max: usize,
    ) -> io::Result<usize> {
        let max = match self.limits.bandwidth {
            // Chunks no larger than the bucket keep the rate smooth.
            Some(bucket) if bucket.size > 0 => {
                max.min(usize::try_from(bucket.size).unwrap_or(usize::MAX))
            }
            _ => max,
        };
        let (Some(from_socket), Some(to_socket)) = (from.plain(), to.plain()) else {
            return self.copy_some(from, to, max).await;
        };
        loop {
            let pipe = self.pipes.take()?;
            match pipe.fill_from(from_socket, max)? {
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
                    pipe.drain_to(to_socket, n).await?;
                    self.pipes.put(pipe);
                    return Ok(n);
                }
            }
        }
    }

    /// [`Flow::splice_some`] through user space.
    async fn copy_some(
        &self,
        from: &impl Stream,
        to: &impl Stream,
        max: usize,
    ) -> io::Result<usize> {
        let mut chunk = self.bufs.take();
        let result = async {
            let len = chunk.len().min(max);
            loop {
                match from.try_recv(&mut chunk[..len])? {
                    None => self.wait_readable(from).await?,
                    Some(0) => return Ok(0),
                    Some(n) => {
                        self.account(n).await;
                        to.send_all(&chunk[..n]).await?;
                        return Ok(n);
                    }
                }
            }
        }
        .await;
        self.bufs.put(chunk);
        result
    }

    /// Moves exactly `len` bytes: first from `buf`, then spliced from `from`.
    async fn copy_exact(
        &self,
        from: &impl Stream,
        buf: &mut InBuf,
        to: &impl Stream,
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
    async fn line(&self, from: &impl Stream, buf: &mut InBuf) -> io::Result<usize> {
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
        from: &impl Stream,
        buf: &mut InBuf,
        to: &impl Stream,
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

    async fn flush(&self, to: &impl Stream, out: &mut Vec<u8>) -> io::Result<()> {
        let result = self.send(to, out).await;
        out.clear();
        result
    }

    /// A chunked body, forwarded verbatim: size lines and trailers go through
    /// the buffer (batched into `out`), chunk data is spliced.
    async fn chunked(
        &self,
        from: &impl Stream,
        buf: &mut InBuf,
        to: &impl Stream,
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
            // Re-framed rather than copied: extensions are dropped, so no
            // stray CR or LF in them reaches a pooled upstream connection
            // (an upstream that ends lines at a bare LF would frame the
            // body differently: request smuggling).
            out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            buf.consume(len);
            if size == 0 {
                // Trailer section: lines up to and including an empty one.
                loop {
                    if !buf.data().windows(2).any(|w| w == b"\r\n") {
                        self.flush(to, out).await?;
                    }
                    let len = self.line(from, buf).await?;
                    let trailer = &buf.data()[..len];
                    if trailer[..len - 2].iter().any(|&b| b == b'\r' || b == b'\n') {
                        return Err(bad_chunk("a bare CR or LF in a trailer line"));
                    }
                    out.extend_from_slice(trailer);
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
pub async fn pump(flow: &Flow<'_>, from: &impl Stream, to: &impl Stream) -> io::Result<()> {
    loop {
        if flow.limits.ops.is_some() {
            flow.stats
                .limiter
                .acquire(flow.limits, Resource::Ops, 1)
                .await;
        }
        if flow.splice_some(from, to, usize::MAX).await? == 0 {
            to.shutdown_write().await;
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
