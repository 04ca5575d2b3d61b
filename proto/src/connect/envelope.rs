//! Connect's stream framing: each message is a 5-byte prefix (flags, then a
//! big-endian u32 length) and the message bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The message is compressed with the stream's compression.
pub const FLAG_COMPRESSED: u8 = 0b01;
/// The end-of-stream message (JSON: error and trailing metadata).
pub const FLAG_END_STREAM: u8 = 0b10;

const PREFIX_LEN: usize = 5;

/// One framed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub data: Bytes,
}

impl Envelope {
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }
}

/// Frames `data` with `flags`.
pub fn encode(flags: u8, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + data.len());
    buf.put_u8(flags);
    // Messages are bounded well below 4 GiB by every sender in Warren.
    buf.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    buf.put_slice(data);
    buf.freeze()
}

/// Framing errors: the peer sent something that is not a Connect stream.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("unknown envelope flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("stream ended inside a message ({0} stray bytes)")]
    Truncated(usize),
}

/// Incremental decoder: push bytes as they arrive, pull whole envelopes.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limit: usize,
}

impl Decoder {
    /// `limit` bounds a single message's size.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            limit,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete envelope, if the buffer holds one.
    pub fn next(&mut self) -> Result<Option<Envelope>, EnvelopeError> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let flags = self.buf[0];
        if flags & !(FLAG_COMPRESSED | FLAG_END_STREAM) != 0 {
            return Err(EnvelopeError::UnknownFlags(flags));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.limit {
            return Err(EnvelopeError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if self.buf.len() < PREFIX_LEN + len {
            self.buf.reserve(PREFIX_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        let data = self.buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, data }))
    }

    /// Checks that the stream ended on a message boundary.
    pub fn finish(&self) -> Result<(), EnvelopeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(EnvelopeError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_across_arbitrary_chunk_boundaries() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode(0, b"hello"));
        wire.extend_from_slice(&encode(0, b""));
        wire.extend_from_slice(&encode(FLAG_END_STREAM, b"{}"));
        for chunk in 1..wire.len() {
            let mut dec = Decoder::new(1024);
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                dec.push(piece);
                while let Some(env) = dec.next().unwrap() {
                    got.push(env);
                }
            }
            dec.finish().unwrap();
            assert_eq!(got.len(), 3);
            assert_eq!(&got[0].data[..], b"hello");
            assert!(got[1].data.is_empty());
            assert!(got[2].is_end_stream());
        }
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let wire = encode(0, b"hello");
        let mut dec = Decoder::new(1024);
        dec.push(&wire[..7]);
        assert_eq!(dec.next().unwrap(), None);
        assert_eq!(dec.finish(), Err(EnvelopeError::Truncated(7)));
        let mut dec = Decoder::new(1024);
        dec.push(&wire[..3]);
        assert_eq!(dec.finish(), Err(EnvelopeError::Truncated(3)));
    }

    #[test]
    fn oversized_and_bad_flags_are_refused_before_buffering() {
        let mut dec = Decoder::new(4);
        dec.push(&[0, 0, 0, 0, 5]);
        assert_eq!(
            dec.next(),
            Err(EnvelopeError::TooLarge { len: 5, limit: 4 })
        );
        let mut dec = Decoder::new(4);
        dec.push(&[0x80, 0, 0, 0, 1, 1]);
        assert_eq!(dec.next(), Err(EnvelopeError::UnknownFlags(0x80)));
        // A 4 GiB length prefix must not make the decoder allocate.
        let mut dec = Decoder::new(1 << 20);
        dec.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(dec.next(), Err(EnvelopeError::TooLarge { .. })));
    }
}
