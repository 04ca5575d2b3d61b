//! A small Connect-protocol client (unary and server-streaming, binary
//! codec, HTTP/1.1) for the agent's lifecycle RPC and envd's services.
//!
//! Placeholder until `warren_proto::connect` lands in main; kept behind the
//! same shape (an endpoint, a procedure path, prost messages) so the swap
//! touches only this file. Separate connection pools carry unary calls
//! (with a response timeout) and long-lived streams (without one), so a
//! slow stream never holds up a lifecycle call.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;
pub type HttpClient = Client<HttpConnector, ReqBody>;

/// Largest message accepted from a peer.
const MAX_MESSAGE: usize = 64 << 20;

/// A Connect error: the peer's code and message, or a transport failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("{code}: {message}")]
    Status { code: String, message: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl RpcError {
    pub fn code(&self) -> &str {
        match self {
            Self::Status { code, .. } => code,
            Self::Transport(_) => "unavailable",
            Self::Timeout(_) => "deadline_exceeded",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    fn from_http(status: StatusCode, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Wire {
            code: Option<String>,
            message: Option<String>,
        }
        match serde_json::from_slice::<Wire>(body) {
            Ok(w) => Self::Status {
                code: w.code.unwrap_or_else(|| code_for_http(status).into()),
                message: w.message.unwrap_or_default(),
            },
            Err(_) => Self::Status {
                code: code_for_http(status).into(),
                message: String::from_utf8_lossy(body).chars().take(500).collect(),
            },
        }
    }
}

/// Connect's mapping of HTTP statuses without a Connect error body.
fn code_for_http(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "internal",
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "unimplemented",
        429 | 502..=504 => "unavailable",
        _ => "unknown",
    }
}

/// Where a service is reached: a base URL plus headers sent on every call
/// (credentials, relay routing).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base: String,
    pub headers: HeaderMap,
}

impl Endpoint {
    /// `addr` is `host:port` or a full `http://` URL.
    pub fn new(addr: &str) -> Self {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        Self {
            base,
            headers: HeaderMap::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(HeaderName::from_static(name), v);
        }
        self
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    /// A request builder for `path_and_query` carrying the endpoint's headers.
    pub fn request(&self, method: Method, path_and_query: &str) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(self.url(path_and_query));
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        b
    }
}

pub fn full_body(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn http_client(idle: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle)
        .build(connector)
}

/// Connect client with separate pools for unary calls and streams.
#[derive(Clone)]
pub struct ConnectClient {
    unary: HttpClient,
    streams: HttpClient,
}

impl std::fmt::Debug for ConnectClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectClient")
    }
}

impl Default for ConnectClient {
    fn default() -> Self {
        Self::new()
    }
}

pub type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, RpcError>> + Send>>;

impl ConnectClient {
    pub fn new() -> Self {
        Self {
            unary: http_client(Duration::from_secs(90)),
            streams: http_client(Duration::from_secs(30)),
        }
    }

    /// The pool for long transfers (file streams) that are not RPCs.
    pub fn streaming_http(&self) -> &HttpClient {
        &self.streams
    }

    /// One unary call; `timeout` bounds the whole exchange.
    pub async fn unary<Req, Resp>(
        &self,
        ep: &Endpoint,
        procedure: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let request = ep
            .request(Method::POST, procedure)
            .header(http::header::CONTENT_TYPE, "application/proto")
            .header("connect-protocol-version", "1")
            .header("connect-timeout-ms", timeout.as_millis().to_string())
            .body(full_body(req.encode_to_vec()))
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let exchange = async {
            let resp = self
                .unary
                .request(request)
                .await
                .map_err(|e| RpcError::Transport(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| RpcError::Transport(e.to_string()))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(RpcError::from_http(status, &body));
            }
            Resp::decode(body).map_err(|e| RpcError::Status {
                code: "internal".into(),
                message: format!("undecodable response: {e}"),
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| RpcError::Timeout(timeout))?
    }

    /// Opens a server stream. The response headers must arrive within
    /// `open_timeout`; the stream itself has no deadline.
    pub async fn server_stream<Req, Resp>(
        &self,
        ep: &Endpoint,
        procedure: &str,
        req: &Req,
        open_timeout: Duration,
    ) -> Result<MessageStream<Resp>, RpcError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default + Send + 'static,
    {
        let msg = req.encode_to_vec();
        let mut framed = BytesMut::with_capacity(msg.len() + 5);
        framed.extend_from_slice(&[0]);
        framed.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
        framed.extend_from_slice(&msg);
        let request = ep
            .request(Method::POST, procedure)
            .header(http::header::CONTENT_TYPE, "application/connect+proto")
            .header("connect-protocol-version", "1")
            .body(full_body(framed.freeze()))
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let resp = tokio::time::timeout(open_timeout, self.streams.request(request))
            .await
            .map_err(|_| RpcError::Timeout(open_timeout))?
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(RpcError::from_http(status, &body));
        }
        let body = resp.into_body().into_data_stream();
        let state = (body, BytesMut::new(), false);
        let stream = futures::stream::unfold(state, |(mut body, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                match take_frame(&mut buf) {
                    Ok(Some((flags, payload))) => {
                        if flags & 0x02 != 0 {
                            // End of stream: an error, or a clean end.
                            return end_of_stream(&payload).map(|e| (Err(e), (body, buf, true)));
                        }
                        let item = Resp::decode(payload).map_err(|e| RpcError::Status {
                            code: "internal".into(),
                            message: format!("undecodable message: {e}"),
                        });
                        return Some((item, (body, buf, false)));
                    }
                    Ok(None) => {}
                    Err(e) => return Some((Err(e), (body, buf, true))),
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        return Some((Err(RpcError::Transport(e.to_string())), (body, buf, true)));
                    }
                    None => {
                        return Some((
                            Err(RpcError::Transport(
                                "stream ended without end message".into(),
                            )),
                            (body, buf, true),
                        ));
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

/// Splits one enveloped message off `buf`, if a whole one is there.
fn take_frame(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, RpcError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let flags = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(RpcError::Transport(format!(
            "message of {len} bytes is too large"
        )));
    }
    if flags & 0x01 != 0 {
        return Err(RpcError::Transport(
            "compressed messages are not supported".into(),
        ));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some((flags, buf.split_to(len).freeze())))
}

fn end_of_stream(payload: &[u8]) -> Option<RpcError> {
    #[derive(serde::Deserialize)]
    struct End {
        error: Option<WireError>,
    }
    #[derive(serde::Deserialize)]
    struct WireError {
        code: Option<String>,
        message: Option<String>,
    }
    let end: End = serde_json::from_slice(payload).ok()?;
    end.error.map(|e| RpcError::Status {
        code: e.code.unwrap_or_else(|| "unknown".into()),
        message: e.message.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_only_when_complete() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 3, b'a', b'b'][..]);
        assert!(take_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"c");
        let (flags, payload) = take_frame(&mut buf).unwrap().unwrap();
        assert_eq!((flags, &payload[..]), (0, &b"abc"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_and_compressed_frames_are_refused() {
        let mut big = BytesMut::from(&[0u8, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(take_frame(&mut big).is_err());
        let mut gz = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
        assert!(take_frame(&mut gz).is_err());
    }

    #[test]
    fn end_messages() {
        assert!(end_of_stream(b"{}").is_none());
        let e = end_of_stream(br#"{"error":{"code":"not_found","message":"no"}}"#).unwrap();
        assert_eq!(e.code(), "not_found");
    }

    #[test]
    fn http_errors_map_to_codes() {
        let e = RpcError::from_http(
            StatusCode::NOT_FOUND,
            br#"{"code":"not_found","message":"x"}"#,
        );
        assert_eq!(e.code(), "not_found");
        let e = RpcError::from_http(StatusCode::SERVICE_UNAVAILABLE, b"down");
        assert_eq!(e.code(), "unavailable");
    }
}
