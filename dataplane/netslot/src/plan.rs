//! The address plan: a pure function from a slot index to the names and
//! addresses of that slot, and back from a namespace or link name to its index.
//!
//! Slot `n` (1 ≤ n < capacity) is namespace `<prefix>-ns-<n>`, host link
//! `<prefix>-v<n>`, veth /31 `veth_net + 2n` (host) / `+ 2n + 1` (namespace),
//! capsule address `capsule_net + n`. Index 0 is never used, so no capsule gets
//! a range's network address.

use std::net::Ipv4Addr;
use std::ops::Range;

use ipnet::Ipv4Net;

use crate::error::{NetError, Result};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// Names and addresses of every slot of one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddressPlan {
    prefix: String,
    capsule_net: Ipv4Net,
    veth_net: Ipv4Net,
    capacity: u32,
}

/// Everything that identifies one slot on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SlotAddrs {
    pub index: u32,
    pub netns: String,
    pub host_if: String,
    pub capsule: Ipv4Addr,
    pub host_veth: Ipv4Addr,
    pub ns_veth: Ipv4Addr,
}

impl AddressPlan {
    pub fn new(prefix: &str, capsule_net: Ipv4Net, veth_net: Ipv4Net) -> Result<Self> {
        let size = |net: Ipv4Net| 1u64 << (32 - u32::from(net.prefix_len()));
        let capacity = (size(capsule_net) - 1).min(size(veth_net) / 2);
        let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
        let plan = Self {
            prefix: prefix.to_owned(),
            capsule_net,
            veth_net,
            capacity,
        };
        let longest = plan.host_if(capacity - 1);
        if longest.len() > IFNAME_MAX {
            return Err(NetError::InvalidConfig(format!(
                "with prefix {prefix:?} and {} slots the link name {longest:?} exceeds {IFNAME_MAX} characters: use smaller ranges or a shorter prefix",
                capacity - 1
            )));
        }
        Ok(plan)
    }

    /// One more than the highest slot index.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Every usable slot index.
    pub fn indexes(&self) -> Range<u32> {
        1..self.capacity
    }

    pub fn contains(&self, index: u32) -> bool {
        self.indexes().contains(&index)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn capsule_net(&self) -> Ipv4Net {
        self.capsule_net
    }

    pub fn veth_net(&self) -> Ipv4Net {
        self.veth_net
    }

    /// The slot at `index`, which must be one of [`Self::indexes`].
    pub fn slot(&self, index: u32) -> SlotAddrs {
        debug_assert!(self.contains(index), "slot index {index} out of plan");
        let host_veth = offset(self.veth_net, 2 * index);
        SlotAddrs {
            index,
            netns: self.netns(index),
            host_if: self.host_if(index),
            capsule: offset(self.capsule_net, index),
            host_veth,
            ns_veth: offset(self.veth_net, 2 * index + 1),
        }
    }

    /// The index of a namespace this prefix names, in or out of the plan.
    pub fn netns_index(&self, name: &str) -> Option<u32> {
        parse_index(name.strip_prefix(&self.prefix)?.strip_prefix("-ns-")?)
    }

    /// The index of a host link this prefix names, in or out of the plan.
    pub fn link_index(&self, name: &str) -> Option<u32> {
        parse_index(name.strip_prefix(&self.prefix)?.strip_prefix("-v")?)
    }

    fn netns(&self, index: u32) -> String {
        format!("{}-ns-{index}", self.prefix)
    }

    fn host_if(&self, index: u32) -> String {
        format!("{}-v{index}", self.prefix)
    }
}

fn offset(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

/// Only the canonical decimal form, so `-ns-01` or `-ns-+1` are not ours.
fn parse_index(digits: &str) -> Option<u32> {
    let index: u32 = digits.parse().ok()?;
    (index.to_string() == digits).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(prefix: &str, capsule: &str, veth: &str) -> Result<AddressPlan> {
        AddressPlan::new(
            prefix,
            capsule.parse().expect("net"),
            veth.parse().expect("net"),
        )
    }

    #[test]
    fn slot_addresses_follow_the_index() {
        let plan = plan("warren", "10.11.0.0/16", "10.12.0.0/16").expect("plan");
        assert_eq!(plan.indexes(), 1..32768);
        let s = plan.slot(1);
        assert_eq!(s.netns, "warren-ns-1");
        assert_eq!(s.host_if, "warren-v1");
        assert_eq!(s.capsule, Ipv4Addr::new(10, 11, 0, 1));
        assert_eq!(s.host_veth, Ipv4Addr::new(10, 12, 0, 2));
        assert_eq!(s.ns_veth, Ipv4Addr::new(10, 12, 0, 3));
        let last = plan.slot(32767);
        assert_eq!(last.capsule, Ipv4Addr::new(10, 11, 127, 255));
        assert_eq!(last.ns_veth, Ipv4Addr::new(10, 12, 255, 255));
        assert!(last.host_if.len() <= IFNAME_MAX);
    }

    #[test]
    fn capacity_is_the_smaller_range() {
        let plan = plan("t", "198.18.0.0/27", "198.18.1.0/24").expect("plan");
        assert_eq!(
            plan.capacity(),
            31,
            "the /27's broadcast-like last address stays free"
        );
        let plan2 = self::plan("t", "198.18.0.0/24", "198.18.1.0/28").expect("plan");
        assert_eq!(plan2.capacity(), 8);
    }

    #[test]
    fn names_parse_back_only_for_this_prefix() {
        let plan = plan("wt", "10.11.0.0/16", "10.12.0.0/16").expect("plan");
        assert_eq!(plan.netns_index("wt-ns-42"), Some(42));
        assert_eq!(plan.link_index("wt-v42"), Some(42));
        for foreign in [
            "wt2-ns-1", "wt-ns-01", "wt-ns-+1", "wt-ns-", "xwt-ns-1", "wt-v", "wt-vx", "wt-ns-1x",
        ] {
            assert_eq!(plan.netns_index(foreign), None, "{foreign}");
            assert_eq!(plan.link_index(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn too_long_link_names_are_refused() {
        let err = plan("abcdefgh", "10.0.0.0/8", "11.0.0.0/8").expect_err("names too long");
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
