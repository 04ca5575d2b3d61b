//! Configuration of the network slots: naming prefix, nftables table, address
//! ranges, pool size and what capsules may reach on the host. Validated once
//! into an `AddressPlan` when the manager opens.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};
use crate::plan::AddressPlan;

/// Default naming prefix: namespaces `warren-ns-<n>`, host links `warren-v<n>`.
pub const DEFAULT_PREFIX: &str = "warren";
/// Default host-reachable capsule range (one /32 per slot).
pub const DEFAULT_CAPSULE_NET: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 11, 0, 0), 16);
/// Default veth range (one /31 per slot).
pub const DEFAULT_VETH_NET: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 12, 0, 0), 16);
/// Link-local addresses, where clouds serve instance metadata.
pub const LINK_LOCAL_NET: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16);
/// Default number of ready-made slots kept for fast capsule creation.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// How the agent's network slots are laid out.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Names every namespace and link this agent makes (`<prefix>-ns-<n>`,
    /// `<prefix>-v<n>`); only those are ever cleaned up. 1 to 8 characters,
    /// a lowercase letter then lowercase letters or digits.
    pub prefix: String,
    /// The agent's nftables table (family `inet`); same rules as `prefix`
    /// plus `_`, up to 32 characters.
    pub table: String,
    /// Where allocations are persisted (`$WARREN_DIR/net`).
    pub state_dir: PathBuf,
    /// Capsule addresses: slot `n` is reachable from the host at
    /// `capsule_net + n`.
    pub capsule_net: Ipv4Net,
    /// Veth pairs: slot `n` uses `veth_net + 2n` (host) and `+ 2n + 1`
    /// (namespace) as a /31.
    pub veth_net: Ipv4Net,
    /// Slots created ahead of time so acquiring one needs no netlink work.
    pub pool_size: usize,
    /// Destinations capsules never reach, even with egress on (link-local
    /// metadata by default; operators may add their LAN).
    pub blocked_nets: Vec<Ipv4Net>,
    /// Host ports capsules may reach on the host's own addresses (nothing by
    /// default).
    pub exposed_host_ports: Vec<HostPort>,
    /// Set `net.ipv4.ip_forward=1` on the host when opening (needed for
    /// egress). Turn off where the operator manages sysctls.
    pub enable_forwarding: bool,
}

impl NetConfig {
    /// The defaults (`docs/architecture.md`, "Network slots"), persisting under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            table: DEFAULT_PREFIX.to_owned(),
            state_dir: state_dir.into(),
            capsule_net: DEFAULT_CAPSULE_NET,
            veth_net: DEFAULT_VETH_NET,
            pool_size: DEFAULT_POOL_SIZE,
            blocked_nets: vec![LINK_LOCAL_NET],
            exposed_host_ports: Vec::new(),
            enable_forwarding: true,
        }
    }

    /// Checks every field and derives the address plan.
    pub(crate) fn plan(&self) -> Result<AddressPlan> {
        check_name("prefix", &self.prefix, 8, false)?;
        check_name("table", &self.table, 32, true)?;
        for (what, net, max_len) in [
            ("capsule_net", self.capsule_net, 30),
            ("veth_net", self.veth_net, 29),
        ] {
            if net.prefix_len() > max_len {
                return Err(invalid(format!("{what} {net} is smaller than /{max_len}")));
            }
            if net.trunc() != net {
                return Err(invalid(format!("{what} {net} has host bits set")));
            }
        }
        if self.capsule_net.contains(&self.veth_net) || self.veth_net.contains(&self.capsule_net) {
            return Err(invalid(format!(
                "capsule_net {} and veth_net {} overlap",
                self.capsule_net, self.veth_net
            )));
        }
        let plan = AddressPlan::new(&self.prefix, self.capsule_net, self.veth_net)?;
        if self.pool_size >= plan.capacity() as usize {
            return Err(invalid(format!(
                "pool_size {} leaves no slot for capsules (capacity {})",
                self.pool_size,
                plan.capacity()
            )));
        }
        if let Some(port) = self.exposed_host_ports.iter().find(|p| p.port == 0) {
            return Err(invalid(format!("exposed host port {port} is port 0")));
        }
        Ok(plan)
    }
}

/// A host port capsules may reach (on any of the host's addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    /// Transport protocol.
    pub proto: L4Proto,
    /// Destination port.
    pub port: u16,
}

/// Transport protocol of a [`HostPort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        };
        write!(f, "{proto} . {}", self.port)
    }
}

fn invalid(message: String) -> NetError {
    NetError::InvalidConfig(message)
}

fn check_name(what: &str, name: &str, max: usize, underscore: bool) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || (underscore && c == '_'));
    if !first_ok || !rest_ok || name.len() > max {
        let extra = if underscore { ", '_'" } else { "" };
        return Err(invalid(format!(
            "{what} {name:?} must be 1 to {max} characters: a lowercase letter, then lowercase letters, digits{extra}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(DEFAULT_CAPSULE_NET.to_string(), "10.11.0.0/16");
        assert_eq!(DEFAULT_VETH_NET.to_string(), "10.12.0.0/16");
        assert_eq!(LINK_LOCAL_NET.to_string(), "169.254.0.0/16");
        let plan = NetConfig::new("/tmp/x").plan().expect("defaults validate");
        assert_eq!(plan.capacity(), 32768);
    }

    #[test]
    fn bad_configs_are_refused() {
        type Change = fn(&mut NetConfig);
        let cases: Vec<(&str, Change)> = vec![
            ("prefix", |c| c.prefix = "Warren".into()),
            ("prefix", |c| c.prefix = "warren-a".into()),
            ("prefix", |c| c.prefix = "abcdefghi".into()),
            ("prefix", |c| c.prefix = String::new()),
            ("table", |c| c.table = "t;drop".into()),
            ("overlap", |c| {
                c.veth_net = "10.11.128.0/17".parse().expect("net")
            }),
            ("host bits", |c| {
                c.capsule_net = "10.11.0.1/16".parse().expect("net")
            }),
            ("smaller", |c| {
                c.veth_net = "10.12.0.0/30".parse().expect("net")
            }),
            ("pool_size", |c| c.pool_size = 40000),
            ("port 0", |c| {
                c.exposed_host_ports = vec![HostPort {
                    proto: L4Proto::Udp,
                    port: 0,
                }]
            }),
        ];
        for (what, change) in cases {
            let mut config = NetConfig::new("/tmp/x");
            change(&mut config);
            let err = config.plan().expect_err(what);
            assert!(matches!(err, NetError::InvalidConfig(_)), "{what}: {err}");
        }
    }
}
