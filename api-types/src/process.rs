//! Commands in a capsule (`/v1/capsules/{id}/exec`, `processes`) and the
//! messages of the two command WebSockets: `exec/stream` (a new command's
//! output) and `pty` (an interactive terminal).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub cmd: String,
    /// Arguments; without them `cmd` is a shell string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackgroundExecResponse {
    pub sandbox_id: String,
    pub cmd: String,
    pub pid: u32,
    pub tag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessEntry {
    pub pid: u32,
    pub tag: Option<String>,
    pub cmd: String,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProcessList {
    pub processes: Vec<ProcessEntry>,
}

/// `?signal=` of a process kill: `SIGKILL` (default) or `SIGTERM`.
#[derive(Debug, Default, Deserialize)]
pub struct SignalQuery {
    pub signal: Option<String>,
}

/// The first message on `exec/stream`: `{"type":"start","cmd",...}`; later
/// `{"type":"stop"}` kills the command.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamStart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub cmd: String,
    pub args: Option<Vec<String>>,
    pub envs: Option<HashMap<String, String>>,
    pub cwd: Option<String>,
}

/// What `exec/stream` and `processes/{selector}/stream` send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamEvent {
    Start {
        pid: u32,
    },
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        exit_code: i32,
    },
    Error {
        data: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fatal: Option<bool>,
    },
}

/// What a PTY client sends: first `start` (a new terminal) or `connect`
/// (re-attach by tag); then `input` (base64; raw keystrokes may also come
/// as binary frames), `resize`, `kill`, `pong`. `encoding: "base64"` in
/// the first message asks for output as `output` messages instead of
/// binary frames.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PtyClientMessage {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envs: Option<HashMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

impl PtyClientMessage {
    /// A message of `kind` with no fields.
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_string(),
            ..Self::default()
        }
    }

    /// `{"type":"resize","cols","rows"}` (also the size part of `start`).
    pub fn sized(kind: &str, cols: u32, rows: u32) -> Self {
        Self {
            cols: Some(cols),
            rows: Some(rows),
            ..Self::new(kind)
        }
    }
}

/// What the PTY WebSocket sends besides binary terminal output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PtyServerMessage {
    Started {
        tag: String,
        pid: u32,
    },
    /// Terminal output (base64) for clients that asked for text frames.
    Output {
        data: String,
    },
    Exit {
        exit_code: i32,
    },
    Error {
        data: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        fatal: bool,
    },
    Ping,
}
