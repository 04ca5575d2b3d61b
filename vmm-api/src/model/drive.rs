//! Block devices: `PUT /drives/{id}` before boot, `PATCH` (new backing file,
//! new rate limiter) after. Only virtio-block is modelled; Warren does not use
//! vhost-user-block.

use serde::{Deserialize, Serialize};

use super::{RateLimiter, validate_device_id, validate_path};
use crate::error::InvalidInput;

/// `Drive` (virtio-block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    pub drive_id: String,
    pub is_root_device: bool,
    pub path_on_host: String,
    pub is_read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl Drive {
    /// A writable root drive backed by `path_on_host`.
    pub fn root(drive_id: impl Into<String>, path_on_host: impl Into<String>) -> Self {
        Self {
            drive_id: drive_id.into(),
            is_root_device: true,
            path_on_host: path_on_host.into(),
            is_read_only: false,
            partuuid: None,
            cache_type: None,
            io_engine: None,
            rate_limiter: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        validate_device_id("drive.drive_id", &self.drive_id)?;
        validate_path("drive.path_on_host", &self.path_on_host)?;
        if self.partuuid.is_some() && !self.is_root_device {
            return Err(InvalidInput::new(
                "drive.partuuid",
                "is only meaningful on the root device",
            ));
        }
        if let Some(r) = &self.rate_limiter {
            r.validate("drive.rate_limiter")?;
        }
        Ok(())
    }
}

/// Host page-cache strategy of a drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

impl CacheType {
    pub const ALL: [CacheType; 2] = [Self::Unsafe, Self::Writeback];
}

/// I/O engine of a drive (`Async` is io_uring, host kernel > 5.10.51).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    Sync,
    Async,
}

impl IoEngine {
    pub const ALL: [IoEngine; 2] = [Self::Sync, Self::Async];
}

/// `PartialDrive`: post-boot update of a drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialDrive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl PartialDrive {
    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        validate_device_id("drive.drive_id", &self.drive_id)?;
        if let Some(p) = &self.path_on_host {
            validate_path("drive.path_on_host", p)?;
        }
        if let Some(r) = &self.rate_limiter {
            r.validate("drive.rate_limiter")?;
        }
        if self.path_on_host.is_none() && self.rate_limiter.is_none() {
            return Err(InvalidInput::new("drive", "a PATCH that changes nothing"));
        }
        Ok(())
    }
}
