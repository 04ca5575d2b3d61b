//! What the Firecracker backend persists per capsule (`firecracker.json` in
//! the capsule's directory) so a restarted agent can adopt, resume or
//! destroy it: the spec, the Firecracker instance id, the root drive, where
//! the capsule is in its life ([`Phase`], written before each step that
//! changes it), and, for a VM restored from a snapshot, the memory regions
//! its Firecracker reported to the page server.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::CapsuleSpec;

pub const STATE_FILE: &str = "firecracker.json";

/// Where a capsule is in its life, as far as a restarted agent must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being made: disk, TAP, process, configuration, boot.
    Creating,
    /// Firecracker runs the guest (booted, or restored from the snapshot).
    Running,
    /// vCPUs paused, the snapshot being written; the process still runs.
    Pausing,
    /// The new snapshot's files are complete but not yet committed.
    Captured,
    /// The committed snapshot is the capsule's state; no process runs.
    Paused,
    /// A new process is loading the snapshot.
    Resuming,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Persisted {
    pub spec: CapsuleSpec,
    /// Firecracker's instance id (the launcher's directory name).
    pub instance: String,
    /// The root drive (`path_on_host`), once made. A snapshot names it, so
    /// it keeps this path for the capsule's whole life.
    pub disk: Option<PathBuf>,
    pub phase: Phase,
    /// Set while the running VM was restored from the snapshot: its memory
    /// is served by a page server and its dirty pages are tracked, so the
    /// next snapshot is a diff.
    pub restored: Option<Restored>,
    /// CPU time used by earlier Firecracker processes of this capsule.
    #[serde(default)]
    pub cpu_ns_before: u64,
}

/// A VM restored through a page server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// Firecracker's handshake (its guest memory regions, as JSON): enough
    /// to hand its userfaultfd to a new page server after an agent restart.
    pub regions: String,
}
