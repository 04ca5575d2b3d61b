//! The guest kernel command line Warren boots microVMs with.
//!
//! Networking is fixed per capsule and identical in every capsule: the guest
//! is always 169.254.0.21/30 behind `tap0` at 169.254.0.22 (see
//! `warren-netslot`), so a memory snapshot taken in one network slot resumes
//! in any other. The kernel's `ip=` argument carries it; the guest init
//! (`images/guest/init`) applies it, also when the kernel was built without
//! `CONFIG_IP_PNP`.

use std::fmt::Write;
use std::net::Ipv4Addr;

/// The guest's address in every microVM.
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 21);
/// The host end (`tap0`), the guest's default gateway.
pub const TAP_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 22);
/// A /30: just the two of them.
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 252);
/// Where the guest init lives in Warren's images.
pub const GUEST_INIT: &str = "/sbin/warren-init";

/// What goes on the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCmdline {
    /// Guest hostname (the same for every capsule of a template, so
    /// snapshots stay valid).
    pub hostname: String,
    /// Guest network device.
    pub device: String,
    /// Up to two DNS servers, written to `/etc/resolv.conf`.
    pub dns: Vec<Ipv4Addr>,
    /// The init program.
    pub init: String,
    /// Anything else (e.g. `quiet`, `loglevel=4`).
    pub extra: Vec<String>,
}

impl Default for KernelCmdline {
    fn default() -> Self {
        Self {
            hostname: "warren".into(),
            device: "eth0".into(),
            dns: vec![Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(1, 1, 1, 1)],
            init: GUEST_INIT.into(),
            extra: Vec::new(),
        }
    }
}

impl KernelCmdline {
    /// The `ip=` argument: `client::gateway:netmask:hostname:device:off:dns0:dns1`
    /// (the kernel's nfsroot.txt format; no server address).
    pub fn ip_arg(&self) -> String {
        let mut s = format!(
            "ip={GUEST_IP}::{TAP_IP}:{NETMASK}:{}:{}:off",
            self.hostname, self.device
        );
        for dns in self.dns.iter().take(2) {
            let _ = write!(s, ":{dns}");
        }
        s
    }

    /// The whole command line for `BootSource::boot_args`.
    ///
    /// - `console=ttyS0`: the serial console goes to the capsule's console log.
    /// - `reboot=k panic=1`: a reboot or panic in the guest ends the
    ///   Firecracker process instead of hanging.
    /// - `pci=off i8042.*`: no PCI bus, no keyboard controller probing (faster boot).
    /// - `root=/dev/vda rw rootfstype=ext4`: the capsule's copy-on-write disk.
    /// - `init=`: Warren's guest init, which execs envd.
    /// - `random.trust_cpu=on`: do not stall early boot waiting for entropy.
    pub fn render(&self) -> String {
        let mut parts: Vec<String> = [
            "console=ttyS0",
            "reboot=k",
            "panic=1",
            "pci=off",
            "i8042.noaux",
            "i8042.nomux",
            "i8042.nopnp",
            "i8042.dumbkbd",
            "root=/dev/vda",
            "rw",
            "rootfstype=ext4",
            "random.trust_cpu=on",
        ]
        .map(String::from)
        .to_vec();
        parts.push(format!("init={}", self.init));
        parts.push(self.ip_arg());
        parts.extend(self.extra.iter().cloned());
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cmdline_has_the_fixed_guest_address() {
        let c = KernelCmdline::default();
        assert_eq!(
            c.ip_arg(),
            "ip=169.254.0.21::169.254.0.22:255.255.255.252:warren:eth0:off:8.8.8.8:1.1.1.1"
        );
        let line = c.render();
        assert!(
            line.starts_with("console=ttyS0 reboot=k panic=1 pci=off"),
            "{line}"
        );
        assert!(line.contains(" init=/sbin/warren-init "), "{line}");
    }
}
