//! Message compression. Requests may arrive gzip-compressed (Connect clients
//! compress by default); responses are always sent uncompressed.

use std::io::Read;

use bytes::Bytes;

use super::{Code, ConnectError};

/// A request's compression, from `Content-Encoding` (unary) or
/// `Connect-Content-Encoding` (streaming).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Identity,
    Gzip,
}

impl Compression {
    pub fn from_header(value: Option<&str>) -> Result<Self, ConnectError> {
        match value.map(str::trim) {
            None | Some("") | Some("identity") => Ok(Compression::Identity),
            Some("gzip") => Ok(Compression::Gzip),
            Some(other) => Err(ConnectError::new(
                Code::Unimplemented,
                format!("unknown compression {other:?}: accepted are gzip, identity"),
            )),
        }
    }

    /// Decompresses `data`, refusing output larger than `limit` bytes.
    pub fn decompress(self, data: Bytes, limit: usize) -> Result<Bytes, ConnectError> {
        match self {
            Compression::Identity => Ok(data),
            Compression::Gzip => {
                let mut out = Vec::new();
                let read = flate2::read::GzDecoder::new(&data[..])
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| {
                        ConnectError::new(Code::InvalidArgument, format!("malformed gzip: {e}"))
                    })?;
                if read > limit {
                    return Err(too_large(limit));
                }
                Ok(Bytes::from(out))
            }
        }
    }
}

pub(crate) fn too_large(limit: usize) -> ConnectError {
    ConnectError::new(
        Code::ResourceExhausted,
        format!("message larger than the limit of {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        Bytes::from(enc.finish().unwrap())
    }

    #[test]
    fn gzip_round_trip_and_limits() {
        let data = vec![7u8; 10_000];
        let out = Compression::Gzip.decompress(gzip(&data), 10_000).unwrap();
        assert_eq!(&out[..], &data[..]);
        let err = Compression::Gzip
            .decompress(gzip(&data), 9_999)
            .unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted);
        let err = Compression::Gzip
            .decompress(Bytes::from_static(b"nope"), 100)
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert!(Compression::from_header(Some("br")).is_err());
    }
}
