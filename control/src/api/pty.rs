//! WebSocket terminals (`/v1/capsules/{id}/pty`) on envd PTY processes.
//!
//! Client → server: first `{"type":"start","cmd","args","cols","rows",
//! "envs","cwd"}` or `{"type":"connect","tag"}`; then keystrokes as binary
//! frames (or `{"type":"input","data":<base64>}`), `{"type":"resize",
//! "cols","rows"}`, `{"type":"kill"}`, `{"type":"pong"}`.
//! Server → client: `{"type":"started","tag","pid"}`, terminal output,
//! `{"type":"exit","exit_code"}`, `{"type":"error","data","fatal"}` and
//! `{"type":"ping"}` every 30 s. Output goes as binary frames, as the
//! `wrenn` SDK expects; a client that asks for `"encoding":"base64"` in its
//! first message (or `?encoding=base64`) gets `{"type":"output","data":
//! <base64>}` text frames instead. The session outlives the socket:
//! reconnect with its tag.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use warren_proto::process as pr;

use super::exec::new_tag;
use super::extract::ApiQuery;
use super::session::{CapsuleSession, check_env, ws_fail, ws_json, ws_principal};
use crate::agent_client::rpc_to_api;
use crate::app::AppState;
use crate::auth::Principal;
use crate::envd_client::selector;
use crate::error::ApiError;
use warren_proto::connect::MessageStream;

const PING_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize)]
pub struct PtyQuery {
    pub encoding: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ClientMsg {
    #[serde(rename = "type")]
    kind: String,
    cmd: Option<String>,
    args: Option<Vec<String>>,
    cols: Option<u32>,
    rows: Option<u32>,
    envs: Option<HashMap<String, String>>,
    cwd: Option<String>,
    tag: Option<String>,
    data: Option<String>,
    encoding: Option<String>,
}

fn size(cols: Option<u32>, rows: Option<u32>) -> Result<(u32, u32), ApiError> {
    let (c, r) = (cols.unwrap_or(80), rows.unwrap_or(24));
    if c == 0 || r == 0 || c > 1000 || r > 1000 {
        return Err(ApiError::invalid(
            "cols and rows must be between 1 and 1000",
        ));
    }
    Ok((c, r))
}

enum Events {
    Start(MessageStream<pr::StartResponse>),
    Connect(MessageStream<pr::ConnectResponse>),
}

impl Events {
    async fn next(
        &mut self,
    ) -> Option<Result<Option<pr::ProcessEvent>, crate::agent_client::RpcError>> {
        match self {
            Self::Start(s) => s.next().await.map(|r| r.map(|m| m.event)),
            Self::Connect(s) => s.next().await.map(|r| r.map(|m| m.event)),
        }
    }
}

/// Interactive terminal over WebSocket.
#[utoipa::path(get, path = "/v1/capsules/{id}/pty", tag = "capsules",
    params(("id" = String, Path), ("encoding" = Option<String>, Query)),
    responses((status = 101, description = "WebSocket PTY session (see module docs for the messages)")))]
pub async fn pty(
    State(app): State<AppState>,
    p: Option<Principal>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PtyQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |mut socket| async move {
        let setup = async {
            let p = ws_principal(&app, p, &mut socket).await?;
            let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
            let first = match socket.recv().await {
                Some(Ok(Message::Text(t))) => t,
                _ => {
                    return Err(ApiError::invalid(
                        "first message must be 'start' or 'connect'",
                    ));
                }
            };
            let msg: ClientMsg = serde_json::from_str(first.as_str())
                .map_err(|e| ApiError::invalid(format!("invalid message: {e}")))?;
            let base64 = q.encoding.as_deref() == Some("base64")
                || msg.encoding.as_deref() == Some("base64");
            match msg.kind.as_str() {
                "start" => {
                    let (cols, rows) = size(msg.cols, msg.rows)?;
                    let mut envs = msg.envs.unwrap_or_default();
                    check_env(&envs)?;
                    envs.entry("TERM".into())
                        .or_insert_with(|| "xterm-256color".into());
                    let tag = new_tag("pty");
                    let cmd = msg.cmd.filter(|c| !c.is_empty()).unwrap_or_else(|| {
                        s.shell.first().cloned().unwrap_or_else(|| "/bin/sh".into())
                    });
                    let req = pr::StartRequest {
                        process: Some(pr::ProcessConfig {
                            cmd,
                            args: msg.args.unwrap_or_default(),
                            envs,
                            cwd: msg.cwd,
                        }),
                        pty: Some(pr::Pty {
                            size: Some(pr::pty::Size { cols, rows }),
                        }),
                        tag: Some(tag.clone()),
                        stdin: Some(true),
                    };
                    let stream = s.envd.start(req).await.map_err(rpc_to_api)?;
                    Ok((s, Events::Start(stream), tag, base64))
                }
                "connect" => {
                    let tag = msg
                        .tag
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| ApiError::invalid("connect needs a 'tag'"))?;
                    let stream = s.envd.connect(selector(&tag)).await.map_err(rpc_to_api)?;
                    Ok((s, Events::Connect(stream), tag, base64))
                }
                _ => Err(ApiError::invalid(
                    "first message must be 'start' or 'connect'",
                )),
            }
        };
        match setup.await {
            Ok((s, events, tag, base64)) => session(socket, s, events, tag, base64).await,
            Err(e) => ws_fail(&mut socket, &e).await,
        }
    })
}

async fn session(
    mut socket: WebSocket,
    s: CapsuleSession,
    mut events: Events,
    tag: String,
    base64: bool,
) {
    let sel = || selector(&tag);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Some(ev))) => {
                    use pr::process_event::Event;
                    use pr::process_event::data_event::Output;
                    let ok = match ev.event {
                        Some(Event::Start(st)) => {
                            ws_json(&mut socket, json!({ "type": "started", "tag": tag, "pid": st.pid })).await
                        }
                        Some(Event::Data(d)) => match d.output {
                            Some(Output::Pty(b) | Output::Stdout(b) | Output::Stderr(b)) => {
                                if base64 {
                                    ws_json(&mut socket, json!({ "type": "output", "data": b64.encode(&b) })).await
                                } else {
                                    socket.send(Message::Binary(b)).await.is_ok()
                                }
                            }
                            None => true,
                        },
                        Some(Event::End(e)) => {
                            let _ = ws_json(&mut socket, json!({ "type": "exit", "exit_code": e.exit_code })).await;
                            break;
                        }
                        _ => true,
                    };
                    if !ok {
                        break;
                    }
                }
                Some(Ok(None)) => {}
                Some(Err(e)) => {
                    let _ = ws_json(&mut socket, json!({ "type": "error", "data": e.to_string(), "fatal": true })).await;
                    break;
                }
                None => break,
            },
            msg = socket.recv() => {
                let result = match msg {
                    Some(Ok(Message::Binary(b))) => s.envd.send_pty_input(sel(), b).await.map_err(rpc_to_api),
                    Some(Ok(Message::Text(t))) => control(&s, &sel, t.as_str()).await,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    if !ws_json(&mut socket, json!({ "type": "error", "data": e.to_string(), "fatal": false })).await {
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if !ws_json(&mut socket, json!({ "type": "ping" })).await {
                    break;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// Handles one control message from the client.
async fn control(
    s: &CapsuleSession,
    sel: &impl Fn() -> pr::ProcessSelector,
    text: &str,
) -> Result<(), ApiError> {
    let msg: ClientMsg = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("invalid message: {e}")))?;
    match msg.kind.as_str() {
        "input" => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(msg.data.unwrap_or_default())
                .map_err(|_| ApiError::invalid("input data must be base64"))?;
            s.envd
                .send_pty_input(sel(), Bytes::from(data))
                .await
                .map_err(rpc_to_api)
        }
        "resize" => {
            let (cols, rows) = size(msg.cols, msg.rows)?;
            s.envd
                .resize_pty(sel(), cols, rows)
                .await
                .map_err(rpc_to_api)
        }
        "kill" => s
            .envd
            .signal(sel(), pr::Signal::Sigkill)
            .await
            .map_err(rpc_to_api),
        "pong" | "ping" => Ok(()),
        other => Err(ApiError::invalid(format!("unknown message type '{other}'"))),
    }
}
