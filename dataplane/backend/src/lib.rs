//! `warren-backend`: how a host runs capsules. The one [`Backend`] trait the
//! agent's sandbox manager drives, and its two implementations: [`namespace`]
//! (process trees in Linux namespaces, any host) and [`firecracker`]
//! (microVMs, KVM hosts), with what they stand on: [`cgroup`] (v1 and v2
//! limits, freezing), [`cow_disk`] (copy-on-write root drives) and
//! [`loopdev`] (loop devices, for both).
//!
//! Where it sits: below the agent (`dataplane/agent`), above the network
//! slots (`warren-netslot`), the template store (`warren-template`), the
//! data-plane cores (`warren-runtime`, where the page server of a restored
//! microVM runs), `vmm-api` and `warren-uffd`.
//!
//! A backend turns a [`CapsuleSpec`] into a running capsule whose init is
//! envd, and later pauses, resumes, samples and destroys it. Everything a
//! backend needs to find a capsule again is persisted under the capsule's
//! directory, so a restarted agent can [`Backend::adopt`] capsules that kept
//! running while it was gone. Operations on one capsule are serialised by the
//! caller (the sandbox manager); a backend is safe to call concurrently for
//! different capsules.

pub mod cgroup;
pub mod cow_disk;
pub mod firecracker;
pub mod loopdev;
pub mod namespace;
pub(crate) mod persist;
mod spec;

use std::path::Path;
use std::time::SystemTime;

use async_trait::async_trait;

pub use spec::{CapsuleId, CapsuleSpec, Resources, SpecError};

use crate::cgroup::CgroupError;
use crate::cow_disk::CowError;
use warren_netslot::{NetError, TxLimit};
use warren_template::TemplateError;

/// Runs blocking work (file systems, ioctls, tools) on tokio's blocking
/// pool; a panic in it is raised again here.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Which implementation runs a capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Namespace,
    Firecracker,
}

/// What pausing does to a capsule, which decides what the sandbox manager
/// does around [`Backend::pause`] and [`Backend::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseMode {
    /// The capsule's processes are stopped in place: its connections stay
    /// open, nothing needs preparing.
    Freeze,
    /// The capsule's memory is written to a snapshot and the capsule is
    /// stopped (its RAM is freed). Connections into it cannot survive: the
    /// manager drains proxied connections and asks envd to prepare before
    /// pausing, and re-initialises envd (clock, token, defaults) and reopens
    /// the proxy after resuming.
    Snapshot,
}

/// What a backend observes about a capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
    /// The capsule's init is gone (it exited or was killed); only destroy
    /// makes sense now.
    Exited,
}

/// A capsule's observed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsuleStatus {
    pub state: RunState,
    /// Processes the OOM killer killed in this capsule so far.
    pub oom_kills: u64,
}

/// What create and adopt hand back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsuleHandle {
    pub id: CapsuleId,
    pub kind: BackendKind,
    pub status: CapsuleStatus,
}

/// One sample of a capsule's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSample {
    pub at: SystemTime,
    /// CPU time used since the capsule started, in nanoseconds.
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Bytes used on the capsule's private disk (its writable layer).
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    /// Tasks (processes and threads) in the capsule.
    pub pids: u64,
    pub oom_kills: u64,
}

/// Typed errors of every backend operation.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    #[error("capsule {0} already exists")]
    AlreadyExists(CapsuleId),
    #[error("capsule {0} not found")]
    NotFound(CapsuleId),
    #[error("capsule {id} is {state:?}: cannot {op}")]
    InvalidState {
        id: CapsuleId,
        state: RunState,
        op: &'static str,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("starting capsule {id}: {step}: {source}")]
    Launch {
        id: CapsuleId,
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("capsule {id}: {context}: {source}")]
    Io {
        id: CapsuleId,
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("capsule {id}: persisted state is unusable: {reason}")]
    CorruptState { id: CapsuleId, reason: String },
    #[error("this host cannot run {kind:?} capsules: {reason}")]
    Unsupported { kind: BackendKind, reason: String },
    #[error("capsule {id}: disk: {source}")]
    Disk {
        id: CapsuleId,
        #[source]
        source: CowError,
    },
    #[error("capsule {id}: network: {source}")]
    Net {
        id: CapsuleId,
        #[source]
        source: NetError,
    },
    #[error("capsule {id}: {step}: {source}")]
    Vmm {
        id: CapsuleId,
        step: &'static str,
        #[source]
        source: vmm_api::Error,
    },
    #[error("capsule {id}: firecracker process: {source}")]
    Process {
        id: CapsuleId,
        #[source]
        source: vmm_api::LaunchError,
    },
    #[error("capsule {id}: page server: {reason}")]
    PageServer { id: CapsuleId, reason: String },
}

/// A way of running capsules. All methods are cancel-safe only in the sense
/// that a dropped future leaves the capsule either fully made or cleanable by
/// [`Backend::destroy`].
#[async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// What [`Backend::pause`] does to a capsule.
    fn pause_mode(&self) -> PauseMode {
        PauseMode::Freeze
    }

    /// Whether the backend limits what capsules send itself (from
    /// [`CapsuleSpec::tx_limit`]), so the network slot must not shape it too.
    fn shapes_egress(&self) -> bool {
        false
    }

    /// Changes a running capsule's egress limit live (`None`: unlimited).
    /// Only for backends that [shape egress](Backend::shapes_egress).
    async fn set_tx_limit(
        &self,
        id: &CapsuleId,
        limit: Option<TxLimit>,
    ) -> Result<(), BackendError> {
        let _ = (id, limit);
        Err(BackendError::Unsupported {
            kind: self.kind(),
            reason: "egress is shaped by the network slot, not the backend".into(),
        })
    }

    /// Makes the capsule and starts its init; returns once init is running.
    async fn create(&self, spec: &CapsuleSpec) -> Result<CapsuleHandle, BackendError>;

    /// Pauses the capsule as [`Backend::pause_mode`] says; returns once it
    /// is paused. When it fails, [`Backend::status`] tells whether the
    /// capsule still runs (nothing happened) or is paused after all.
    async fn pause(&self, id: &CapsuleId) -> Result<(), BackendError>;

    /// Continues a paused capsule. When it fails, [`Backend::status`] tells
    /// whether the capsule is still paused (and may be resumed again).
    async fn resume(&self, id: &CapsuleId) -> Result<(), BackendError>;

    /// Kills the capsule and removes everything it had on the host. Works on
    /// half-made capsules and after an agent restart; destroying an unknown
    /// capsule is [`BackendError::NotFound`].
    async fn destroy(&self, id: &CapsuleId) -> Result<(), BackendError>;

    /// Ids of the capsules this backend has persisted on disk (running,
    /// paused or dead), for adoption after an agent restart.
    async fn persisted(&self) -> Result<Vec<CapsuleId>, BackendError>;

    /// Takes charge of a capsule a previous agent process made.
    async fn adopt(&self, id: &CapsuleId) -> Result<CapsuleHandle, BackendError>;

    async fn status(&self, id: &CapsuleId) -> Result<CapsuleStatus, BackendError>;

    async fn metrics(&self, id: &CapsuleId) -> Result<MetricsSample, BackendError>;

    /// Copies the capsule's root filesystem, as the capsule sees it (without
    /// the kernel and memory file systems mounted over it: `/proc`, `/sys`,
    /// `/dev`, `/tmp`), to `dest`, a directory that does not exist yet,
    /// keeping ownership (in the template store's id range), modes, times,
    /// extended attributes, hard links and special files. The caller pauses
    /// the capsule first, so the copy is consistent.
    async fn export_rootfs(&self, id: &CapsuleId, dest: &Path) -> Result<(), BackendError> {
        let _ = dest;
        Err(BackendError::Unsupported {
            kind: self.kind(),
            reason: format!("copying capsule {id}'s filesystem is not supported by this backend"),
        })
    }
}
