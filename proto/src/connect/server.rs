//! The server side: a router from `/package.Service/Method` paths to typed
//! handlers, speaking Connect's unary, server-streaming and client-streaming
//! protocols over any HTTP version hyper serves.

use std::{
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, future::BoxFuture, stream};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, StreamBody};

use super::{
    BoxError, Code, Codec, Compression, ConnectError, Message, MessageStream, RpcKind,
    compression::too_large,
    envelope,
    stream::{decode_envelope, end_stream, envelopes, request_messages},
};

/// The response body type of every Connect handler.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The default bound on one message (4 MiB).
pub const DEFAULT_MESSAGE_LIMIT: usize = 4 << 20;

/// What a handler knows about its call besides the message.
#[derive(Debug)]
pub struct RequestContext {
    /// The request's HTTP headers.
    pub headers: HeaderMap,
    /// Request extensions (servers put per-connection facts here).
    pub extensions: http::Extensions,
    /// When the client stops waiting (`Connect-Timeout-Ms`).
    pub deadline: Option<Instant>,
}

type Incoming = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

type Handler = Arc<
    dyn Fn(
            RequestContext,
            Incoming,
            Codec,
            Compression,
            usize,
        ) -> BoxFuture<'static, Response<ResponseBody>>
        + Send
        + Sync,
>;

#[derive(Clone)]
struct Route {
    kind: RpcKind,
    handler: Handler,
}

/// Routes Connect calls to handlers. Build it once, then share it (it is
/// cheap to clone: handlers are reference-counted).
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<&'static str, Route>,
    limit: Option<usize>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bounds the size of one request message (default [`DEFAULT_MESSAGE_LIMIT`]).
    pub fn message_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    fn add(mut self, path: &'static str, kind: RpcKind, handler: Handler) -> Self {
        self.routes.insert(path, Route { kind, handler });
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Router) -> Self {
        self.routes.extend(other.routes);
        self
    }

    /// Registers a unary method.
    pub fn unary<Req, Resp, F, Fut>(self, path: &'static str, f: F) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ConnectError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |ctx, body, codec, compression, limit| {
            let f = f.clone();
            async move {
                let deadline = ctx.deadline;
                let result = async {
                    let data = read_all(body, limit).await?;
                    let data = compression.decompress(data, limit)?;
                    let req: Req = codec.decode(&data)?;
                    with_deadline(deadline, f(ctx, req)).await
                }
                .await;
                match result {
                    Ok(resp) => ok_response(codec, RpcKind::Unary, Full::new(codec.encode(&resp))),
                    Err(e) => error_response(&e),
                }
            }
            .boxed()
        });
        self.add(path, RpcKind::Unary, handler)
    }

    /// Registers a server-streaming method.
    pub fn server_stream<Req, Resp, F, Fut>(self, path: &'static str, f: F) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<MessageStream<Resp>, ConnectError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |ctx, body, codec, compression, limit| {
            let f = f.clone();
            async move {
                let deadline = ctx.deadline;
                let started = async {
                    let req: Req = single_message(body, codec, compression, limit).await?;
                    with_deadline(deadline, f(ctx, req)).await
                }
                .await;
                let messages = match started {
                    Ok(messages) => messages,
                    Err(e) => Box::pin(stream::iter([Err(e)])),
                };
                stream_response(codec, messages, deadline)
            }
            .boxed()
        });
        self.add(path, RpcKind::Streaming, handler)
    }

    /// Registers a client-streaming method.
    pub fn client_stream<Req, Resp, F, Fut>(self, path: &'static str, f: F) -> Self
    where
        Req: Message,
        Resp: Message,
        F: Fn(RequestContext, MessageStream<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ConnectError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |ctx, body, codec, compression, limit| {
            let f = f.clone();
            async move {
                let deadline = ctx.deadline;
                let requests = request_messages(body, codec, compression, limit);
                let result = with_deadline(deadline, f(ctx, requests)).await;
                let messages: MessageStream<Resp> = Box::pin(stream::iter([result]));
                stream_response(codec, messages, deadline)
            }
            .boxed()
        });
        self.add(path, RpcKind::Streaming, handler)
    }

    /// Whether `path` names a method of this router.
    pub fn handles(&self, path: &str) -> bool {
        self.routes.contains_key(path)
    }

    /// Serves one request. Requests for paths this router does not know get
    /// a 404 with an `unimplemented` Connect error.
    pub async fn call<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let Some(route) = self.routes.get(parts.uri.path()) else {
            let err = ConnectError::unimplemented(format!("no method {}", parts.uri.path()));
            return with_status(error_response(&err), StatusCode::NOT_FOUND);
        };
        if parts.method != Method::POST {
            let mut resp = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "Connect methods take POST\n",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let codec = match Codec::from_content_type(content_type) {
            Some((codec, kind)) if kind == route.kind => codec,
            _ => {
                let accepted = match route.kind {
                    RpcKind::Unary => "application/json, application/proto",
                    RpcKind::Streaming => "application/connect+json, application/connect+proto",
                };
                let mut resp = plain(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &format!("unsupported content type {content_type:?}; expecting {accepted}\n"),
                );
                resp.headers_mut()
                    .insert("accept-post", HeaderValue::from_static(accepted));
                return resp;
            }
        };
        let prepared = prepare(&parts.headers, route.kind);
        let (deadline, compression) = match prepared {
            Ok(p) => p,
            Err(e) => {
                return match route.kind {
                    RpcKind::Unary => error_response(&e),
                    RpcKind::Streaming => stream_body(codec, stream::iter([end_stream(Err(&e))])),
                };
            }
        };
        let ctx = RequestContext {
            headers: parts.headers,
            extensions: parts.extensions,
            deadline,
        };
        let body = body.map_err(Into::into).boxed_unsync();
        let limit = self.limit.unwrap_or(DEFAULT_MESSAGE_LIMIT);
        (route.handler)(ctx, body, codec, compression, limit).await
    }
}

/// Reads the protocol headers: version, timeout, compression.
fn prepare(
    headers: &HeaderMap,
    kind: RpcKind,
) -> Result<(Option<Instant>, Compression), ConnectError> {
    if let Some(v) = headers.get("connect-protocol-version") {
        if v != "1" {
            return Err(ConnectError::invalid_argument(format!(
                "connect-protocol-version must be \"1\", got {v:?}"
            )));
        }
    }
    let deadline = match headers.get("connect-timeout-ms") {
        None => None,
        Some(v) => {
            let ms = v
                .to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.len() <= 10)
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    ConnectError::invalid_argument(format!("invalid connect-timeout-ms {v:?}"))
                })?;
            Some(Instant::now() + Duration::from_millis(ms))
        }
    };
    let encoding_header = match kind {
        RpcKind::Unary => header::CONTENT_ENCODING.as_str(),
        RpcKind::Streaming => "connect-content-encoding",
    };
    let compression =
        Compression::from_header(headers.get(encoding_header).and_then(|v| v.to_str().ok()))?;
    Ok((deadline, compression))
}

async fn with_deadline<T>(
    deadline: Option<Instant>,
    fut: impl Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    match deadline {
        None => fut.await,
        Some(at) => tokio::time::timeout_at(at.into(), fut)
            .await
            .unwrap_or_else(|_| Err(deadline_exceeded())),
    }
}

fn deadline_exceeded() -> ConnectError {
    ConnectError::new(
        Code::DeadlineExceeded,
        "the call's deadline (connect-timeout-ms) passed",
    )
}

async fn read_all(mut body: Incoming, limit: usize) -> Result<Bytes, ConnectError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ConnectError::unavailable(format!("reading request: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The single request message of a server-streaming call.
async fn single_message<T: Message>(
    body: Incoming,
    codec: Codec,
    compression: Compression,
    limit: usize,
) -> Result<T, ConnectError> {
    let mut envs = Box::pin(envelopes(body, limit));
    let first = envs.next().await.unwrap_or_else(|| {
        Err(ConnectError::invalid_argument(
            "request stream holds no message",
        ))
    })?;
    if first.is_end_stream() {
        return Err(ConnectError::invalid_argument(
            "end-of-stream envelope in a request",
        ));
    }
    if let Some(extra) = envs.next().await {
        extra?;
        return Err(ConnectError::invalid_argument(
            "server-streaming request holds more than one message",
        ));
    }
    decode_envelope(first, codec, compression, limit)
}

fn ok_response(
    codec: Codec,
    kind: RpcKind,
    body: impl Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
) -> Response<ResponseBody> {
    let mut resp = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, codec.content_type(kind));
    resp
}

/// A unary error: the code's HTTP status and a JSON body.
pub fn error_response(err: &ConnectError) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from(err.to_json()));
    let mut resp = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn with_status(mut resp: Response<ResponseBody>, status: StatusCode) -> Response<ResponseBody> {
    *resp.status_mut() = status;
    resp
}

fn plain(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from(text.to_owned()));
    let mut resp = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A streaming response: every message enveloped, then the end-of-stream
/// envelope carrying the error that ended the stream, if any. The deadline
/// ends the stream with `deadline_exceeded`.
fn stream_response<T: Message>(
    codec: Codec,
    messages: MessageStream<T>,
    deadline: Option<Instant>,
) -> Response<ResponseBody> {
    let deadline = deadline.map(|at| Box::pin(tokio::time::sleep_until(at.into())));
    let state = Some((messages, deadline));
    let frames = stream::unfold(state, move |state| async move {
        let (mut messages, mut deadline) = state?;
        let next = match deadline.as_mut() {
            None => messages.next().await,
            Some(sleep) => tokio::select! {
                next = messages.next() => next,
                () = sleep => Some(Err(deadline_exceeded())),
            },
        };
        match next {
            Some(Ok(msg)) => {
                let frame = envelope::encode(0, &codec.encode(&msg));
                Some((frame, Some((messages, deadline))))
            }
            Some(Err(e)) => Some((end_stream(Err(&e)), None)),
            None => Some((end_stream(Ok(())), None)),
        }
    });
    stream_body(codec, frames)
}

fn stream_body(
    codec: Codec,
    frames: impl futures_util::Stream<Item = Bytes> + Send + 'static,
) -> Response<ResponseBody> {
    let frames = frames.map(|f| Ok::<_, BoxError>(http_body::Frame::data(f)));
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, codec.content_type(RpcKind::Streaming));
    resp
}
