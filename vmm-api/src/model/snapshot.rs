//! Snapshots: `PUT /snapshot/create` (VM paused; full or diff) and
//! `PUT /snapshot/load` (fresh process only; memory from a file or served by
//! a userfaultfd page server).

use serde::{Deserialize, Serialize};

use super::{validate_device_id, validate_path};
use crate::error::InvalidInput;

/// `SnapshotCreateParams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreate {
    pub snapshot_path: String,
    pub mem_file_path: String,
    /// Default (absent) is a full snapshot. `Diff` needs dirty-page tracking;
    /// written over an existing memory file of the right size it merges in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

impl SnapshotCreate {
    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        validate_path("snapshot-create.snapshot_path", &self.snapshot_path)?;
        validate_path("snapshot-create.mem_file_path", &self.mem_file_path)?;
        if self.snapshot_path == self.mem_file_path {
            return Err(InvalidInput::new(
                "snapshot-create.mem_file_path",
                "is the same file as snapshot_path",
            ));
        }
        Ok(())
    }
}

/// Full or diff snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    Full,
    Diff,
}

impl SnapshotType {
    pub const ALL: [SnapshotType; 2] = [Self::Full, Self::Diff];
}

/// `SnapshotLoadParams`. Only the non-deprecated fields are modelled
/// (`mem_backend`, never `mem_file_path`; `track_dirty_pages`, never
/// `enable_diff_snapshots`), so "exactly one memory source" always holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLoad {
    pub snapshot_path: String,
    pub mem_backend: MemoryBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// New TAP names for interfaces of the snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    /// x86_64: advance kvmclock by the wall-clock time since the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_realtime: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<SnapshotHugePages>,
}

impl SnapshotLoad {
    /// Load `snapshot_path` with memory from `mem_backend`; everything else
    /// default (not resumed, no dirty tracking).
    pub fn new(snapshot_path: impl Into<String>, mem_backend: MemoryBackend) -> Self {
        Self {
            snapshot_path: snapshot_path.into(),
            mem_backend,
            resume_vm: None,
            track_dirty_pages: None,
            network_overrides: Vec::new(),
            vsock_override: None,
            clock_realtime: None,
            huge_pages: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        validate_path("snapshot-load.snapshot_path", &self.snapshot_path)?;
        validate_path(
            "snapshot-load.mem_backend.backend_path",
            &self.mem_backend.backend_path,
        )?;
        for o in &self.network_overrides {
            validate_device_id("snapshot-load.network_overrides.iface_id", &o.iface_id)?;
            if o.host_dev_name.is_empty() || o.host_dev_name.len() > 15 {
                return Err(InvalidInput::new(
                    "snapshot-load.network_overrides.host_dev_name",
                    format!("{:?} is not a valid interface name", o.host_dev_name),
                ));
            }
        }
        if let Some(v) = &self.vsock_override {
            validate_path("snapshot-load.vsock_override.uds_path", &v.uds_path)?;
        }
        if self.huge_pages == Some(SnapshotHugePages::Hugetlbfs2M)
            && self.mem_backend.backend_type != MemoryBackendType::Uffd
        {
            return Err(InvalidInput::new(
                "snapshot-load.huge_pages",
                "2M huge pages need the Uffd memory backend",
            ));
        }
        Ok(())
    }
}

/// Where restored guest memory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    /// The memory file (`File`) or the page server's Unix socket (`Uffd`).
    pub backend_path: String,
}

impl MemoryBackend {
    pub fn file(path: impl Into<String>) -> Self {
        Self {
            backend_type: MemoryBackendType::File,
            backend_path: path.into(),
        }
    }

    pub fn uffd(socket: impl Into<String>) -> Self {
        Self {
            backend_type: MemoryBackendType::Uffd,
            backend_path: socket.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    File,
    Uffd,
}

impl MemoryBackendType {
    pub const ALL: [MemoryBackendType; 2] = [Self::File, Self::Uffd];
}

/// Replace the TAP behind an interface of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// Replace the vsock's Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockOverride {
    pub uds_path: String,
}

/// Huge pages of a restored VM (`Snapshot` = as recorded, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotHugePages {
    Snapshot,
    None,
    Transparent,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

impl SnapshotHugePages {
    pub const ALL: [SnapshotHugePages; 4] = [
        Self::Snapshot,
        Self::None,
        Self::Transparent,
        Self::Hugetlbfs2M,
    ];
}
