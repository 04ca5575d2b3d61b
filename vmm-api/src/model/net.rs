//! Network interfaces: `PUT /network-interfaces/{id}` before boot (TAP name,
//! MAC, MTU, rx/tx rate limiters), `PATCH` of the rate limiters while the
//! guest runs.

use serde::{Deserialize, Serialize};

use super::{RateLimiter, validate_device_id};
use crate::error::InvalidInput;

/// `NetworkInterface`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// The TAP device on the host (in Firecracker's network namespace).
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// Advertised to the guest (68..=65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl NetworkInterface {
    /// An interface on `host_dev_name`, everything else default.
    pub fn new(iface_id: impl Into<String>, host_dev_name: impl Into<String>) -> Self {
        Self {
            iface_id: iface_id.into(),
            host_dev_name: host_dev_name.into(),
            guest_mac: None,
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        validate_device_id("network-interface.iface_id", &self.iface_id)?;
        let dev = &self.host_dev_name;
        // IFNAMSIZ is 16 including the NUL.
        if dev.is_empty() || dev.len() > 15 || dev.contains(['/', '\0', ' ']) {
            return Err(InvalidInput::new(
                "network-interface.host_dev_name",
                format!("{dev:?} is not a valid interface name"),
            ));
        }
        if let Some(mac) = &self.guest_mac {
            validate_mac(mac)?;
        }
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(InvalidInput::new(
                "network-interface.mtu",
                format!("{mtu} is outside 68..=65535"),
            ));
        }
        if let Some(r) = &self.rx_rate_limiter {
            r.validate("network-interface.rx_rate_limiter")?;
        }
        if let Some(r) = &self.tx_rate_limiter {
            r.validate("network-interface.tx_rate_limiter")?;
        }
        Ok(())
    }
}

fn validate_mac(mac: &str) -> Result<(), InvalidInput> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new(
            "network-interface.guest_mac",
            format!("{mac:?} is not a MAC address like 06:00:ac:10:00:02"),
        ))
    }
}

/// `PartialNetworkInterface`: live update of an interface's rate limiters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialNetworkInterface {
    pub iface_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl PartialNetworkInterface {
    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        validate_device_id("network-interface.iface_id", &self.iface_id)?;
        if self.rx_rate_limiter.is_none() && self.tx_rate_limiter.is_none() {
            return Err(InvalidInput::new(
                "network-interface",
                "a PATCH that changes nothing",
            ));
        }
        if let Some(r) = &self.rx_rate_limiter {
            r.validate("network-interface.rx_rate_limiter")?;
        }
        if let Some(r) = &self.tx_rate_limiter {
            r.validate("network-interface.tx_rate_limiter")?;
        }
        Ok(())
    }
}
