//! NAT and isolation for every slot in ONE nftables table (family `inet`),
//! keyed by sets, so adding a slot or switching its egress is a set element,
//! never a new rule:
//!
//! | set        | element per slot        | meaning                                  |
//! |------------|-------------------------|------------------------------------------|
//! | `slots`    | host link name          | traffic from/to this link is a capsule's |
//! | `slot_src` | host link . capsule addr | the only source address the slot may use |
//! | `egress`   | host link name          | may reach beyond the host (masqueraded)  |
//! | `blocked`  | (config) address ranges | never reachable (link-local metadata)    |
//! | `exposed`  | (config) proto . port   | host services capsules may reach         |
//!
//! Capsule → capsule, capsule → host (except `exposed`), capsule → `blocked`,
//! spoofed sources and IPv6 are dropped; connections into a capsule from
//! beyond the host are dropped. The host reaching a capsule (the proxy) is
//! local output and untouched.
//!
//! Driven through `nft -f -` scripts: each call is one kernel transaction, the
//! ruleset reads as nft syntax in review, and no extra crate maps nft's JSON
//! schema. Firecracker slots get a second, tiny table inside the slot's
//! namespace ([`tap_nat_script`]) that maps the capsule address to the guest's
//! fixed address.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;

use crate::SLOT_IF as NS_IF;
use crate::cmd;
use crate::config::HostPort;
use crate::error::Result;

/// One slot as the firewall sees it.
#[derive(Debug, Clone)]
pub(crate) struct FwSlot<'a> {
    pub host_if: &'a str,
    pub capsule: Ipv4Addr,
    pub egress: bool,
}

/// The agent's table on the host.
#[derive(Debug, Clone)]
pub(crate) struct Firewall {
    table: String,
    blocked: Vec<Ipv4Net>,
    exposed: Vec<HostPort>,
}

impl Firewall {
    pub fn new(table: &str, blocked: &[Ipv4Net], exposed: &[HostPort]) -> Self {
        Self {
            table: table.to_owned(),
            blocked: blocked.to_vec(),
            exposed: exposed.to_vec(),
        }
    }

    /// Replaces the whole table with one holding exactly `slots`, atomically:
    /// stale elements from a crashed agent vanish, live flows keep going.
    pub async fn rebuild(&self, slots: &[FwSlot<'_>]) -> Result<()> {
        nft(&self.table_script(slots), None).await
    }

    /// Removes the table; absent is fine.
    pub async fn delete(&self) -> Result<()> {
        let t = &self.table;
        nft(
            &format!("table inet {t} {{}}\ndelete table inet {t}\n"),
            None,
        )
        .await
    }

    /// Puts a new slot under isolation (egress off).
    pub async fn add_slot(&self, slot: &FwSlot<'_>) -> Result<()> {
        let t = &self.table;
        let (link, addr) = (slot.host_if, slot.capsule);
        nft(
            &format!(
                "add element inet {t} slots {{ \"{link}\" }}\n\
                 add element inet {t} slot_src {{ \"{link}\" . {addr} }}\n"
            ),
            None,
        )
        .await
    }

    /// Removes every element of a slot; elements already gone are fine
    /// (each is added then deleted in the same transaction).
    pub async fn remove_slot(&self, slot: &FwSlot<'_>) -> Result<()> {
        let t = &self.table;
        let (link, addr) = (slot.host_if, slot.capsule);
        let mut script = String::new();
        for (set, element) in [
            ("egress", format!("\"{link}\"")),
            ("slot_src", format!("\"{link}\" . {addr}")),
            ("slots", format!("\"{link}\"")),
        ] {
            let _ = writeln!(script, "add element inet {t} {set} {{ {element} }}");
            let _ = writeln!(script, "delete element inet {t} {set} {{ {element} }}");
        }
        nft(&script, None).await
    }

    /// Switches a slot's egress on or off; idempotent.
    pub async fn set_egress(&self, host_if: &str, on: bool) -> Result<()> {
        let t = &self.table;
        let mut script = format!("add element inet {t} egress {{ \"{host_if}\" }}\n");
        if !on {
            let _ = writeln!(script, "delete element inet {t} egress {{ \"{host_if}\" }}");
        }
        nft(&script, None).await
    }

    fn table_script(&self, slots: &[FwSlot<'_>]) -> String {
        let t = &self.table;
        let quoted = |link: &str| format!("\"{link}\"");
        let links: Vec<String> = slots.iter().map(|s| quoted(s.host_if)).collect();
        let sources: Vec<String> = slots
            .iter()
            .map(|s| format!("{} . {}", quoted(s.host_if), s.capsule))
            .collect();
        let egress: Vec<String> = slots
            .iter()
            .filter(|s| s.egress)
            .map(|s| quoted(s.host_if))
            .collect();
        let blocked: Vec<String> = self.blocked.iter().map(ToString::to_string).collect();
        let exposed: Vec<String> = self.exposed.iter().map(ToString::to_string).collect();
        let exposed_rule = if exposed.is_empty() {
            ""
        } else {
            "meta l4proto . th dport @exposed accept\n"
        };
        format!(
            "table inet {t} {{}}\n\
             delete table inet {t}\n\
             table inet {t} {{\n\
             set slots {{ type ifname;{links} }}\n\
             set slot_src {{ type ifname . ipv4_addr;{sources} }}\n\
             set egress {{ type ifname;{egress} }}\n\
             set blocked {{ type ipv4_addr; flags interval;{blocked} }}\n\
             set exposed {{ type inet_proto . inet_service;{exposed} }}\n\
             chain forward {{\n\
               type filter hook forward priority filter; policy accept;\n\
               iifname @slots jump from_capsule\n\
               oifname @slots jump to_capsule\n\
             }}\n\
             chain from_capsule {{\n\
               oifname @slots drop\n\
               meta nfproto ipv6 drop\n\
               iifname . ip saddr != @slot_src drop\n\
               ip daddr @blocked drop\n\
               iifname != @egress drop\n\
             }}\n\
             chain to_capsule {{\n\
               ct state established,related accept\n\
               drop\n\
             }}\n\
             chain input {{\n\
               type filter hook input priority filter; policy accept;\n\
               iifname @slots jump capsule_to_host\n\
             }}\n\
             chain capsule_to_host {{\n\
               ct state established,related accept\n\
               {exposed_rule}\
               drop\n\
             }}\n\
             chain postrouting {{\n\
               type nat hook postrouting priority srcnat; policy accept;\n\
               iifname @slots oifname != @slots masquerade\n\
             }}\n\
             }}\n",
            links = elements(&links),
            sources = elements(&sources),
            egress = elements(&egress),
            blocked = elements(&blocked),
            exposed = elements(&exposed),
        )
    }
}

/// The table inside a Firecracker slot's namespace: the host reaches the
/// capsule at `capsule`, the guest always has [`super::GUEST_ADDR`] on the
/// TAP, so snapshots never carry a host-specific address.
pub(crate) fn tap_nat_script(table: &str, capsule: Ipv4Addr) -> String {
    let guest = super::GUEST_ADDR;
    let tap = super::TAP_NAME;
    format!(
        "table ip {table} {{}}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         chain prerouting {{\n\
           type nat hook prerouting priority dstnat; policy accept;\n\
           iifname \"{NS_IF}\" ip daddr {capsule} dnat to {guest}\n\
         }}\n\
         chain postrouting {{\n\
           type nat hook postrouting priority srcnat; policy accept;\n\
           oifname \"{NS_IF}\" ip saddr {guest} snat to {capsule}\n\
         }}\n\
         chain forward {{\n\
           type filter hook forward priority filter; policy accept;\n\
           iifname \"{tap}\" ip saddr != {guest} drop\n\
         }}\n\
         chain input {{\n\
           type filter hook input priority filter; policy accept;\n\
           iifname \"{tap}\" ct state established,related accept\n\
           iifname \"{tap}\" drop\n\
         }}\n\
         }}\n"
    )
}

/// Applies an nft script in one transaction, inside `netns` when given.
pub(crate) async fn nft(script: &str, netns: Option<&Path>) -> Result<()> {
    cmd::run("nft", &["-f", "-"], script, netns).await.map(drop)
}

fn elements(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::L4Proto;

    #[test]
    fn table_script_lists_every_slot_in_its_sets() {
        let fw = Firewall::new(
            "wt",
            &["169.254.0.0/16".parse().expect("net")],
            &[HostPort {
                proto: L4Proto::Udp,
                port: 53,
            }],
        );
        let script = fw.table_script(&[
            FwSlot {
                host_if: "wt-v1",
                capsule: Ipv4Addr::new(10, 11, 0, 1),
                egress: true,
            },
            FwSlot {
                host_if: "wt-v2",
                capsule: Ipv4Addr::new(10, 11, 0, 2),
                egress: false,
            },
        ]);
        assert!(script.contains("set slots { type ifname; elements = { \"wt-v1\", \"wt-v2\" }; }"));
        assert!(script.contains("elements = { \"wt-v1\" . 10.11.0.1, \"wt-v2\" . 10.11.0.2 }"));
        assert!(script.contains("set egress { type ifname; elements = { \"wt-v1\" }; }"));
        assert!(script.contains("elements = { udp . 53 }"));
        assert!(script.contains("meta l4proto . th dport @exposed accept"));
        assert!(
            script.starts_with("table inet wt {}\ndelete table inet wt\n"),
            "atomic replace"
        );
    }

    #[test]
    fn empty_sets_have_no_elements_clause() {
        let script = Firewall::new("wt", &[], &[]).table_script(&[]);
        assert!(script.contains("set slots { type ifname; }"));
        assert!(
            !script.contains("@exposed accept"),
            "nothing exposed by default"
        );
    }
}
