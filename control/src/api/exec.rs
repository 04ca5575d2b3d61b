//! Commands in a capsule, through envd's `process.Process`: foreground
//! exec (collects output), background exec (202 with pid and tag), the
//! process list, kill by pid or tag, and two WebSockets: a new command's
//! output (`exec/stream`) and re-attaching to a running one
//! (`processes/{selector}/stream`).

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use warren_api_types::process::{
    BackgroundExecResponse, ExecRequest, ExecResponse, ProcessList, SignalQuery, StreamEvent,
    StreamStart,
};
use warren_proto::connect::MessageStream;
use warren_proto::process as pr;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::ws;
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::capsules::session::{self, Executed, Session};

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
    Ok(match session::exec(&app, &p, &id, req).await? {
        Executed::Foreground(r) => Json(r).into_response(),
        Executed::Background(r) => (StatusCode::ACCEPTED, Json(r)).into_response(),
    })
}

/// Processes envd started (background ones, PTYs, the template's).
#[utoipa::path(get, path = "/v1/capsules/{id}/processes", tag = "capsules", params(("id" = String, Path)),
    responses((status = 200, body = ProcessList), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn list_processes(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ProcessList>> {
    Ok(Json(session::processes(&app, &p, &id).await?))
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
    session::kill(&app, &p, &id, &sel, q.signal.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A process event as the WebSocket sends it (and whether it is the
/// last); `None` for keepalives.
fn ws_event(ev: pr::ProcessEvent) -> Option<(StreamEvent, bool)> {
    use pr::process_event::Event;
    use pr::process_event::data_event::Output;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Some(match ev.event? {
        Event::Start(s) => (StreamEvent::Start { pid: s.pid }, false),
        Event::Data(d) => match d.output? {
            Output::Stdout(b) | Output::Pty(b) => (StreamEvent::Stdout { data: text(&b) }, false),
            Output::Stderr(b) => (StreamEvent::Stderr { data: text(&b) }, false),
        },
        Event::End(e) => (
            StreamEvent::Exit {
                exit_code: e.exit_code,
            },
            true,
        ),
        Event::Keepalive(_) => return None,
    })
}

/// Forwards envd events to the socket until the process ends, the client
/// leaves, or it asks to stop (SIGKILL).
async fn pump<T>(
    mut socket: WebSocket,
    mut events: MessageStream<T>,
    s: &Session,
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
                        if !ws::send(&mut socket, &frame).await || last {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    let frame = StreamEvent::Error { data: e.to_string(), code: None, fatal: None };
                    let _ = ws::send(&mut socket, &frame).await;
                    break;
                }
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let stop = serde_json::from_str::<StreamStart>(t.as_str())
                        .is_ok_and(|m| m.kind == "stop");
                    if let (true, Some(pid)) = (stop, pid) {
                        let _ = s.signal(&pid.to_string(), pr::Signal::Sigkill).await;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
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
            let p = ws::principal(&app, p, &mut socket).await?;
            let s = session::open(&app, &p, &id).await?;
            let start: StreamStart = ws::first(&mut socket, "start message").await?;
            if start.kind != "start" || start.cmd.trim().is_empty() {
                return Err(ApiError::invalid(
                    "first message must be {\"type\":\"start\",\"cmd\":...}",
                ));
            }
            let stream = s
                .start(&start.cmd, start.args, start.envs, start.cwd, None)
                .await?;
            Ok::<_, ApiError>((s, stream))
        };
        match run.await {
            Ok((s, stream)) => pump(socket, stream, &s, |r: pr::StartResponse| r.event).await,
            Err(e) => ws::fail(&mut socket, &e).await,
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
            let p = ws::principal(&app, p, &mut socket).await?;
            let s = session::open(&app, &p, &id).await?;
            let stream = s.connect(&sel).await?;
            Ok::<_, ApiError>((s, stream))
        };
        match run.await {
            Ok((s, stream)) => pump(socket, stream, &s, |r: pr::ConnectResponse| r.event).await,
            Err(e) => ws::fail(&mut socket, &e).await,
        }
    })
}
