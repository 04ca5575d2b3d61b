//! What every in-capsule route needs: the caller's running capsule, its
//! template (shell, default user) and an envd client through its host's
//! relay. Also WebSocket authentication: a header credential, or (for
//! browsers, which cannot set headers) a first `{"type":"auth","token"}`
//! message.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{Principal, authenticate_token};
use crate::db::capsules::{self, CapsuleRow};
use crate::db::hosts;
use crate::db::templates::{self, TemplateRow};
use crate::envd_client::EnvdClient;
use crate::error::{ApiError, ApiResult};

/// A running capsule of the caller, ready for envd calls.
#[derive(Debug)]
pub struct CapsuleSession {
    pub row: CapsuleRow,
    pub envd: EnvdClient,
    /// How a shell string runs here, e.g. `["/bin/sh", "-c"]`.
    pub shell: Vec<String>,
}

impl CapsuleSession {
    pub async fn open(app: &AppState, team_id: &str, capsule_id: &str) -> ApiResult<Self> {
        let row = capsules::get(&app.db, team_id, capsule_id).await?;
        row.require_running()?;
        let host = hosts::conn(&app.db, row.host()?).await?;
        host.require_online()?;
        let tpl: Option<TemplateRow> = match &row.template_id {
            Some(id) => templates::by_id(&app.db, id).await?,
            None => None,
        };
        let user = tpl
            .as_ref()
            .map_or("user", |t| t.default_user.as_str())
            .to_string();
        let shell = tpl
            .as_ref()
            .map(TemplateRow::shell_argv)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/bash".into(), "-l".into(), "-c".into()]);
        let envd = app.envd(&host, &row.id, &user)?;
        capsules::touch(&app.db, &row.id).await;
        Ok(Self { row, envd, shell })
    }

    /// `(cmd, args)` for a request: a bare command string runs through the
    /// template's shell; with `args` it runs as given.
    pub fn command(&self, cmd: &str, args: Option<Vec<String>>) -> (String, Vec<String>) {
        match args {
            Some(a) if !a.is_empty() => (cmd.to_string(), a),
            _ => {
                let mut argv = self.shell.clone();
                argv.push(cmd.to_string());
                let head = argv.remove(0);
                (head, argv)
            }
        }
    }
}

/// Checks a path argument (envd resolves it inside the capsule).
pub fn check_path(path: &str) -> ApiResult<()> {
    if path.is_empty() {
        return Err(ApiError::invalid("path is required"));
    }
    if path.len() > 4096 || path.contains('\0') {
        return Err(ApiError::invalid(
            "path must be at most 4096 bytes without NUL",
        ));
    }
    Ok(())
}

pub fn check_env(envs: &std::collections::HashMap<String, String>) -> ApiResult<()> {
    if envs.len() > 256 {
        return Err(ApiError::invalid("at most 256 environment variables"));
    }
    for (k, v) in envs {
        let ok = !k.is_empty()
            && k.len() <= 256
            && !k.contains('=')
            && !k.contains('\0')
            && !v.contains('\0')
            && v.len() <= 32 << 10;
        if !ok {
            return Err(ApiError::invalid(format!(
                "invalid environment variable '{k}'"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct AuthMsg {
    #[serde(rename = "type")]
    kind: String,
    token: String,
}

/// The caller of a WebSocket: from the upgrade request's headers, or from
/// an auth message within 5 seconds.
pub async fn ws_principal(
    app: &AppState,
    header: Option<Principal>,
    socket: &mut WebSocket,
) -> ApiResult<Principal> {
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
    authenticate_token(app, &msg.token).await
}

/// Sends `{"type":"error","data":...,"fatal":true}` and closes.
pub async fn ws_fail(socket: &mut WebSocket, err: &ApiError) {
    let msg = serde_json::json!({ "type": "error", "data": err.to_string(), "code": err.code(), "fatal": true });
    let _ = socket.send(Message::Text(msg.to_string().into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

pub async fn ws_json(socket: &mut WebSocket, v: serde_json::Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}
