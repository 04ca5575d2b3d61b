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

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use warren_api_types::process::{PtyClientMessage, PtyServerMessage};
use warren_proto::connect::MessageStream;
use warren_proto::process as pr;

use super::error::ApiError;
use super::extract::ApiQuery;
use super::ws;
use crate::agent_client::RpcError;
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::capsules::session::{self, Session, new_tag};

const PING_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize)]
pub struct PtyQuery {
    pub encoding: Option<String>,
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

fn parse(text: &str) -> Result<PtyClientMessage, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::invalid(format!("invalid message: {e}")))
}

enum Events {
    Start(MessageStream<pr::StartResponse>),
    Connect(MessageStream<pr::ConnectResponse>),
}

impl Events {
    async fn next(&mut self) -> Option<Result<Option<pr::ProcessEvent>, RpcError>> {
        match self {
            Self::Start(s) => s.next().await.map(|r| r.map(|m| m.event)),
            Self::Connect(s) => s.next().await.map(|r| r.map(|m| m.event)),
        }
    }
}

/// Opens the session a first message asks for: its events, tag, and
/// whether output goes as base64 text.
async fn setup(
    app: &AppState,
    p: Option<Principal>,
    id: &str,
    q: &PtyQuery,
    socket: &mut WebSocket,
) -> Result<(Session, Events, String, bool), ApiError> {
    let p = ws::principal(app, p, socket).await?;
    let s = session::open(app, &p, id).await?;
    let wrong = || ApiError::invalid("first message must be 'start' or 'connect'");
    let msg = match socket.recv().await {
        Some(Ok(Message::Text(t))) => parse(t.as_str())?,
        _ => return Err(wrong()),
    };
    let base64 =
        q.encoding.as_deref() == Some("base64") || msg.encoding.as_deref() == Some("base64");
    match msg.kind.as_str() {
        "start" => {
            let tag = new_tag("pty");
            let stream = s
                .start_pty(
                    msg.cmd,
                    msg.args.unwrap_or_default(),
                    msg.envs.unwrap_or_default(),
                    msg.cwd,
                    size(msg.cols, msg.rows)?,
                    &tag,
                )
                .await?;
            Ok((s, Events::Start(stream), tag, base64))
        }
        "connect" => {
            let tag = msg
                .tag
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::invalid("connect needs a 'tag'"))?;
            let stream = s.connect(&tag).await?;
            Ok((s, Events::Connect(stream), tag, base64))
        }
        _ => Err(wrong()),
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
        match setup(&app, p, &id, &q, &mut socket).await {
            Ok((s, events, tag, base64)) => run(socket, s, events, tag, base64).await,
            Err(e) => ws::fail(&mut socket, &e).await,
        }
    })
}

async fn run(mut socket: WebSocket, s: Session, mut events: Events, tag: String, base64: bool) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let error = |data: String, fatal: bool| PtyServerMessage::Error {
        data,
        code: None,
        fatal,
    };
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Some(ev))) => {
                    use pr::process_event::Event;
                    use pr::process_event::data_event::Output;
                    let ok = match ev.event {
                        Some(Event::Start(st)) => {
                            let msg = PtyServerMessage::Started { tag: tag.clone(), pid: st.pid };
                            ws::send(&mut socket, &msg).await
                        }
                        Some(Event::Data(d)) => match d.output {
                            Some(Output::Pty(b) | Output::Stdout(b) | Output::Stderr(b)) => {
                                if base64 {
                                    let msg = PtyServerMessage::Output { data: b64.encode(&b) };
                                    ws::send(&mut socket, &msg).await
                                } else {
                                    socket.send(Message::Binary(b)).await.is_ok()
                                }
                            }
                            None => true,
                        },
                        Some(Event::End(e)) => {
                            let msg = PtyServerMessage::Exit { exit_code: e.exit_code };
                            let _ = ws::send(&mut socket, &msg).await;
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
                    let _ = ws::send(&mut socket, &error(e.to_string(), true)).await;
                    break;
                }
                None => break,
            },
            msg = socket.recv() => {
                let result = match msg {
                    Some(Ok(Message::Binary(b))) => s.pty_input(&tag, b).await.map_err(Into::into),
                    Some(Ok(Message::Text(t))) => control(&s, &tag, t.as_str()).await,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    if !ws::send(&mut socket, &error(e.to_string(), false)).await {
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if !ws::send(&mut socket, &PtyServerMessage::Ping).await {
                    break;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// Handles one control message from the client.
async fn control(s: &Session, tag: &str, text: &str) -> Result<(), ApiError> {
    let msg = parse(text)?;
    match msg.kind.as_str() {
        "input" => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(msg.data.unwrap_or_default())
                .map_err(|_| ApiError::invalid("input data must be base64"))?;
            s.pty_input(tag, Bytes::from(data)).await?;
        }
        "resize" => {
            let (cols, rows) = size(msg.cols, msg.rows)?;
            s.resize(tag, cols, rows).await?;
        }
        "kill" => s.signal(tag, pr::Signal::Sigkill).await?,
        "pong" | "ping" => {}
        other => return Err(ApiError::invalid(format!("unknown message type '{other}'"))),
    }
    Ok(())
}
