//! Optional devices: the virtio entropy device and vsock (both pre-boot).

use serde::{Deserialize, Serialize};

use super::{RateLimiter, validate_path};
use crate::error::InvalidInput;

/// `EntropyDevice`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntropyDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl EntropyDevice {
    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        match &self.rate_limiter {
            Some(r) => r.validate("entropy.rate_limiter"),
            None => Ok(()),
        }
    }
}

/// `Vsock`: guest CID and the host Unix socket Firecracker listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    /// 3 or more (0-2 are reserved).
    pub guest_cid: u32,
    pub uds_path: String,
}

impl Vsock {
    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        if self.guest_cid < 3 {
            return Err(InvalidInput::new(
                "vsock.guest_cid",
                format!("{} is reserved; use 3 or more", self.guest_cid),
            ));
        }
        validate_path("vsock.uds_path", &self.uds_path)
    }
}
