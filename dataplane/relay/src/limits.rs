//! Caps on client connections: in all and per client IP address, counted
//! across cores when a connection is accepted (not per request), and the
//! process's open-file limit raised to what the system allows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards of the per-IP counts, so cores accepting at once rarely meet.
const SHARDS: usize = 16;

/// Open client connections, in all and per IP address.
#[derive(Debug)]
pub struct ConnLimits {
    total: AtomicUsize,
    max_total: usize,
    max_per_ip: usize,
    per_ip: [Mutex<HashMap<IpAddr, usize>>; SHARDS],
}

/// Which cap a connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The relay holds `max_connections` already.
    Total(usize),
    /// This address holds `max_connections_per_ip` already.
    PerIp(usize),
}

impl ConnLimits {
    /// Caps of `max_total` and `max_per_ip` open connections.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            total: AtomicUsize::new(0),
            max_total,
            max_per_ip,
            per_ip: Default::default(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => (u128::from(*v6) as usize) ^ ((u128::from(*v6) >> 64) as usize),
        };
        &self.per_ip[h % SHARDS]
    }

    /// Counts a new connection from `ip`, or says which cap refuses it. The
    /// permit uncounts it when dropped.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refused> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Total(self.max_total));
        }
        let mut shard = self
            .shard(&ip)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = shard.entry(ip).or_default();
        if *count >= self.max_per_ip {
            drop(shard);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::PerIp(self.max_per_ip));
        }
        *count += 1;
        Ok(ConnPermit {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open_now(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// One counted connection.
#[derive(Debug)]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut shard = self
            .limits
            .shard(&self.ip)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = shard.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&self.ip);
            }
        }
        drop(shard);
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Raises the soft limit on open files to the hard limit (each connection
/// holds one or two descriptors). Returns the limit now in force.
pub fn raise_nofile() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address() {
        let limits = Arc::new(ConnLimits::new(3, 2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = limits.open(a).expect("first");
        let _a2 = limits.open(a).expect("second");
        assert_eq!(limits.open(a).unwrap_err(), Refused::PerIp(2));
        let _b1 = limits.open(b).expect("other address");
        assert_eq!(limits.open(b).unwrap_err(), Refused::Total(3));
        assert_eq!(limits.open_now(), 3);
        drop(a1);
        assert_eq!(limits.open_now(), 2);
        let _a3 = limits.open(a).expect("a slot freed");
    }
}
