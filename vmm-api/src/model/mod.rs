//! Typed bodies of Firecracker's REST API (Swagger definitions of
//! `firecracker-api.yaml`, v1.17).
//!
//! Request models serialise only the fields the spec defines and omit
//! optional ones that are unset. Response models accept fields they do not
//! know, so a newer Firecracker does not break decoding. Each request model
//! has a `validate` that catches what Firecracker would refuse (or silently
//! misread) before it is sent.

mod balloon;
mod devices;
mod drive;
mod instance;
mod machine;
mod mmds;
mod net;
mod observability;
mod rate_limiter;
mod snapshot;

pub use balloon::{Balloon, BalloonStats, BalloonStatsUpdate, BalloonUpdate};
pub use devices::{EntropyDevice, Vsock};
pub use drive::{CacheType, Drive, IoEngine, PartialDrive};
pub use instance::{
    ActionType, FirecrackerVersion, InstanceAction, InstanceInfo, InstanceState, Vm, VmState,
};
pub use machine::{BootSource, CpuTemplate, HugePages, MachineConfig};
pub use mmds::{MmdsConfig, MmdsContents, MmdsVersion};
pub use net::{NetworkInterface, PartialNetworkInterface};
pub use observability::{LogLevel, Logger, Metrics};
pub use rate_limiter::{RateLimiter, TokenBucket};
pub use snapshot::{
    MemoryBackend, MemoryBackendType, NetworkOverride, SnapshotCreate, SnapshotHugePages,
    SnapshotLoad, SnapshotType, VsockOverride,
};

use crate::error::InvalidInput;

/// Firecracker's rule for device ids (drives, network interfaces), which
/// also appear in URL paths: 1 to 64 ASCII alphanumerics or `_`.
pub(crate) fn validate_device_id(field: &'static str, id: &str) -> Result<(), InvalidInput> {
    if id.is_empty() || id.len() > 64 {
        return Err(InvalidInput::new(field, "must be 1 to 64 characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(InvalidInput::new(
            field,
            format!("{c:?} is not allowed (only ASCII letters, digits and '_')"),
        ));
    }
    Ok(())
}

/// A host path handed to Firecracker: non-empty, no NUL.
pub(crate) fn validate_path(field: &'static str, path: &str) -> Result<(), InvalidInput> {
    if path.is_empty() {
        return Err(InvalidInput::new(field, "is empty"));
    }
    if path.contains('\0') {
        return Err(InvalidInput::new(field, "contains a NUL byte"));
    }
    Ok(())
}
