//! Instance-level calls: actions (start, Ctrl-Alt-Del, flush metrics),
//! pause/resume, and what `GET /` and `GET /version` answer.

use serde::{Deserialize, Serialize};

/// `InstanceActionInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceAction {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Boot the configured microVM.
    InstanceStart,
    /// Ask the guest to reboot (x86_64; the guest powers off with `reboot=k`).
    SendCtrlAltDel,
    /// Write a metrics line now.
    FlushMetrics,
}

impl ActionType {
    pub const ALL: [ActionType; 3] = [
        Self::InstanceStart,
        Self::SendCtrlAltDel,
        Self::FlushMetrics,
    ];
}

/// `Vm`: the desired run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub state: VmState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    Paused,
    Resumed,
}

impl VmState {
    pub const ALL: [VmState; 2] = [Self::Paused, Self::Resumed];
}

/// `InstanceInfo` (`GET /`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub app_name: String,
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// `FirecrackerVersion` (`GET /version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    pub firecracker_version: String,
}
