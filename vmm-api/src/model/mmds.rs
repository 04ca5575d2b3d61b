//! The microVM metadata service: its configuration (pre-boot) and its data
//! store. The store is not part of a snapshot: put it again after a restore.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::validate_device_id;
use crate::error::InvalidInput;

/// `MmdsConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmdsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<MmdsVersion>,
    /// Interfaces whose guest traffic to `ipv4_address` reaches MMDS.
    pub network_interfaces: Vec<String>,
    /// Link-local, 169.254.0.0/16 (default 169.254.169.254).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
    /// Answer `text/plain` like EC2's IMDS regardless of `Accept`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds_compat: Option<bool>,
}

impl MmdsConfig {
    /// MMDS V2 (session tokens) on the given interfaces.
    pub fn v2(network_interfaces: Vec<String>) -> Self {
        Self {
            version: Some(MmdsVersion::V2),
            network_interfaces,
            ipv4_address: None,
            imds_compat: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        if self.network_interfaces.is_empty() {
            return Err(InvalidInput::new(
                "mmds-config.network_interfaces",
                "is empty; MMDS would be unreachable",
            ));
        }
        for iface in &self.network_interfaces {
            validate_device_id("mmds-config.network_interfaces", iface)?;
        }
        if let Some(ip) = self.ipv4_address {
            let [a, b, c, _] = ip.octets();
            // The spec's pattern: 169.254.[1-254].[0-255].
            if a != 169 || b != 254 || c == 0 || c == 255 {
                return Err(InvalidInput::new(
                    "mmds-config.ipv4_address",
                    format!("{ip} is not in 169.254.1.0 - 169.254.254.255"),
                ));
            }
        }
        Ok(())
    }
}

/// MMDS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    V1,
    V2,
}

impl MmdsVersion {
    pub const ALL: [MmdsVersion; 2] = [Self::V1, Self::V2];
}

/// The MMDS data store: any JSON object (`PUT` replaces, `PATCH` merges
/// as a JSON merge patch).
pub type MmdsContents = serde_json::Map<String, serde_json::Value>;
