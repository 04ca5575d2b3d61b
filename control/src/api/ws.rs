//! What the WebSocket routes share: authentication (a header credential,
//! or, for browsers, which cannot set headers, a first
//! `{"type":"auth","token"}` message), sending JSON frames, and failing
//! with an error frame.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use serde::{Deserialize, Serialize};
use warren_api_types::process::StreamEvent;

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::{self, Principal};

#[derive(Debug, Deserialize)]
struct AuthMsg {
    #[serde(rename = "type")]
    kind: String,
    token: String,
}

/// The caller of a WebSocket: from the upgrade request's headers, or from
/// an auth message within 5 seconds.
pub async fn principal(
    app: &AppState,
    header: Option<Principal>,
    socket: &mut WebSocket,
) -> Result<Principal, ApiError> {
    if let Some(p) = header {
        return Ok(p);
    }
    let first = tokio::time::timeout(Duration::from_secs(5), socket.recv())
        .await
        .map_err(|_| {
            ApiError::Unauthorized(
                "no credentials: send {\"type\":\"auth\",\"token\":...} first".into(),
            )
        })?;
    let text = match first {
        Some(Ok(Message::Text(t))) => t,
        _ => return Err(ApiError::Unauthorized("expected an auth message".into())),
    };
    let msg: AuthMsg = serde_json::from_str(text.as_str()).map_err(|_| {
        ApiError::Unauthorized("first message must be {\"type\":\"auth\",\"token\":...}".into())
    })?;
    if msg.kind != "auth" {
        return Err(ApiError::Unauthorized(
            "first message must be of type 'auth'".into(),
        ));
    }
    Ok(auth::authenticate(app, &msg.token).await?)
}

/// Sends `{"type":"error","data":...,"code":...,"fatal":true}` and closes.
pub async fn fail(socket: &mut WebSocket, err: &ApiError) {
    let msg = StreamEvent::Error {
        data: err.to_string(),
        code: Some(err.code().into()),
        fatal: Some(true),
    };
    let _ = send(socket, &msg).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// Sends `msg` as a JSON text frame; false once the socket is gone.
pub async fn send(socket: &mut WebSocket, msg: &impl Serialize) -> bool {
    let text = serde_json::to_string(msg).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

/// The first text message, parsed as `T` (`what` names it in errors).
pub async fn first<T: serde::de::DeserializeOwned>(
    socket: &mut WebSocket,
    what: &str,
) -> Result<T, ApiError> {
    match socket.recv().await {
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str())
            .map_err(|e| ApiError::invalid(format!("invalid {what}: {e}"))),
        _ => Err(ApiError::invalid(format!("expected a {what}"))),
    }
}
