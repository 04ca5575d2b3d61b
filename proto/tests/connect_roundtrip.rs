//! Connect server and client talking over real HTTP/1.1 and HTTP/2 (prior
//! knowledge) connections on loopback, plus raw-wire checks of what a
//! misbehaving client gets back.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use warren_proto::{
    connect::{Client, Code, Codec, ConnectError, MessageStream, RequestContext, Router, envelope},
    process::{
        ListRequest, ListResponse, ProcessConfig, ProcessInfo, StartRequest, StartResponse,
        StreamInputRequest, StreamInputResponse, process_event, process_paths,
        stream_input_request,
    },
};

const LIST: &str = process_paths::LIST;
const START: &str = process_paths::START;
const STREAM_INPUT: &str = process_paths::STREAM_INPUT;

/// A test service: List echoes the caller's `x-tag` header as a process tag
/// (or fails with the code named by `x-fail`), Start streams one data event
/// per argument then fails if the command is `fail`, StreamInput counts the
/// bytes it received.
fn router() -> Router {
    Router::new()
        .message_limit(64 * 1024)
        .unary(LIST, |ctx: RequestContext, _req: ListRequest| async move {
            if let Some(code) = ctx.headers.get("x-fail") {
                let code = code.to_str().unwrap().parse::<Code>().unwrap();
                return Err(ConnectError::new(code, "asked to fail"));
            }
            if ctx.headers.contains_key("x-slow") {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let tag = ctx
                .headers
                .get("x-tag")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok(ListResponse {
                processes: vec![ProcessInfo {
                    pid: 42,
                    tag,
                    config: Some(ProcessConfig {
                        cmd: "sleep".into(),
                        ..Default::default()
                    }),
                }],
            })
        })
        .server_stream(START, |_ctx, req: StartRequest| async move {
            let config = req.process.unwrap_or_default();
            if config.cmd == "refuse" {
                return Err(ConnectError::invalid_argument("refused before starting"));
            }
            let fail = config.cmd == "fail";
            let events = config.args.into_iter().map(|a| {
                Ok(StartResponse {
                    event: Some(warren_proto::process::ProcessEvent {
                        event: Some(process_event::Event::Data(process_event::DataEvent {
                            output: Some(process_event::data_event::Output::Stdout(Bytes::from(a))),
                        })),
                    }),
                })
            });
            let tail = fail.then(|| Err(ConnectError::not_found("process vanished")));
            let s: MessageStream<StartResponse> = Box::pin(stream::iter(events.chain(tail)));
            Ok(s)
        })
        .client_stream(
            STREAM_INPUT,
            |_ctx, mut reqs: MessageStream<StreamInputRequest>| async move {
                let mut total = 0usize;
                while let Some(req) = reqs.next().await {
                    if let Some(stream_input_request::Event::Data(d)) = req?.event {
                        if let Some(warren_proto::process::process_input::Input::Stdin(b)) =
                            d.input.and_then(|i| i.input)
                        {
                            total += b.len();
                        }
                    }
                }
                // The response carries the byte count in its (empty) type's
                // place: fail with it so the test can read it back.
                Err::<StreamInputResponse, _>(ConnectError::new(Code::Aborted, total.to_string()))
            },
        )
}

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let router = router.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let router = router.clone();
                    async move { Ok::<_, std::convert::Infallible>(router.call(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

fn clients(addr: SocketAddr) -> Vec<Client> {
    let base = format!("http://{addr}");
    let mut out = Vec::new();
    for codec in [Codec::Proto, Codec::Json] {
        out.push(Client::builder(&base).codec(codec).build().unwrap());
        out.push(
            Client::builder(&base)
                .codec(codec)
                .http2_prior_knowledge()
                .build()
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn unary_round_trip_over_both_http_versions_and_codecs() {
    let addr = serve(router()).await;
    for client in clients(addr) {
        let client = client.with_header("x-tag".parse().unwrap(), "t1".parse().unwrap());
        let resp: ListResponse = client.unary(LIST, &ListRequest {}).await.unwrap();
        assert_eq!(resp.processes[0].pid, 42);
        assert_eq!(resp.processes[0].tag.as_deref(), Some("t1"));
    }
}

#[tokio::test]
async fn unary_errors_keep_their_code() {
    let addr = serve(router()).await;
    for client in clients(addr) {
        for code in [
            Code::NotFound,
            Code::Unauthenticated,
            Code::ResourceExhausted,
            Code::Internal,
        ] {
            let c = client.with_header("x-fail".parse().unwrap(), code.as_str().parse().unwrap());
            let err = c
                .unary::<_, ListResponse>(LIST, &ListRequest {})
                .await
                .unwrap_err();
            assert_eq!(err.code, code);
            assert_eq!(err.message, "asked to fail");
        }
    }
}

#[tokio::test]
async fn server_stream_delivers_messages_then_the_end_error() {
    let addr = serve(router()).await;
    for client in clients(addr) {
        let req = StartRequest {
            process: Some(ProcessConfig {
                cmd: "fail".into(),
                args: vec!["a".into(), "b".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let items: Vec<_> = client
            .server_stream::<_, StartResponse>(START, &req)
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert_eq!(items[2].as_ref().unwrap_err().code, Code::NotFound);

        let ok = StartRequest {
            process: Some(ProcessConfig {
                cmd: "echo".into(),
                args: vec!["x".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let items: Vec<_> = client
            .server_stream::<_, StartResponse>(START, &ok)
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_ok());

        let refuse = StartRequest {
            process: Some(ProcessConfig {
                cmd: "refuse".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let items: Vec<_> = client
            .server_stream::<_, StartResponse>(START, &refuse)
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap_err().code, Code::InvalidArgument);
    }
}

#[tokio::test]
async fn deadline_from_the_client_timeout_is_enforced_by_the_server() {
    let addr = serve(router()).await;
    let client = Client::builder(format!("http://{addr}"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .with_header("x-slow".parse().unwrap(), "1".parse().unwrap());
    let err = client
        .unary::<_, ListResponse>(LIST, &ListRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::DeadlineExceeded);
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::builder(format!("http://{addr}")).build().unwrap();
    let err = client
        .unary::<_, ListResponse>(LIST, &ListRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
}

/// Sends one raw HTTP/1.1 request and returns (status, headers text, body).
async fn raw(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    let mut body = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let len =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap(), 16).unwrap();
        data = &data[line_end + 2..];
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&data[..len]);
        data = &data[len + 2..];
    }
}

fn end_stream_error(body: &[u8]) -> serde_json::Value {
    let mut dec = envelope::Decoder::new(1 << 20);
    dec.push(body);
    let mut last = None;
    while let Some(env) = dec.next().unwrap() {
        last = Some(env);
    }
    let last = last.expect("an end-of-stream envelope");
    assert!(last.is_end_stream());
    serde_json::from_slice::<serde_json::Value>(&last.data).unwrap()["error"].clone()
}

#[tokio::test]
async fn malformed_requests_get_typed_errors() {
    let addr = serve(router()).await;

    let (status, _, body) = raw(addr, LIST, "application/json", "", b"{not json").await;
    assert_eq!(status, 400);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["code"], "invalid_argument");

    let (status, _, body) = raw(addr, "/process.Process/Nope", "application/json", "", b"{}").await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("unimplemented"));

    let (status, head, _) = raw(addr, LIST, "text/plain", "", b"{}").await;
    assert_eq!(status, 415);
    assert!(head.to_ascii_lowercase().contains("accept-post"));

    // A unary content type on a streaming method.
    let (status, _, _) = raw(addr, START, "application/json", "", b"{}").await;
    assert_eq!(status, 415);

    let (status, _, body) = raw(
        addr,
        LIST,
        "application/json",
        "connect-timeout-ms: soon\r\n",
        b"{}",
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("connect-timeout-ms"));

    let (status, _, body) = raw(
        addr,
        LIST,
        "application/json",
        "connect-protocol-version: 2\r\n",
        b"{}",
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("connect-protocol-version"));

    let big = vec![b' '; 65 * 1024];
    let (status, _, body) = raw(addr, LIST, "application/json", "", &big).await;
    assert_eq!(status, 429);
    assert!(String::from_utf8_lossy(&body).contains("resource_exhausted"));
}

#[tokio::test]
async fn malformed_streams_end_with_an_error_message() {
    let addr = serve(router()).await;
    let msg = br#"{"process":{"cmd":"echo","args":["a"]}}"#;
    let framed = envelope::encode(0, msg);

    // Truncated: the length prefix promises more than the body holds.
    let (status, _, body) = raw(
        addr,
        START,
        "application/connect+json",
        "",
        &framed[..framed.len() - 3],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(end_stream_error(&body)["code"], "invalid_argument");

    // No message at all.
    let (_, _, body) = raw(addr, START, "application/connect+json", "", b"").await;
    assert_eq!(end_stream_error(&body)["code"], "invalid_argument");

    // Two messages for a server-streaming method.
    let mut two = framed.to_vec();
    two.extend_from_slice(&framed);
    let (_, _, body) = raw(addr, START, "application/connect+json", "", &two).await;
    assert_eq!(end_stream_error(&body)["code"], "invalid_argument");

    // Reserved flag bits.
    let mut bad = framed.to_vec();
    bad[0] = 0x40;
    let (_, _, body) = raw(addr, START, "application/connect+json", "", &bad).await;
    assert_eq!(end_stream_error(&body)["code"], "invalid_argument");

    // A message over the limit.
    let huge = envelope::encode(0, &vec![b' '; 70 * 1024]);
    let (_, _, body) = raw(addr, START, "application/connect+json", "", &huge).await;
    assert_eq!(end_stream_error(&body)["code"], "resource_exhausted");

    // Compressed flag without a stream compression.
    let mut comp = framed.to_vec();
    comp[0] = envelope::FLAG_COMPRESSED;
    let (_, _, body) = raw(addr, START, "application/connect+json", "", &comp).await;
    assert_eq!(end_stream_error(&body)["code"], "invalid_argument");

    // A well-formed one succeeds and ends with an empty end-of-stream message.
    let (_, _, body) = raw(addr, START, "application/connect+json", "", &framed).await;
    assert!(end_stream_error(&body).is_null());
}

#[tokio::test]
async fn gzip_compressed_requests_are_accepted() {
    use std::io::Write;
    let addr = serve(router()).await;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b"{}").unwrap();
    let gz = enc.finish().unwrap();
    let (status, _, body) = raw(
        addr,
        LIST,
        "application/json",
        "content-encoding: gzip\r\n",
        &gz,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let msg = br#"{"process":{"cmd":"echo","args":["zz"]}}"#;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(msg).unwrap();
    let framed = envelope::encode(envelope::FLAG_COMPRESSED, &enc.finish().unwrap());
    let (_, _, body) = raw(
        addr,
        START,
        "application/connect+json",
        "connect-content-encoding: gzip\r\n",
        &framed,
    )
    .await;
    assert!(end_stream_error(&body).is_null());
    assert!(String::from_utf8_lossy(&body).contains("eno=")); // base64("zz")
}

#[tokio::test]
async fn client_streaming_reads_every_message_over_http1_and_h2() {
    let addr = serve(router()).await;
    let data = |n: usize| StreamInputRequest {
        event: Some(stream_input_request::Event::Data(
            stream_input_request::DataEvent {
                input: Some(warren_proto::process::ProcessInput {
                    input: Some(warren_proto::process::process_input::Input::Stdin(
                        Bytes::from(vec![1u8; n]),
                    )),
                }),
            },
        )),
    };
    let mut body = Vec::new();
    for n in [10, 20, 30] {
        body.extend_from_slice(&envelope::encode(0, &Codec::Proto.encode(&data(n))));
    }
    // HTTP/1.1, chunked request body sent in pieces.
    let (_, _, resp) = raw(addr, STREAM_INPUT, "application/connect+proto", "", &body).await;
    let err = end_stream_error(&resp);
    assert_eq!(err["code"], "aborted");
    assert_eq!(err["message"], "60");

    // HTTP/2 prior knowledge.
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{addr}{STREAM_INPUT}"))
        .header("content-type", "application/connect+proto")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(end_stream_error(&bytes)["message"], "60");
}
