//! HTTP/1.1 message heads: parsing (httparse) into an owned [`Head`] that
//! keeps the received bytes and ranges into them, body framing rules, and
//! the small helpers the relay uses to write heads back out.

use std::ops::Range;

/// Most header lines accepted in one head; more is answered with 431.
pub const MAX_HEADERS: usize = 128;

/// A parsed request or response head; names and values point into `raw`.
#[derive(Debug, Clone)]
pub struct Head {
    raw: Vec<u8>,
    /// Request method, or empty for a response.
    method: Range<usize>,
    /// Request target, or the reason phrase for a response.
    target: Range<usize>,
    /// Response status, 0 for a request.
    status: u16,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    minor_version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

/// Why a head cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not valid HTTP/1.x.
    #[error("malformed HTTP head")]
    Malformed,
    /// More header lines than [`MAX_HEADERS`].
    #[error("too many header lines")]
    TooManyHeaders,
    /// Framing that cannot be relayed safely (conflicting lengths, unknown codings).
    #[error("ambiguous or unsupported message framing")]
    BadFraming,
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    // httparse hands out sub-slices of `buf`; their offsets are the ranges.
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn collect_headers(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
) -> Vec<(Range<usize>, Range<usize>)> {
    headers
        .iter()
        .map(|h| (range_of(buf, h.name.as_bytes()), range_of(buf, h.value)))
        .collect()
}

fn map_error(error: httparse::Error) -> HeadError {
    match error {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        _ => HeadError::Malformed,
    }
}

impl Head {
    /// Parses a request head from the start of `buf`: `Ok(None)` while incomplete,
    /// otherwise the head and how many bytes of `buf` it took.
    pub fn parse_request(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let len = match request.parse(buf).map_err(map_error)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        let (Some(method), Some(path), Some(version)) =
            (request.method, request.path, request.version)
        else {
            return Err(HeadError::Malformed);
        };
        let head = Head {
            method: range_of(buf, method.as_bytes()),
            target: range_of(buf, path.as_bytes()),
            status: 0,
            minor_version: version,
            headers: collect_headers(buf, request.headers),
            raw: buf[..len].to_vec(),
        };
        Ok(Some((head, len)))
    }

    /// Parses a response head from the start of `buf`, like [`Head::parse_request`].
    pub fn parse_response(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(buf).map_err(map_error)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        let (Some(code), Some(version)) = (response.code, response.version) else {
            return Err(HeadError::Malformed);
        };
        let reason = response.reason.unwrap_or("");
        let target = if reason.is_empty() {
            0..0
        } else {
            range_of(buf, reason.as_bytes())
        };
        let head = Head {
            method: 0..0,
            target,
            status: code,
            minor_version: version,
            headers: collect_headers(buf, response.headers),
            raw: buf[..len].to_vec(),
        };
        Ok(Some((head, len)))
    }

    /// The request method.
    pub fn method(&self) -> &[u8] {
        &self.raw[self.method.clone()]
    }

    /// The request target (path and query) as received.
    pub fn target(&self) -> &[u8] {
        &self.raw[self.target.clone()]
    }

    /// The response reason phrase.
    pub fn reason(&self) -> &[u8] {
        self.target()
    }

    /// The response status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// True for HTTP/1.1 (false for HTTP/1.0).
    pub fn is_http11(&self) -> bool {
        self.minor_version >= 1
    }

    /// Every header line, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(name, value)| (&self.raw[name.clone()], &self.raw[value.clone()]))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// True when any `name` header lists `token` (comma-separated, case-insensitive).
    pub fn has_token(&self, name: &str, token: &[u8]) -> bool {
        self.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .any(|(_, v)| list_has(v, token))
    }

    /// True when the client asked to close after this message (or spoke HTTP/1.0
    /// without keep-alive).
    pub fn wants_close(&self) -> bool {
        if self.is_http11() {
            self.has_token("connection", b"close")
        } else {
            !self.has_token("connection", b"keep-alive")
        }
    }

    /// The body framing of a request (RFC 9112 §6.3); conflicting or unknown
    /// framings are refused rather than guessed (request smuggling).
    pub fn request_framing(&self) -> Result<Framing, HeadError> {
        match self.body_framing()? {
            Framing::UntilClose => Err(HeadError::BadFraming),
            framing => Ok(framing),
        }
    }

    /// The body framing of a response to a request with `method`.
    pub fn response_framing(&self, method: &[u8]) -> Result<Framing, HeadError> {
        if method.eq_ignore_ascii_case(b"HEAD")
            || self.status < 200
            || self.status == 204
            || self.status == 304
        {
            return Ok(Framing::Empty);
        }
        self.body_framing()
    }

    fn body_framing(&self) -> Result<Framing, HeadError> {
        let mut length: Option<u64> = None;
        let mut chunked = None;
        for (name, value) in self.headers() {
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Only the last coding decides; chunked must be last to delimit.
                let last = value.rsplit(|&b| b == b',').next().unwrap_or(value);
                chunked = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                for part in value.split(|&b| b == b',') {
                    let n = parse_decimal(trim(part)).ok_or(HeadError::BadFraming)?;
                    if length.is_some_and(|seen| seen != n) {
                        return Err(HeadError::BadFraming);
                    }
                    length = Some(n);
                }
            }
        }
        match (chunked, length) {
            (Some(_), Some(_)) => Err(HeadError::BadFraming),
            (Some(true), None) => Ok(Framing::Chunked),
            (Some(false), None) => Ok(Framing::UntilClose),
            (None, Some(0)) if self.status == 0 => Ok(Framing::Empty),
            (None, Some(n)) => Ok(Framing::Length(n)),
            (None, None) if self.status == 0 => Ok(Framing::Empty),
            (None, None) => Ok(Framing::UntilClose),
        }
    }
}

/// True when the comma-separated list `value` contains `token` (case-insensitive).
pub fn list_has(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| trim(part).eq_ignore_ascii_case(token))
}

/// `value` without surrounding spaces and tabs.
pub fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// A non-negative decimal without sign or spaces, or `None`.
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Appends `name: value\r\n`.
pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_and_framing() {
        let raw = b"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let (head, len) = Head::parse_request(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 5);
        assert_eq!(head.method(), b"POST");
        assert_eq!(head.target(), b"/a?b");
        assert_eq!(head.header("HOST"), Some(&b"x"[..]));
        assert_eq!(head.request_framing(), Ok(Framing::Length(5)));
    }

    #[test]
    fn refuses_smuggling_framings() {
        let both = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (head, _) = Head::parse_request(both).unwrap().unwrap();
        assert_eq!(head.request_framing(), Err(HeadError::BadFraming));
        let two = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        let (head, _) = Head::parse_request(two).unwrap().unwrap();
        assert_eq!(head.request_framing(), Err(HeadError::BadFraming));
        let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        let (head, _) = Head::parse_request(gzip).unwrap().unwrap();
        assert_eq!(head.request_framing(), Err(HeadError::BadFraming));
        let signed = b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n";
        let (head, _) = Head::parse_request(signed).unwrap().unwrap();
        assert_eq!(head.request_framing(), Err(HeadError::BadFraming));
    }

    #[test]
    fn response_framing_rules() {
        let (head, _) = Head::parse_response(b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.response_framing(b"GET"), Ok(Framing::UntilClose));
        assert_eq!(head.response_framing(b"HEAD"), Ok(Framing::Empty));
        let (head, _) =
            Head::parse_response(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(head.response_framing(b"GET"), Ok(Framing::Empty));
        let (head, _) =
            Head::parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(head.response_framing(b"GET"), Ok(Framing::Chunked));
    }

    #[test]
    fn partial_and_lists() {
        assert!(
            Head::parse_request(b"GET / HTTP/1.1\r\nHost:")
                .unwrap()
                .is_none()
        );
        assert!(list_has(b"keep-alive, Upgrade", b"upgrade"));
        assert_eq!(trim(b" \tx y\t "), b"x y");
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
    }
}
