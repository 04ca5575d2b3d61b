//! `warren capsule pty`: a terminal on the capsule through the PTY
//! WebSocket, with the local terminal in raw mode (restored on exit) and
//! window size changes forwarded.

use std::io::{IsTerminal, Read, Write};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use warren_api_types::process::{PtyClientMessage, PtyServerMessage};

use crate::client::Api;

/// Puts stdin in raw mode until dropped.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enable() -> Self {
        if !std::io::stdin().is_terminal() {
            return Self(None);
        }
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is open; `t` is a valid termios to write into.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return Self(None);
        }
        let saved = t;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: fd 0 is a terminal and `t` a valid termios.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        Self(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the attributes read from the same fd.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

fn text(msg: &PtyClientMessage) -> Message {
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

/// The local terminal's (cols, rows).
fn size() -> (u32, u32) {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it for fd 1.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: fd 1 is open; the ioctl writes only into `ws`.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (u32::from(ws.ws_col), u32::from(ws.ws_row))
    } else {
        (80, 24)
    }
}

pub async fn run(api: &Api, id: &str, cmd: Option<String>) -> anyhow::Result<i32> {
    let mut req = api
        .ws_url(&format!("/v1/capsules/{id}/pty"))
        .into_client_request()
        .context("building the WebSocket request")?;
    if let Some(key) = api.key() {
        req.headers_mut().insert("X-API-Key", key.parse()?);
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .context("opening the terminal")?;
    let (mut tx, mut rx) = ws.split();
    let (cols, rows) = size();
    let start = PtyClientMessage {
        cmd,
        ..PtyClientMessage::sized("start", cols, rows)
    };
    tx.send(text(&start)).await?;

    let raw = RawMode::enable();
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || in_tx.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut code = 0;
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let mut out = std::io::stdout();
                    out.write_all(&b)?;
                    out.flush()?;
                }
                Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                    Ok(PtyServerMessage::Exit { exit_code }) => {
                        code = exit_code;
                        break;
                    }
                    Ok(PtyServerMessage::Error { data, .. }) => {
                        drop(raw);
                        anyhow::bail!("{data}");
                    }
                    Ok(PtyServerMessage::Ping) => {
                        tx.send(text(&PtyClientMessage::new("pong"))).await?;
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => return Err(e.into()),
                _ => {}
            },
            input = in_rx.recv() => match input {
                Some(bytes) => tx.send(Message::Binary(bytes.into())).await?,
                None => break,
            },
            _ = winch.recv() => {
                let (cols, rows) = size();
                tx.send(text(&PtyClientMessage::sized("resize", cols, rows))).await?;
            }
        }
    }
    drop(raw);
    Ok(code)
}
