//! Per-capsule connection tracking.
//!
//! [`CapsuleStats`] holds a capsule's counters as atomics, shared by all cores
//! and readable by the sandbox manager at any time (the idle reaper reads
//! `last_activity`). Each core also keeps a registry of its own client
//! connections ([`CoreConns`]) so that a drain or evict, delivered to the core
//! as a command, can close exactly that capsule's connections by shutting
//! their sockets down.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ratelimit::RateLimiter;
use warren_runtime::shutdown_both;

/// A capsule's live counters.
#[derive(Debug, Default)]
pub struct CapsuleStats {
    open_connections: AtomicU64,
    requests: AtomicU64,
    bytes_to_capsule: AtomicU64,
    bytes_from_capsule: AtomicU64,
    last_activity_ms: AtomicU64,
    draining: AtomicBool,
    pub(crate) limiter: RateLimiter,
}

/// A copy of a capsule's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Client connections whose latest request went to this capsule.
    pub open_connections: u64,
    /// Requests relayed (or answered) for this capsule.
    pub requests: u64,
    /// Bytes relayed from clients into the capsule (heads and bodies).
    pub bytes_to_capsule: u64,
    /// Bytes relayed from the capsule to clients.
    pub bytes_from_capsule: u64,
    /// Last time a byte moved or a request was routed here.
    pub last_activity: SystemTime,
    /// True between `drain` and `reopen`/`evict`.
    pub draining: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl CapsuleStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            open_connections: self.open_connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            bytes_to_capsule: self.bytes_to_capsule.load(Ordering::Relaxed),
            bytes_from_capsule: self.bytes_from_capsule.load(Ordering::Relaxed),
            last_activity: UNIX_EPOCH
                + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed)),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }

    /// True while new traffic is refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }

    pub(crate) fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    pub(crate) fn count_bytes(&self, to_capsule: bool, bytes: u64) {
        let counter = if to_capsule {
            &self.bytes_to_capsule
        } else {
            &self.bytes_from_capsule
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
        self.touch();
    }
}

/// All capsules' counters, shared by the cores and the manager. Cores cache
/// what they look up, so this lock is taken once per capsule per core.
#[derive(Debug, Default)]
pub struct Tracker {
    capsules: Mutex<HashMap<String, Arc<CapsuleStats>>>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CapsuleStats>>> {
        match self.capsules.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The counters of `id`, created on first use.
    pub fn get_or_create(&self, id: &str) -> Arc<CapsuleStats> {
        Arc::clone(self.lock().entry(id.to_owned()).or_default())
    }

    /// The counters of `id`, if it ever had traffic.
    pub fn get(&self, id: &str) -> Option<Arc<CapsuleStats>> {
        self.lock().get(id).cloned()
    }

    /// Forgets `id`.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Every capsule's counters.
    pub fn all(&self) -> Vec<(String, Arc<CapsuleStats>)> {
        self.lock()
            .iter()
            .map(|(id, s)| (id.clone(), Arc::clone(s)))
            .collect()
    }
}

struct ConnEntry {
    capsule: Option<(Rc<str>, Arc<CapsuleStats>)>,
    client: Rc<OwnedFd>,
    upstream: Option<Rc<OwnedFd>>,
    /// Inside an exchange (reading a head, relaying).
    busy: bool,
    /// Has finished at least one exchange.
    served: bool,
    /// When the connection last became idle (or was accepted).
    since: Instant,
}

impl ConnEntry {
    fn close(&self) {
        shutdown_both(&self.client);
        if let Some(upstream) = &self.upstream {
            shutdown_both(upstream);
        }
    }
}

/// One core's client connections and its cache of capsule counters.
#[derive(Default)]
pub struct CoreConns {
    entries: RefCell<HashMap<u64, ConnEntry>>,
    next: Cell<u64>,
    cache: RefCell<HashMap<Rc<str>, Arc<CapsuleStats>>>,
}

impl CoreConns {
    /// Registers a client connection; the handle unregisters it on drop.
    pub fn register(self: &Rc<Self>, client: Rc<OwnedFd>) -> ConnHandle {
        let key = self.next.get();
        self.next.set(key + 1);
        let entry = ConnEntry {
            capsule: None,
            client,
            upstream: None,
            busy: false,
            served: false,
            since: Instant::now(),
        };
        self.entries.borrow_mut().insert(key, entry);
        ConnHandle {
            conns: Rc::clone(self),
            key,
        }
    }

    /// The counters of `id` (from this core's cache, else the shared tracker).
    pub fn stats(&self, tracker: &Tracker, id: &str) -> (Rc<str>, Arc<CapsuleStats>) {
        if let Some((key, stats)) = self.cache.borrow().get_key_value(id) {
            return (Rc::clone(key), Arc::clone(stats));
        }
        let stats = tracker.get_or_create(id);
        let key: Rc<str> = Rc::from(id);
        self.cache
            .borrow_mut()
            .insert(Rc::clone(&key), Arc::clone(&stats));
        (key, stats)
    }

    /// Forgets the cached counters of `id` (after an evict).
    pub fn forget(&self, id: &str) {
        self.cache.borrow_mut().remove(id);
    }

    /// True when this core has no client connection left.
    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    /// How many of this core's connections belong to `id`.
    pub fn count(&self, id: &str) -> usize {
        self.entries
            .borrow()
            .values()
            .filter(|e| e.capsule.as_ref().is_some_and(|(c, _)| &**c == id))
            .count()
    }

    /// Shuts down `id`'s connections: all of them, or only those between
    /// requests (`idle_only`). Returns how many.
    pub fn close(&self, id: &str, idle_only: bool) -> usize {
        let entries = self.entries.borrow();
        let mut closed = 0;
        for entry in entries.values() {
            if entry.capsule.as_ref().is_some_and(|(c, _)| &**c == id) && !(idle_only && entry.busy)
            {
                entry.close();
                closed += 1;
            }
        }
        closed
    }

    /// Shuts down connections idle for too long: `header_timeout` before a
    /// first request, `idle_timeout` between requests. One sweep per core
    /// replaces a timer per connection.
    pub fn sweep(&self, now: Instant, header_timeout: Duration, idle_timeout: Duration) {
        for entry in self.entries.borrow().values() {
            let limit = if entry.served {
                idle_timeout
            } else {
                header_timeout
            };
            if !entry.busy && now.saturating_duration_since(entry.since) >= limit {
                entry.close();
            }
        }
    }

    /// Shuts down every connection (process shutdown).
    pub fn close_all(&self) {
        self.entries.borrow().values().for_each(ConnEntry::close);
    }
}

/// A registered client connection; dropping it unregisters it.
pub struct ConnHandle {
    conns: Rc<CoreConns>,
    key: u64,
}

impl ConnHandle {
    fn with<T>(&self, f: impl FnOnce(&mut ConnEntry) -> T) -> Option<T> {
        self.conns.entries.borrow_mut().get_mut(&self.key).map(f)
    }

    /// Binds the connection to capsule `id` (its latest request went there).
    pub fn attach(&self, id: &Rc<str>, stats: &Arc<CapsuleStats>) {
        self.with(|entry| {
            if entry
                .capsule
                .as_ref()
                .is_some_and(|(c, _)| Rc::ptr_eq(c, id) || c == id)
            {
                return;
            }
            if let Some((_, old)) = entry.capsule.take() {
                old.open_connections.fetch_sub(1, Ordering::Relaxed);
            }
            stats.open_connections.fetch_add(1, Ordering::Relaxed);
            entry.capsule = Some((Rc::clone(id), Arc::clone(stats)));
        });
    }

    /// Marks an exchange in flight (a drain waits for it) or finished
    /// (the connection is idle from now on).
    pub fn set_busy(&self, busy: bool) {
        self.with(|entry| {
            entry.busy = busy;
            if !busy {
                entry.served = true;
                entry.since = Instant::now();
            }
        });
    }

    /// The upstream socket in use, so a force-close reaches it too.
    pub fn set_upstream(&self, upstream: Option<Rc<OwnedFd>>) {
        self.with(|entry| entry.upstream = upstream);
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        if let Some(entry) = self.conns.entries.borrow_mut().remove(&self.key)
            && let Some((_, stats)) = entry.capsule
        {
            stats.open_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
