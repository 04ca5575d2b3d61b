//! `warren-netslot`: network slots, the network of one capsule, for both
//! backends (`warren-backend` asks for a slot per capsule; the agent opens the
//! [`SlotManager`] at start).
//!
//! Slot `n` is network namespace `<prefix>-ns-<n>` joined to the host by a veth
//! pair (host side `<prefix>-v<n>`, slot side [`SLOT_IF`], a /31 of
//! `veth_net`), with a host-reachable capsule address from `capsule_net`
//! routed into it. A namespace capsule's processes live in that namespace and
//! own the capsule address; a Firecracker capsule gets a TAP ([`TAP_NAME`])
//! and the namespace NATs between the capsule address and the guest's fixed
//! [`GUEST_ADDR`] ([`SlotManager::enable_tap`]).
//!
//! Isolation and NAT live in one nftables table keyed by sets
//! (`firewall`); tx limits for namespace capsules are `tc`
//! shaping on the slot's veth ([`TxLimit`]). Allocations are persisted under
//! the state directory, a few slots are made ahead of time (the pool), and at
//! start everything carrying this agent's prefix that no allocation claims is
//! removed.
//!
//! Host settings it makes: `net.ipv4.ip_forward=1` on the host when opening
//! (for egress; [`NetConfig::enable_forwarding`]), `disable_ipv6=1` on each
//! host veth and inside each slot namespace (slots are IPv4-only), and
//! `net.ipv4.ip_forward=1` inside a slot namespace once it has a TAP. The
//! table's base chains accept by default and only drop slot traffic; a host
//! whose other firewall drops forwarded traffic (Docker's `FORWARD` policy)
//! must let `<prefix>-v*` through as well.
//!
//! Module map: `config` (what is configurable), `plan` (index → names and
//! addresses), `netns` (named namespaces), `netlink` (links, addresses,
//! routes), `tap` (TAP ioctl), `firewall` (the nftables table), `shaper` (tx
//! limits), `store` (the state file), `cmd` (running `nft`/`tc`), and this
//! file: the [`SlotManager`] tying them together. `testing` (feature
//! `testing`) holds the fixtures the tests and the tx-limit bench share.

mod cmd;
mod config;
mod error;
mod firewall;
mod netlink;
pub mod netns;
mod plan;
mod shaper;
mod store;
pub(crate) mod tap;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{Mutex, Notify, OwnedMutexGuard};
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, info, warn};

pub use config::{
    DEFAULT_CAPSULE_NET, DEFAULT_POOL_SIZE, DEFAULT_PREFIX, DEFAULT_VETH_NET, HostPort, L4Proto,
    LINK_LOCAL_NET, NetConfig,
};
pub use error::{NetError, Result};
pub use shaper::TxLimit;

use firewall::{Firewall, FwSlot};
use netlink::Netlink;
use plan::{AddressPlan, SlotAddrs};
use shaper::Shaper;
use store::{SlotRecord, Store, TxState};

/// The slot side of every veth, inside the slot's namespace.
pub const SLOT_IF: &str = "eth0";
/// The TAP of a Firecracker slot, inside the slot's namespace.
pub const TAP_NAME: &str = "tap0";
/// The guest's address on every Firecracker capsule (snapshots carry it).
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 21);
/// The slot's address on the TAP: the guest's gateway.
pub const TAP_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 22);
/// Prefix length of the TAP link ([`TAP_ADDR`] and [`GUEST_ADDR`]).
pub const TAP_PREFIX_LEN: u8 = 30;
/// Default TAP transmit queue length.
pub const DEFAULT_TAP_TXQUEUELEN: u32 = 5000;

/// Longest capsule id recorded.
const CAPSULE_ID_MAX: usize = 128;

/// A slot held by a capsule: what a backend needs to put the capsule in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    capsule_id: String,
    addrs: SlotAddrs,
}

impl Slot {
    /// The capsule holding the slot.
    pub fn capsule_id(&self) -> &str {
        &self.capsule_id
    }

    /// The slot number `n`.
    pub fn index(&self) -> u32 {
        self.addrs.index
    }

    /// Name of the slot's network namespace (`ip netns` lists it).
    pub fn netns_name(&self) -> &str {
        &self.addrs.netns
    }

    /// Path of the slot's network namespace, for `setns(2)`.
    pub fn netns_path(&self) -> PathBuf {
        netns::path(&self.addrs.netns)
    }

    /// Where the host reaches the capsule.
    pub fn capsule_addr(&self) -> Ipv4Addr {
        self.addrs.capsule
    }

    /// The host side of the veth.
    pub fn host_veth_addr(&self) -> Ipv4Addr {
        self.addrs.host_veth
    }

    /// The slot side of the veth ([`SLOT_IF`]).
    pub fn slot_veth_addr(&self) -> Ipv4Addr {
        self.addrs.ns_veth
    }

    /// Name of the host side of the veth.
    pub fn host_ifname(&self) -> &str {
        &self.addrs.host_if
    }
}

/// Settings applied when a slot is acquired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotOptions {
    /// May the capsule reach beyond the host? Off unless asked for.
    pub egress: bool,
    /// Shape what the capsule sends (namespace capsules; Firecracker applies
    /// its own `tx_rate_limiter`).
    pub tx_limit: Option<TxLimit>,
}

/// A held slot and its current settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot.
    pub slot: Slot,
    /// Egress on or off.
    pub egress: bool,
    /// The tx limit, if any.
    pub tx_limit: Option<TxLimit>,
    /// Whether the one-time burst of `tx_limit` has been spent.
    pub tx_burst_spent: bool,
    /// The TAP's queue length, once [`SlotManager::enable_tap`] ran.
    pub tap_txqueuelen: Option<u32>,
}

/// Owns this agent's network slots. Dropping it stops its background work
/// and leaves every slot in place for the next start; [`Self::shutdown`]
/// does the same after letting a pool refill in progress finish.
pub struct SlotManager {
    inner: Arc<Inner>,
    refiller: Option<JoinHandle<()>>,
}

struct Inner {
    config: NetConfig,
    plan: AddressPlan,
    host: Netlink,
    firewall: Firewall,
    store: Store,
    state: Mutex<State>,
    /// One-time-burst watchers by slot index.
    watchers: StdMutex<HashMap<u32, AbortHandle>>,
    refill: Notify,
    /// Signalled when a pool slot is made (or fails to be).
    pool_changed: Notify,
    closing: AtomicBool,
}

#[derive(Default)]
struct State {
    allocated: BTreeMap<u32, Allocation>,
    by_capsule: HashMap<String, u32>,
    /// Made and waiting for a capsule.
    pool: VecDeque<u32>,
    /// Nothing on the host; least recently released last.
    free: VecDeque<u32>,
    /// Pool slots being made.
    creating: usize,
}

struct Allocation {
    record: SlotRecord,
    /// False while `acquire` is still setting the slot up.
    ready: bool,
    /// Serialises operations on the slot.
    lock: Arc<Mutex<()>>,
}

impl State {
    fn records(&self) -> Vec<SlotRecord> {
        self.allocated
            .values()
            .filter(|a| a.ready)
            .map(|a| a.record.clone())
            .collect()
    }

    fn insert(&mut self, record: SlotRecord, ready: bool) {
        self.by_capsule
            .insert(record.capsule_id.clone(), record.index);
        let lock = Arc::new(Mutex::new(()));
        self.allocated.insert(
            record.index,
            Allocation {
                record,
                ready,
                lock,
            },
        );
    }

    fn remove(&mut self, index: u32) -> Option<Allocation> {
        let allocation = self.allocated.remove(&index)?;
        self.by_capsule.remove(&allocation.record.capsule_id);
        Some(allocation)
    }

    fn find(&self, slot: &Slot) -> Result<&Allocation> {
        self.allocated
            .get(&slot.addrs.index)
            .filter(|a| a.ready && a.record.capsule_id == slot.capsule_id)
            .ok_or_else(|| NetError::NotAllocated(slot.capsule_id.clone()))
    }
}

impl SlotManager {
    /// Opens the slots of `config`: rebuilds the nftables table from the
    /// persisted allocations, removes this prefix's leftovers that no
    /// allocation claims (a crashed agent's), re-adopts (repairing if needed)
    /// every persisted slot, and fills the pool.
    pub async fn open(config: NetConfig) -> Result<Self> {
        let plan = config.plan()?;
        let store = Store::new(&config.state_dir, &plan);
        let records = store.load()?;
        if config.enable_forwarding {
            netns::write_sysctl("net/ipv4/ip_forward", "1")
                .map_err(|err| NetError::io("setting net.ipv4.ip_forward=1", err))?;
        }
        let firewall = Firewall::new(
            &config.table,
            &config.blocked_nets,
            &config.exposed_host_ports,
        );
        let addrs: Vec<SlotAddrs> = records.iter().map(|r| plan.slot(r.index)).collect();
        let fw_slots: Vec<FwSlot<'_>> = addrs
            .iter()
            .zip(&records)
            .map(|(a, r)| fw_slot(a, r.egress))
            .collect();
        firewall.rebuild(&fw_slots).await?;
        drop(fw_slots);
        let inner = Arc::new(Inner {
            host: Netlink::host()?,
            store,
            firewall,
            plan,
            config,
            state: Mutex::new(State::default()),
            watchers: StdMutex::new(HashMap::new()),
            refill: Notify::new(),
            pool_changed: Notify::new(),
            closing: AtomicBool::new(false),
        });
        let keep: HashSet<u32> = records.iter().map(|r| r.index).collect();
        remove_leftovers(&inner.plan, &inner.host, &keep).await?;
        let mut adopted = Vec::with_capacity(records.len());
        for record in records {
            adopted.push(inner.adopt(record).await?);
        }
        {
            let mut state = inner.state.lock().await;
            for record in &adopted {
                state.insert(record.clone(), true);
            }
            state.free = inner.plan.indexes().filter(|i| !keep.contains(i)).collect();
            inner.store.save(state.records())?;
        }
        inner.fill_pool().await?;
        // Background work starts only once nothing can fail any more.
        for record in &adopted {
            if let Some(tx) = record.tx.filter(|tx| !tx.burst_spent) {
                inner.spawn_watcher(inner.slot_of(record), tx.limit);
            }
        }
        info!(
            prefix = inner.plan.prefix(),
            adopted = adopted.len(),
            pool = inner.config.pool_size,
            "network slots ready"
        );
        let refiller = tokio::spawn(Arc::clone(&inner).refill_loop());
        Ok(Self {
            inner,
            refiller: Some(refiller),
        })
    }

    /// Gives `capsule_id` a slot (from the pool when one is ready) with
    /// `options` applied. Persisted before it returns.
    pub async fn acquire(&self, capsule_id: &str, options: SlotOptions) -> Result<Slot> {
        validate_capsule_id(capsule_id)?;
        if let Some(limit) = &options.tx_limit {
            limit.validate()?;
        }
        self.inner.acquire(capsule_id, options).await
    }

    /// Takes the slot back and destroys its namespace, links and firewall
    /// elements (the capsule's processes must be gone). The index returns to
    /// the free list; the pool is refilled with fresh slots, never reused ones.
    pub async fn release(&self, slot: &Slot) -> Result<()> {
        self.inner.release(slot).await
    }

    /// Switches the capsule's egress (beyond the host, masqueraded) on or off.
    pub async fn set_egress(&self, slot: &Slot, on: bool) -> Result<()> {
        let inner = &self.inner;
        let (_guard, mut record) = inner.lock_slot(slot).await?;
        if record.egress != on {
            inner.firewall.set_egress(&slot.addrs.host_if, on).await?;
            record.egress = on;
            inner.commit(record).await?;
        }
        Ok(())
    }

    /// Sets, changes (with fresh buckets) or removes the capsule's tx limit.
    pub async fn set_tx_limit(&self, slot: &Slot, limit: Option<TxLimit>) -> Result<()> {
        if let Some(limit) = &limit {
            limit.validate()?;
        }
        let inner = &self.inner;
        let (_guard, mut record) = inner.lock_slot(slot).await?;
        inner.stop_watcher(slot.index());
        let shaper = Shaper::open(&slot.netns_path()).await?;
        record.tx = match limit {
            Some(limit) => Some(install_tx(&shaper, limit).await?),
            None => {
                shaper.remove().await?;
                None
            }
        };
        let pending = record.tx.filter(|tx| !tx.burst_spent);
        inner.commit(record).await?;
        if let Some(tx) = pending {
            inner.spawn_watcher(slot.clone(), tx.limit);
        }
        Ok(())
    }

    /// Gives the slot a persistent TAP ([`TAP_NAME`], [`TAP_ADDR`]/30, queue
    /// length `txqueuelen`) and the namespace NAT between the capsule address
    /// and [`GUEST_ADDR`], for a Firecracker capsule. Calling it again only
    /// changes the queue length.
    pub async fn enable_tap(&self, slot: &Slot, txqueuelen: u32) -> Result<()> {
        if txqueuelen == 0 {
            return Err(NetError::InvalidConfig(
                "TAP txqueuelen must be at least 1".into(),
            ));
        }
        let inner = &self.inner;
        let (_guard, mut record) = inner.lock_slot(slot).await?;
        inner.make_tap(&slot.addrs, txqueuelen).await?;
        record.tap_txqueuelen = Some(txqueuelen);
        inner.commit(record).await
    }

    /// The slot `capsule_id` holds, if any.
    pub async fn get(&self, capsule_id: &str) -> Option<Slot> {
        let state = self.inner.state.lock().await;
        let index = state.by_capsule.get(capsule_id)?;
        let allocation = state.allocated.get(index).filter(|a| a.ready)?;
        Some(self.inner.slot_of(&allocation.record))
    }

    /// Every held slot with its settings, by slot number.
    pub async fn list(&self) -> Vec<SlotInfo> {
        let state = self.inner.state.lock().await;
        state
            .allocated
            .values()
            .filter(|a| a.ready)
            .map(|a| SlotInfo {
                slot: self.inner.slot_of(&a.record),
                egress: a.record.egress,
                tx_limit: a.record.tx.map(|tx| tx.limit),
                tx_burst_spent: a.record.tx.is_some_and(|tx| tx.burst_spent),
                tap_txqueuelen: a.record.tap_txqueuelen,
            })
            .collect()
    }

    /// Number of ready slots waiting in the pool.
    pub async fn pool_len(&self) -> usize {
        self.inner.state.lock().await.pool.len()
    }

    /// Stops background work, letting a pool refill in progress finish, and
    /// leaves every slot in place.
    pub async fn shutdown(mut self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.inner.refill.notify_one();
        if let Some(refiller) = self.refiller.take() {
            let _ = refiller.await;
        }
    }

    /// Removes every namespace, link, table and state file of `config`'s
    /// prefix and table, held slots included: for uninstalling an agent (and
    /// for tests). No manager of this configuration may be open.
    pub async fn purge(config: &NetConfig) -> Result<()> {
        let plan = config.plan()?;
        remove_leftovers(&plan, &Netlink::host()?, &HashSet::new()).await?;
        Firewall::new(&config.table, &[], &[]).delete().await?;
        Store::new(&config.state_dir, &plan).remove()
    }
}

impl Drop for SlotManager {
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        if let Some(refiller) = self.refiller.take() {
            refiller.abort();
        }
        let watchers = std::mem::take(&mut *lock_watchers(&self.inner.watchers));
        for watcher in watchers.into_values() {
            watcher.abort();
        }
    }
}

impl Inner {
    async fn acquire(self: &Arc<Self>, capsule_id: &str, options: SlotOptions) -> Result<Slot> {
        let (index, pooled) = loop {
            let mut state = self.state.lock().await;
            if state.by_capsule.contains_key(capsule_id) {
                return Err(NetError::AlreadyAllocated(capsule_id.to_owned()));
            }
            let (index, pooled) = if let Some(index) = state.pool.pop_front() {
                (index, true)
            } else if let Some(index) = state.free.pop_front() {
                (index, false)
            } else if state.creating > 0 {
                // The last free slots are being made for the pool: wait.
                let made = self.pool_changed.notified();
                drop(state);
                made.await;
                continue;
            } else {
                return Err(NetError::Exhausted(self.plan.capacity() - 1));
            };
            let record = SlotRecord {
                index,
                capsule_id: capsule_id.to_owned(),
                egress: options.egress,
                tx: None,
                tap_txqueuelen: None,
            };
            state.insert(record, false);
            break (index, pooled);
        };
        self.refill.notify_one();
        let addrs = self.plan.slot(index);
        let set_up = async {
            if !pooled {
                self.create_slot(&addrs).await?;
            }
            if options.egress {
                self.firewall.set_egress(&addrs.host_if, true).await?;
            }
            match options.tx_limit {
                Some(limit) => Ok(Some(
                    install_tx(&Shaper::open(&netns::path(&addrs.netns)).await?, limit).await?,
                )),
                None => Ok(None),
            }
        };
        let persisted = match set_up.await {
            Ok(tx) => {
                let mut state = self.state.lock().await;
                if let Some(allocation) = state.allocated.get_mut(&index) {
                    allocation.record.tx = tx;
                    allocation.ready = true;
                }
                self.store.save(state.records()).map(|()| tx)
            }
            Err(err) => Err(err),
        };
        match persisted {
            Ok(tx) => {
                debug!(
                    capsule = capsule_id,
                    slot = index,
                    pooled,
                    "network slot acquired"
                );
                let slot = Slot {
                    capsule_id: capsule_id.to_owned(),
                    addrs,
                };
                if let Some(tx) = tx.filter(|tx| !tx.burst_spent) {
                    self.spawn_watcher(slot.clone(), tx.limit);
                }
                Ok(slot)
            }
            Err(err) => {
                self.state.lock().await.remove(index);
                self.discard(&addrs).await;
                Err(err)
            }
        }
    }

    async fn release(&self, slot: &Slot) -> Result<()> {
        let (_guard, _) = self.lock_slot(slot).await?;
        self.stop_watcher(slot.index());
        {
            let mut state = self.state.lock().await;
            let Some(allocation) = state.remove(slot.index()) else {
                return Err(NetError::NotAllocated(slot.capsule_id.clone()));
            };
            if let Err(err) = self.store.save(state.records()) {
                state.insert(allocation.record, true);
                return Err(err);
            }
        }
        let destroyed = self.destroy_slot(&slot.addrs).await;
        debug!(capsule = %slot.capsule_id, slot = slot.index(), ok = destroyed.is_ok(), "network slot released");
        if destroyed.is_ok() {
            self.state.lock().await.free.push_back(slot.index());
            self.refill.notify_one();
        }
        destroyed
    }

    /// Re-adopts a persisted slot, rebuilding it when its namespace or link
    /// is gone and re-applying a tx limit that is missing.
    async fn adopt(&self, mut record: SlotRecord) -> Result<SlotRecord> {
        let addrs = self.plan.slot(record.index);
        let ns_path = netns::path(&addrs.netns);
        let intact = ns_path.exists() && self.host.link_index(&addrs.host_if).await?.is_some();
        if !intact {
            warn!(slot = record.index, capsule = %record.capsule_id, "slot damaged: rebuilding it");
            self.destroy_slot(&addrs).await?;
            self.create_slot(&addrs).await?;
            if record.egress {
                self.firewall.set_egress(&addrs.host_if, true).await?;
            }
        }
        if let Some(len) = record.tap_txqueuelen {
            let ns = Netlink::in_netns(&ns_path).await?;
            if !intact || ns.link_index(TAP_NAME).await?.is_none() {
                self.make_tap(&addrs, len).await?;
            }
        }
        let shaper = Shaper::open(&ns_path).await?;
        let installed = shaper.installed().await?;
        match record.tx {
            Some(tx) if !installed => record.tx = Some(install_tx(&shaper, tx.limit).await?),
            None if installed => shaper.remove().await?,
            _ => {}
        }
        Ok(record)
    }

    /// Makes slot `a` from nothing. On failure the caller removes what was
    /// made ([`Self::discard`]). The firewall elements come first, so the
    /// veth is never up without isolation.
    async fn create_slot(&self, a: &SlotAddrs) -> Result<()> {
        netns::create(&a.netns).await?;
        let ns_path = netns::path(&a.netns);
        self.firewall.add_slot(&fw_slot(a, false)).await?;
        self.host
            .add_veth_into(&a.host_if, SLOT_IF, &ns_path)
            .await?;
        let host_if = self.host.require_link(&a.host_if).await?;
        netns::write_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", a.host_if), "1")
            .map_err(|err| NetError::io(format!("disabling IPv6 on {}", a.host_if), err))?;
        self.host
            .add_address(host_if, a.host_veth, 31, true)
            .await?;
        self.host.set_up(host_if).await?;

        // Inside, everything the capsule starts leaves from the capsule
        // address, the host included: the /31 carries no subnet route, the
        // host end is routed on-link with the capsule address as source.
        let ns = Netlink::in_netns(&ns_path).await?;
        let lo = ns.require_link("lo").await?;
        ns.set_up(lo).await?;
        let slot_if = ns.require_link(SLOT_IF).await?;
        ns.add_address(slot_if, a.ns_veth, 31, false).await?;
        ns.add_address(slot_if, a.capsule, 32, false).await?;
        ns.set_up(slot_if).await?;
        ns.add_link_route(a.host_veth, slot_if, a.capsule).await?;
        ns.add_route(
            Ipv4Addr::UNSPECIFIED,
            0,
            a.host_veth,
            slot_if,
            Some(a.capsule),
        )
        .await?;

        self.host
            .add_route(a.capsule, 32, a.ns_veth, host_if, None)
            .await
    }

    /// Removes a slot's link (its routes and peer go with it), firewall
    /// elements and namespace; parts already gone are fine.
    async fn destroy_slot(&self, a: &SlotAddrs) -> Result<()> {
        let link = self.host.delete_link(&a.host_if).await;
        let elements = self.firewall.remove_slot(&fw_slot(a, false)).await;
        let ns = netns::delete(&a.netns);
        link.and(elements).and(ns)
    }

    /// Destroys a slot that never reached a capsule; its index is free again
    /// only once nothing is left of it (else the next start cleans it up).
    async fn discard(&self, a: &SlotAddrs) {
        match self.destroy_slot(a).await {
            Ok(()) => self.state.lock().await.free.push_back(a.index),
            Err(err) => warn!(slot = a.index, error = %err, "could not remove a half-made slot"),
        }
    }

    async fn make_tap(&self, a: &SlotAddrs, txqueuelen: u32) -> Result<()> {
        let ns_path = netns::path(&a.netns);
        netns::run_in(&ns_path, || {
            tap::create_persistent(TAP_NAME)?;
            netns::write_sysctl("net/ipv4/ip_forward", "1")
        })
        .await
        .map_err(|err| NetError::io(format!("creating {TAP_NAME} in {}", a.netns), err))?;
        let ns = Netlink::in_netns(&ns_path).await?;
        let tap = ns.require_link(TAP_NAME).await?;
        ns.set_txqueuelen(tap, txqueuelen).await?;
        ns.add_address(tap, TAP_ADDR, TAP_PREFIX_LEN, true).await?;
        ns.set_up(tap).await?;
        firewall::nft(
            &firewall::tap_nat_script(&self.config.table, a.capsule),
            Some(&ns_path),
        )
        .await
    }

    /// Makes pool slots until the pool is full, the free list is empty or the
    /// manager closes.
    async fn fill_pool(&self) -> Result<()> {
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return Ok(());
            }
            let index = {
                let mut state = self.state.lock().await;
                if state.pool.len() + state.creating >= self.config.pool_size {
                    return Ok(());
                }
                let Some(index) = state.free.pop_front() else {
                    return Ok(());
                };
                state.creating += 1;
                index
            };
            let addrs = self.plan.slot(index);
            let made = self.create_slot(&addrs).await;
            if made.is_err() {
                self.discard(&addrs).await;
            }
            let mut state = self.state.lock().await;
            state.creating -= 1;
            if made.is_ok() {
                state.pool.push_back(index);
            }
            drop(state);
            self.pool_changed.notify_waiters();
            made?;
        }
    }

    async fn refill_loop(self: Arc<Self>) {
        loop {
            self.refill.notified().await;
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            if let Err(err) = self.fill_pool().await {
                warn!(error = %err, "could not refill the slot pool");
            }
        }
    }

    /// Waits for exclusive use of a held slot; returns its current record.
    async fn lock_slot(&self, slot: &Slot) -> Result<(OwnedMutexGuard<()>, SlotRecord)> {
        let lock = Arc::clone(&self.state.lock().await.find(slot)?.lock);
        let guard = lock.lock_owned().await;
        // It may have been released while we waited.
        let record = self.state.lock().await.find(slot)?.record.clone();
        Ok((guard, record))
    }

    /// Stores a changed record (the caller holds the slot's lock).
    async fn commit(&self, record: SlotRecord) -> Result<()> {
        let mut state = self.state.lock().await;
        if let Some(allocation) = state.allocated.get_mut(&record.index) {
            allocation.record = record;
        }
        self.store.save(state.records())
    }

    fn slot_of(&self, record: &SlotRecord) -> Slot {
        Slot {
            capsule_id: record.capsule_id.clone(),
            addrs: self.plan.slot(record.index),
        }
    }

    /// Watches for the one-time burst of `limit` to be spent, then shrinks
    /// the slot's bucket to `limit.size`.
    fn spawn_watcher(self: &Arc<Self>, slot: Slot, limit: TxLimit) {
        let inner = Arc::clone(self);
        let index = slot.index();
        let task = tokio::spawn(async move {
            if let Err(err) = inner.finish_burst(&slot, limit).await {
                warn!(slot = slot.index(), error = %err, "one-time burst watcher stopped");
            }
        });
        if let Some(old) = lock_watchers(&self.watchers).insert(index, task.abort_handle()) {
            old.abort();
        }
    }

    fn stop_watcher(&self, index: u32) {
        if let Some(watcher) = lock_watchers(&self.watchers).remove(&index) {
            watcher.abort();
        }
    }

    async fn finish_burst(&self, slot: &Slot, limit: TxLimit) -> Result<()> {
        let shaper = Shaper::open(&slot.netns_path()).await?;
        shaper.burst_spent(limit.one_time_burst).await?;
        let (_guard, mut record) = self.lock_slot(slot).await?;
        if record.tx
            != Some(TxState {
                limit,
                burst_spent: false,
            })
        {
            return Ok(());
        }
        shaper.spend_burst(&limit).await?;
        record.tx = Some(TxState {
            limit,
            burst_spent: true,
        });
        self.commit(record).await
    }
}

/// Installs `limit` with full buckets; the burst is spent from the start
/// when there is none.
async fn install_tx(shaper: &Shaper, limit: TxLimit) -> Result<TxState> {
    shaper.install(&limit).await?;
    Ok(TxState {
        limit,
        burst_spent: limit.one_time_burst == 0,
    })
}

/// Removes every link and namespace of `plan`'s prefix whose index is not in
/// `keep`. Other prefixes' are never touched.
async fn remove_leftovers(plan: &AddressPlan, host: &Netlink, keep: &HashSet<u32>) -> Result<()> {
    let stale = |index: Option<u32>| index.is_some_and(|i| !keep.contains(&i));
    for name in host.link_names().await? {
        if stale(plan.link_index(&name)) {
            info!(link = %name, "removing stale slot link");
            host.delete_link(&name).await?;
        }
    }
    for name in netns::list()? {
        if stale(plan.netns_index(&name)) {
            info!(netns = %name, "removing stale slot namespace");
            netns::delete(&name)?;
        }
    }
    Ok(())
}

fn fw_slot(a: &SlotAddrs, egress: bool) -> FwSlot<'_> {
    FwSlot {
        host_if: &a.host_if,
        capsule: a.capsule,
        egress,
    }
}

fn validate_capsule_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > CAPSULE_ID_MAX {
        "longer than 128 bytes"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        "only ASCII letters, digits, '-', '_' and '.' are allowed"
    } else {
        return Ok(());
    };
    Err(NetError::InvalidCapsuleId {
        id: id.to_owned(),
        reason,
    })
}

fn lock_watchers(
    watchers: &StdMutex<HashMap<u32, AbortHandle>>,
) -> std::sync::MutexGuard<'_, HashMap<u32, AbortHandle>> {
    // A panic while holding this map cannot leave it inconsistent (single
    // insert/remove calls), so a poisoned lock is still usable.
    watchers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
