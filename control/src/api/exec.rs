//! Commands in a capsule, through envd's `process.Process`: foreground
//! exec (collects output), background exec (202 with pid and tag), the
//! process list, kill by pid or tag, and two WebSockets: a new command's
//! output (`exec/stream`) and re-attaching to a running one
//! (`processes/{selector}/stream`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use warren_proto::process as pr;

use super::extract::{ApiJson, ApiQuery};
use super::session::{CapsuleSession, check_env, check_path, ws_fail, ws_json, ws_principal};
use crate::agent_client::rpc_to_api;
use crate::app::AppState;
use crate::auth::Principal;
use crate::envd_client::selector;
use crate::error::{ApiError, ApiResult, ErrorBody};
use warren_proto::connect::MessageStream;

/// Output a foreground exec keeps (per stream); the rest is dropped.
const MAX_OUTPUT: usize = 16 << 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub cmd: String,
    /// Arguments; without them `cmd` is a shell string.
    pub args: Option<Vec<String>>,
    /// Foreground time limit in seconds (default 30).
    pub timeout_sec: Option<u32>,
    #[serde(default)]
    pub background: bool,
    /// Tag of a background process (generated when omitted).
    pub tag: Option<String>,
    pub envs: Option<HashMap<String, String>>,
    pub cwd: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecResponse {
    pub sandbox_id: String,
    pub cmd: String,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    /// `utf-8`, or `base64` when the output is not valid UTF-8.
    pub encoding: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackgroundExecResponse {
    pub sandbox_id: String,
    pub cmd: String,
    pub pid: u32,
    pub tag: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessEntry {
    pub pid: u32,
    pub tag: Option<String>,
    pub cmd: String,
    pub args: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessList {
    pub processes: Vec<ProcessEntry>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SignalQuery {
    pub signal: Option<String>,
}

fn check_exec(req: &ExecRequest) -> ApiResult<()> {
    if req.cmd.trim().is_empty() {
        return Err(ApiError::invalid("cmd is required"));
    }
    if req.cmd.len() > 64 << 10 || req.cmd.contains('\0') {
        return Err(ApiError::invalid("cmd must be at most 64 KiB without NUL"));
    }
    if let Some(a) = &req.args {
        if a.len() > 4096 || a.iter().any(|s| s.contains('\0')) {
            return Err(ApiError::invalid("args: at most 4096, without NUL"));
        }
    }
    if let Some(t) = req.timeout_sec {
        if t == 0 || t > 24 * 3600 {
            return Err(ApiError::invalid("timeout_sec must be between 1 and 86400"));
        }
    }
    if let Some(tag) = &req.tag {
        check_tag(tag)?;
    }
    if let Some(cwd) = &req.cwd {
        check_path(cwd)?;
    }
    if let Some(e) = &req.envs {
        check_env(e)?;
    }
    Ok(())
}

fn check_tag(tag: &str) -> ApiResult<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag.parse::<u32>().is_err()
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "tag must be 1 to 64 of [A-Za-z0-9._-] and not a number",
        ))
    }
}

pub fn new_tag(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn start_request(
    s: &CapsuleSession,
    cmd: &str,
    args: Option<Vec<String>>,
    envs: Option<HashMap<String, String>>,
    cwd: Option<String>,
    tag: Option<String>,
    pty: Option<pr::Pty>,
) -> pr::StartRequest {
    let (cmd, args) = s.command(cmd, args);
    pr::StartRequest {
        process: Some(pr::ProcessConfig {
            cmd,
            args,
            envs: envs.unwrap_or_default(),
            cwd,
        }),
        pty,
        tag,
        stdin: Some(pty.is_some()),
    }
}

/// The pid of a just-started process (its first event).
async fn await_start(stream: &mut MessageStream<pr::StartResponse>) -> ApiResult<u32> {
    loop {
        match stream.next().await {
            Some(Ok(pr::StartResponse { event: Some(ev) })) => match ev.event {
                Some(pr::process_event::Event::Start(s)) => return Ok(s.pid),
                Some(pr::process_event::Event::End(e)) => {
                    return Err(ApiError::invalid(format!(
                        "process ended before starting: {}",
                        e.error.unwrap_or(e.status)
                    )));
                }
                _ => {}
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(rpc_to_api(e)),
            None => {
                return Err(ApiError::Agent(
                    "envd closed the stream before the process started".into(),
                ));
            }
        }
    }
}

/// Run a command: 200 with its output, or 202 `{pid, tag}` in the background.
#[utoipa::path(post, path = "/v1/capsules/{id}/exec", tag = "capsules", params(("id" = String, Path)),
    request_body = ExecRequest,
    responses((status = 200, body = ExecResponse), (status = 202, body = BackgroundExecResponse),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn exec(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    check_exec(&req)?;
    let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
    let shown = req.cmd.clone();
    if req.background {
        let tag = req.tag.clone().unwrap_or_else(|| new_tag("proc"));
        let start = start_request(
            &s,
            &req.cmd,
            req.args,
            req.envs,
            req.cwd,
            Some(tag.clone()),
            None,
        );
        let mut stream = s.envd.start(start).await.map_err(rpc_to_api)?;
        let pid = await_start(&mut stream).await?;
        // envd keeps the process when this stream closes; it is re-attached
        // through processes/{pid|tag}/stream.
        drop(stream);
        let body = BackgroundExecResponse {
            sandbox_id: id,
            cmd: shown,
            pid,
            tag,
        };
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let timeout = Duration::from_secs(u64::from(req.timeout_sec.unwrap_or(30)));
    let started = Instant::now();
    let start = start_request(&s, &req.cmd, req.args, req.envs, req.cwd, None, None);
    let mut stream = s.envd.start(start).await.map_err(rpc_to_api)?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut pid = None;
    let collect = async {
        while let Some(item) = stream.next().await {
            let ev = item.map_err(rpc_to_api)?.event.and_then(|e| e.event);
            match ev {
                Some(pr::process_event::Event::Start(st)) => pid = Some(st.pid),
                Some(pr::process_event::Event::Data(d)) => match d.output {
                    Some(pr::process_event::data_event::Output::Stdout(b)) => append(&mut out, &b),
                    Some(pr::process_event::data_event::Output::Stderr(b)) => append(&mut err, &b),
                    _ => {}
                },
                Some(pr::process_event::Event::End(e)) => return Ok(e.exit_code),
                _ => {}
            }
        }
        Err(ApiError::Agent(
            "envd closed the stream before the process ended".into(),
        ))
    };
    let exit_code = match tokio::time::timeout(timeout, collect).await {
        Ok(r) => r?,
        Err(_) => {
            if let Some(pid) = pid {
                let _ = s
                    .envd
                    .signal(selector(&pid.to_string()), pr::Signal::Sigkill)
                    .await;
            }
            return Err(ApiError::Timeout(format!(
                "command did not finish within {}s and was killed",
                timeout.as_secs()
            )));
        }
    };
    let (stdout, stderr, encoding) = match (String::from_utf8(out), String::from_utf8(err)) {
        (Ok(o), Ok(e)) => (o, e, "utf-8"),
        (o, e) => {
            let b64 = base64::engine::general_purpose::STANDARD;
            let raw = |r: Result<String, std::string::FromUtf8Error>| match r {
                Ok(s) => s.into_bytes(),
                Err(e) => e.into_bytes(),
            };
            (b64.encode(raw(o)), b64.encode(raw(e)), "base64")
        }
    };
    Ok(Json(ExecResponse {
        sandbox_id: id,
        cmd: shown,
        stdout,
        stderr,
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        encoding: encoding.into(),
    })
    .into_response())
}

fn append(buf: &mut Vec<u8>, b: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&b[..b.len().min(room)]);
}

/// Processes envd started (background ones, PTYs, the template's).
#[utoipa::path(get, path = "/v1/capsules/{id}/processes", tag = "capsules", params(("id" = String, Path)),
    responses((status = 200, body = ProcessList), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn list_processes(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ProcessList>> {
    let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
    let procs = s.envd.list().await.map_err(rpc_to_api)?;
    Ok(Json(ProcessList {
        processes: procs
            .into_iter()
            .map(|p| {
                let cfg = p.config.unwrap_or_default();
                ProcessEntry {
                    pid: p.pid,
                    tag: p.tag,
                    cmd: cfg.cmd,
                    args: cfg.args,
                }
            })
            .collect(),
    }))
}

/// Signal a process by pid or tag (SIGKILL, or `?signal=SIGTERM`).
#[utoipa::path(delete, path = "/v1/capsules/{id}/processes/{selector}", tag = "capsules",
    params(("id" = String, Path), ("selector" = String, Path), ("signal" = Option<String>, Query)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn kill_process(
    State(app): State<AppState>,
    p: Principal,
    Path((id, sel)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<SignalQuery>,
) -> ApiResult<StatusCode> {
    let signal = match q.signal.as_deref() {
        None | Some("SIGKILL") => pr::Signal::Sigkill,
        Some("SIGTERM") => pr::Signal::Sigterm,
        Some(_) => return Err(ApiError::invalid("signal must be SIGKILL or SIGTERM")),
    };
    if sel.parse::<u32>().is_err() {
        check_tag(&sel)?;
    }
    let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
    s.envd
        .signal(selector(&sel), signal)
        .await
        .map_err(rpc_to_api)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A process event as the WebSocket sends it; `None` for keepalives.
fn ws_event(ev: pr::ProcessEvent) -> Option<(serde_json::Value, bool)> {
    use pr::process_event::Event;
    use pr::process_event::data_event::Output;
    match ev.event? {
        Event::Start(s) => Some((json!({ "type": "start", "pid": s.pid }), false)),
        Event::Data(d) => match d.output? {
            Output::Stdout(b) => Some((
                json!({ "type": "stdout", "data": String::from_utf8_lossy(&b) }),
                false,
            )),
            Output::Stderr(b) => Some((
                json!({ "type": "stderr", "data": String::from_utf8_lossy(&b) }),
                false,
            )),
            Output::Pty(b) => Some((
                json!({ "type": "stdout", "data": String::from_utf8_lossy(&b) }),
                false,
            )),
        },
        Event::End(e) => Some((json!({ "type": "exit", "exit_code": e.exit_code }), true)),
        Event::Keepalive(_) => None,
    }
}

/// Forwards envd events to the socket until the process ends, the client
/// leaves, or it asks to stop (SIGKILL).
async fn pump<T>(
    mut socket: WebSocket,
    mut events: MessageStream<T>,
    s: &CapsuleSession,
    event_of: fn(T) -> Option<pr::ProcessEvent>,
) where
    T: Send + 'static,
{
    let mut pid: Option<u32> = None;
    loop {
        tokio::select! {
            item = events.next() => match item {
                Some(Ok(msg)) => {
                    let Some(ev) = event_of(msg) else { continue };
                    if let Some(pr::process_event::Event::Start(st)) = &ev.event {
                        pid = Some(st.pid);
                    }
                    if let Some((frame, last)) = ws_event(ev) {
                        if !ws_json(&mut socket, frame).await || last {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = ws_json(&mut socket, json!({ "type": "error", "data": e.to_string() })).await;
                    break;
                }
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let stop = serde_json::from_str::<serde_json::Value>(t.as_str())
                        .ok()
                        .is_some_and(|v| v["type"] == "stop");
                    if let (true, Some(pid)) = (stop, pid) {
                        let _ = s.envd.signal(selector(&pid.to_string()), pr::Signal::Sigkill).await;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

#[derive(Debug, Deserialize)]
struct StreamStart {
    #[serde(rename = "type")]
    kind: String,
    cmd: String,
    args: Option<Vec<String>>,
    envs: Option<HashMap<String, String>>,
    cwd: Option<String>,
}

/// WebSocket: run a command and stream its output.
#[utoipa::path(get, path = "/v1/capsules/{id}/exec/stream", tag = "capsules", params(("id" = String, Path)),
    responses((status = 101, description = "WebSocket: send {type:start,cmd,args?}; receive start/stdout/stderr/exit/error")))]
pub async fn exec_stream(
    State(app): State<AppState>,
    p: Option<Principal>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |mut socket| async move {
        let run = async {
            let p = ws_principal(&app, p, &mut socket).await?;
            let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
            let first = match socket.recv().await {
                Some(Ok(Message::Text(t))) => t,
                _ => return Err(ApiError::invalid("expected a start message")),
            };
            let start: StreamStart = serde_json::from_str(first.as_str())
                .map_err(|e| ApiError::invalid(format!("invalid start message: {e}")))?;
            if start.kind != "start" || start.cmd.trim().is_empty() {
                return Err(ApiError::invalid(
                    "first message must be {\"type\":\"start\",\"cmd\":...}",
                ));
            }
            if let Some(e) = &start.envs {
                check_env(e)?;
            }
            let req = start_request(
                &s, &start.cmd, start.args, start.envs, start.cwd, None, None,
            );
            let stream = s.envd.start(req).await.map_err(rpc_to_api)?;
            Ok::<_, ApiError>((s, stream))
        };
        match run.await {
            Ok((s, stream)) => pump(socket, stream, &s, |r: pr::StartResponse| r.event).await,
            Err(e) => ws_fail(&mut socket, &e).await,
        }
    })
}

/// WebSocket: re-attach to a running process by pid or tag.
#[utoipa::path(get, path = "/v1/capsules/{id}/processes/{selector}/stream", tag = "capsules",
    params(("id" = String, Path), ("selector" = String, Path)),
    responses((status = 101, description = "WebSocket: receive start/stdout/stderr/exit/error")))]
pub async fn process_stream(
    State(app): State<AppState>,
    p: Option<Principal>,
    Path((id, sel)): Path<(String, String)>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |mut socket| async move {
        let run = async {
            let p = ws_principal(&app, p, &mut socket).await?;
            let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
            let stream = s.envd.connect(selector(&sel)).await.map_err(rpc_to_api)?;
            Ok::<_, ApiError>((s, stream))
        };
        match run.await {
            Ok((s, stream)) => pump(socket, stream, &s, |r: pr::ConnectResponse| r.event).await,
            Err(e) => ws_fail(&mut socket, &e).await,
        }
    })
}
