//! The client side: unary and server-streaming calls over HTTP/1.1 (or
//! HTTP/2 with prior knowledge), with per-client headers, a response-header
//! timeout for unary calls, and typed errors.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{
    Code, Codec, Compression, ConnectError, Message, MessageStream, RpcKind, envelope,
    server::DEFAULT_MESSAGE_LIMIT, stream::response_messages,
};

/// A Connect client bound to one base URL. Cloning shares the connection
/// pool; build separate clients (with [`ClientBuilder`]) for traffic that
/// must not share a pool, such as unary calls and long-lived streams.
#[derive(Clone, Debug)]
pub struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
    codec: Codec,
    headers: HeaderMap,
    timeout: Option<Duration>,
    limit: usize,
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    base: String,
    codec: Codec,
    http2: bool,
    timeout: Option<Duration>,
    limit: usize,
    headers: HeaderMap,
}

/// The base URL is not an `http://host:port[/prefix]` URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid Connect base URL {url:?}: {reason}")]
pub struct InvalidBaseUrl {
    pub url: String,
    pub reason: &'static str,
}

impl ClientBuilder {
    /// Sends messages as protobuf (the default) or JSON.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Speaks HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Bounds how long a unary call may take; streams are never bounded.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Bounds the size of one response message.
    pub fn message_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// A header sent with every call.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn build(self) -> Result<Client, InvalidBaseUrl> {
        let uri: Uri = self.base.parse().map_err(|_| InvalidBaseUrl {
            url: self.base.clone(),
            reason: "not a URL",
        })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(InvalidBaseUrl {
                url: self.base,
                reason: "expected http://host:port",
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = HyperClient::builder(TokioExecutor::new())
            .http2_only(self.http2)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Client {
            http,
            base: self.base.trim_end_matches('/').to_owned(),
            codec: self.codec,
            headers: self.headers,
            timeout: self.timeout,
            limit: self.limit,
        })
    }
}

impl Client {
    /// A builder for a client of the server at `base_url` (`http://host:port`).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.into(),
            codec: Codec::Proto,
            http2: false,
            timeout: None,
            limit: DEFAULT_MESSAGE_LIMIT,
            headers: HeaderMap::new(),
        }
    }

    /// A copy of this client (same pool) that also sends `name: value`.
    pub fn with_header(&self, name: HeaderName, value: HeaderValue) -> Self {
        let mut c = self.clone();
        c.headers.insert(name, value);
        c
    }

    /// A copy of this client (same pool) with another unary timeout.
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Self {
        let mut c = self.clone();
        c.timeout = timeout;
        c
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(
        &self,
        path: &str,
        kind: RpcKind,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ConnectError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .body(Full::new(body))
            .map_err(|e| ConnectError::internal(format!("building request for {path}: {e}")))?;
        let headers = req.headers_mut();
        headers.extend(self.headers.clone());
        headers.insert(header::CONTENT_TYPE, self.codec.content_type(kind));
        headers.insert("connect-protocol-version", HeaderValue::from_static("1"));
        if kind == RpcKind::Unary {
            if let Some(t) = self.timeout {
                headers.insert(
                    "connect-timeout-ms",
                    HeaderValue::from(t.as_millis() as u64),
                );
            }
        }
        Ok(req)
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ConnectError> {
        self.http.request(req).await.map_err(|e| {
            let mut msg = format!("calling {}: {e}", self.base);
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            ConnectError::unavailable(msg)
        })
    }

    /// Calls a unary method.
    pub async fn unary<Req: Message, Resp: Message>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, ConnectError> {
        let call = async {
            let request = self.request(path, RpcKind::Unary, self.codec.encode(req))?;
            let resp = self.send(request).await?;
            let status = resp.status();
            let compression = Compression::from_header(
                resp.headers()
                    .get(header::CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok()),
            )?;
            let body = Limited::new(resp.into_body(), self.limit)
                .collect()
                .await
                .map_err(|e| ConnectError::unavailable(format!("reading response of {path}: {e}")))?
                .to_bytes();
            let body = compression.decompress(body, self.limit)?;
            if !status.is_success() {
                return Err(ConnectError::from_body(status.as_u16(), &body));
            }
            self.codec.decode(&body).map_err(|e| {
                ConnectError::new(Code::Internal, format!("response of {path}: {}", e.message))
            })
        };
        match self.timeout {
            None => call.await,
            Some(t) => tokio::time::timeout(t, call).await.unwrap_or_else(|_| {
                Err(ConnectError::new(
                    Code::DeadlineExceeded,
                    format!("{path} took longer than {t:?}"),
                ))
            }),
        }
    }

    /// Calls a server-streaming method; the stream ends at the server's
    /// end-of-stream message, with its error as the last item.
    pub async fn server_stream<Req: Message, Resp: Message>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<MessageStream<Resp>, ConnectError> {
        let body = envelope::encode(0, &self.codec.encode(req));
        let request = self.request(path, RpcKind::Streaming, body)?;
        let resp = self.send(request).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(ConnectError::from_body(status.as_u16(), &body));
        }
        let compression = Compression::from_header(
            resp.headers()
                .get("connect-content-encoding")
                .and_then(|v| v.to_str().ok()),
        )?;
        Ok(response_messages(
            resp.into_body(),
            self.codec,
            compression,
            self.limit,
        ))
    }
}
