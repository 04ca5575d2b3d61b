//! Client for a capsule's envd (E2B's in-sandbox daemon protocol), reached
//! through the agent's data-plane relay: requests go to the agent's proxy
//! address with `E2b-Sandbox-Id`, `E2b-Sandbox-Port: 49983` and
//! `X-Warren-Agent-Token`; the relay adds envd's access token. Pointed at
//! an envd directly (a base URL, no relay headers), it works the same.
//!
//! Covers what the REST API needs: `process.Process` (Start, Connect,
//! List, SendSignal, SendInput, Update), `filesystem.Filesystem` (ListDir,
//! MakeDir, Remove, Stat) and the streamed `/files` download and upload.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use warren_proto::connect::{Client, MessageStream};
use warren_proto::{filesystem as fs, process as pr};

use crate::agent_client::{RpcError, Unreachable};
use crate::rpc::RpcClients;
use crate::transfer::{self, BoxError, Endpoint, HttpClient, ReqBody};

/// envd's port inside every capsule.
pub const ENVD_PORT: u16 = 49983;
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A `/files` transfer (or setting up the client) failed. RPCs fail with
/// envd's Connect error ([`RpcError`]) instead.
#[derive(Debug, thiserror::Error)]
pub enum EnvdError {
    /// envd answered with an error status (its message, and the status).
    #[error("{message}")]
    Files { status: StatusCode, message: String },
    #[error("envd did not answer")]
    Timeout,
    #[error("capsule unreachable: {0}")]
    Unreachable(String),
    /// The relay cannot be addressed.
    #[error(transparent)]
    Host(#[from] Unreachable),
    #[error("user name is not a valid header value")]
    BadUser,
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
}

#[derive(Debug, Clone)]
pub struct EnvdClient {
    /// Unary calls (bounded by a timeout).
    process: pr::ProcessClient,
    /// Start and Connect: streams without a deadline.
    streams: pr::ProcessClient,
    fs: fs::FilesystemClient,
    files: Endpoint,
    http: HttpClient,
    user: String,
}

/// Selects a process by pid or tag (`"123"` is a pid, anything else a tag).
pub fn selector(s: &str) -> pr::ProcessSelector {
    let sel = match s.parse::<u32>() {
        Ok(pid) => pr::process_selector::Selector::Pid(pid),
        Err(_) => pr::process_selector::Selector::Tag(s.to_string()),
    };
    pr::ProcessSelector {
        selector: Some(sel),
    }
}

fn with_headers(client: &Client, headers: &HeaderMap) -> Client {
    headers.iter().fold(client.clone(), |c, (k, v)| {
        c.with_header(k.clone(), v.clone())
    })
}

impl EnvdClient {
    /// envd of `capsule_id` through the relay at `proxy_address`.
    pub fn via_relay(
        rpc: &RpcClients,
        http: HttpClient,
        proxy_address: &str,
        capsule_id: &str,
        agent_token: &str,
        user: &str,
    ) -> Result<Self, EnvdError> {
        let mut headers = HeaderMap::new();
        transfer::header(&mut headers, "e2b-sandbox-id", capsule_id);
        transfer::header(&mut headers, "e2b-sandbox-port", &ENVD_PORT.to_string());
        transfer::header(&mut headers, "x-warren-agent-token", agent_token);
        Self::direct(rpc, http, proxy_address, headers, user)
    }

    /// envd at `addr` with `headers` on every request (tests point this
    /// straight at a local envd, with no headers).
    pub fn direct(
        rpc: &RpcClients,
        http: HttpClient,
        addr: &str,
        mut headers: HeaderMap,
        user: &str,
    ) -> Result<Self, EnvdError> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
        let auth =
            HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| EnvdError::BadUser)?;
        headers.insert(http::header::AUTHORIZATION, auth);
        let (unary, streams) = rpc
            .clients(addr)
            .map_err(|e| Unreachable(format!("bad relay address {addr}: {}", e.message)))?;
        let unary = with_headers(&unary, &headers);
        Ok(Self {
            process: pr::ProcessClient::new(unary.clone()),
            streams: pr::ProcessClient::new(with_headers(&streams, &headers)),
            fs: fs::FilesystemClient::new(unary),
            files: Endpoint::new(addr, headers),
            http,
            user: user.to_string(),
        })
    }

    pub async fn start(
        &self,
        req: pr::StartRequest,
    ) -> Result<MessageStream<pr::StartResponse>, RpcError> {
        self.streams.start(&req).await
    }

    pub async fn connect(
        &self,
        sel: pr::ProcessSelector,
    ) -> Result<MessageStream<pr::ConnectResponse>, RpcError> {
        self.streams
            .connect(&pr::ConnectRequest { process: Some(sel) })
            .await
    }

    pub async fn list(&self) -> Result<Vec<pr::ProcessInfo>, RpcError> {
        Ok(self.process.list(&pr::ListRequest {}).await?.processes)
    }

    pub async fn signal(
        &self,
        sel: pr::ProcessSelector,
        signal: pr::Signal,
    ) -> Result<(), RpcError> {
        let req = pr::SendSignalRequest {
            process: Some(sel),
            signal: signal as i32,
        };
        self.process.send_signal(&req).await.map(drop)
    }

    pub async fn send_pty_input(
        &self,
        sel: pr::ProcessSelector,
        data: Bytes,
    ) -> Result<(), RpcError> {
        let req = pr::SendInputRequest {
            process: Some(sel),
            input: Some(pr::ProcessInput {
                input: Some(pr::process_input::Input::Pty(data)),
            }),
        };
        self.process.send_input(&req).await.map(drop)
    }

    pub async fn resize_pty(
        &self,
        sel: pr::ProcessSelector,
        cols: u32,
        rows: u32,
    ) -> Result<(), RpcError> {
        let req = pr::UpdateRequest {
            process: Some(sel),
            pty: Some(pr::Pty {
                size: Some(pr::pty::Size { cols, rows }),
            }),
        };
        self.process.update(&req).await.map(drop)
    }

    pub async fn list_dir(&self, path: &str, depth: u32) -> Result<Vec<fs::EntryInfo>, RpcError> {
        let req = fs::ListDirRequest {
            path: path.into(),
            depth,
        };
        Ok(self.fs.list_dir(&req).await?.entries)
    }

    pub async fn make_dir(&self, path: &str) -> Result<Option<fs::EntryInfo>, RpcError> {
        Ok(self
            .fs
            .make_dir(&fs::MakeDirRequest { path: path.into() })
            .await?
            .entry)
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<Option<fs::EntryInfo>, RpcError> {
        let req = fs::MoveRequest {
            source: from.into(),
            destination: to.into(),
        };
        Ok(self.fs.r#move(&req).await?.entry)
    }

    pub async fn remove(&self, path: &str) -> Result<(), RpcError> {
        self.fs
            .remove(&fs::RemoveRequest { path: path.into() })
            .await
            .map(drop)
    }

    pub async fn stat(&self, path: &str) -> Result<Option<fs::EntryInfo>, RpcError> {
        Ok(self
            .fs
            .stat(&fs::StatRequest { path: path.into() })
            .await?
            .entry)
    }

    fn files_path(&self, path: &str) -> String {
        format!(
            "/files?path={}&username={}",
            urlencode(path),
            urlencode(&self.user)
        )
    }

    /// Streams a file out of the capsule: the response body is envd's,
    /// passed on chunk by chunk.
    pub async fn download(&self, path: &str) -> Result<hyper::body::Incoming, EnvdError> {
        let req = self
            .files
            .request(Method::GET, &self.files_path(path))
            .body(transfer::full_body(Bytes::new()))?;
        let resp = self.send(req).await?;
        Ok(resp.into_body())
    }

    /// Streams `data` into `path` inside the capsule as envd's multipart
    /// upload; nothing is buffered beyond one chunk.
    pub async fn upload<S>(&self, path: &str, data: S) -> Result<(), EnvdError>
    where
        S: Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
    {
        let boundary = format!("warren-{}", crate::ids::new_secret(24));
        let head = Bytes::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let parts = futures::stream::once(async move { Ok::<_, BoxError>(head) })
            .chain(data)
            .chain(futures::stream::once(async move { Ok(tail) }))
            .map(|r| r.map(hyper::body::Frame::data));
        let body: ReqBody = StreamBody::new(parts).boxed_unsync();
        let req = self
            .files
            .request(Method::POST, &self.files_path(path))
            .header(
                http::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)?;
        self.send(req).await.map(drop)
    }

    async fn send(
        &self,
        req: http::Request<ReqBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, EnvdError> {
        let resp = tokio::time::timeout(OPEN_TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| EnvdError::Timeout)?
            .map_err(|e| EnvdError::Unreachable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Err(files_error(status, &body))
    }
}

/// envd's `/files` errors are `{"code": <http status>, "message": ...}`.
fn files_error(status: StatusCode, body: &[u8]) -> EnvdError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    EnvdError::Files { status, message }
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(
            selector("42").selector,
            Some(pr::process_selector::Selector::Pid(42))
        );
        assert_eq!(
            selector("proc-1").selector,
            Some(pr::process_selector::Selector::Tag("proc-1".into()))
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(urlencode("/a b/ü&x=1"), "/a%20b/%C3%BC%26x%3D1");
    }

    #[test]
    fn files_errors_keep_envds_message() {
        assert_eq!(
            files_error(
                StatusCode::NOT_FOUND,
                br#"{"code":404,"message":"no such file"}"#
            )
            .to_string(),
            "no such file"
        );
        assert_eq!(
            files_error(StatusCode::BAD_REQUEST, b"dir").to_string(),
            "dir"
        );
    }
}
