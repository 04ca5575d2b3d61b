//! The connections envd has accepted, so snapshot readiness can act on them.
//!
//! `POST /snapshot/prepare` (sent by the agent just before a microVM is
//! snapshotted) closes idle connections, lets busy ones finish their request
//! and close, and turns keep-alive off. The first `POST /init` after that
//! (sent by the agent once the snapshot is restored, before any user traffic
//! is let in) force-closes every other connection: they were all accepted
//! before the snapshot and their peers are gone. Keep-alive comes back on.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::sync::watch;

/// What a connection's task is told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Serve,
    /// Finish the request in flight (if any), then close.
    Drain,
    /// Close now.
    Close,
}

#[derive(Debug)]
pub struct Connections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, watch::Sender<Order>>>,
    keep_alive: AtomicBool,
    /// Set by prepare, cleared by the next `/init`.
    prepared: AtomicBool,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(0),
            open: Mutex::default(),
            keep_alive: AtomicBool::new(true),
            prepared: AtomicBool::new(false),
        }
    }
}

/// Which connection a request arrived on (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct ConnId(pub u64);

/// A registered connection; unregisters itself when dropped.
#[derive(Debug)]
pub struct Registration<'a> {
    conns: &'a Connections,
    pub id: u64,
    pub orders: watch::Receiver<Order>,
    pub keep_alive: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.conns.open().remove(&self.id);
    }
}

impl Connections {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<Order>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = watch::channel(Order::Serve);
        self.open().insert(id, tx);
        Registration {
            conns: self,
            id,
            orders: rx,
            keep_alive: self.keep_alive.load(Ordering::SeqCst),
        }
    }

    pub fn count(&self) -> usize {
        self.open().len()
    }

    /// Prepares for a snapshot; returns how many connections were told to drain.
    pub fn prepare_snapshot(&self) -> usize {
        self.keep_alive.store(false, Ordering::SeqCst);
        self.prepared.store(true, Ordering::SeqCst);
        self.order_all(Order::Drain, |_| true)
    }

    /// Called on `/init` (arriving on connection `current`): after a
    /// restore, closes every other connection. Returns how many were closed.
    pub fn after_restore(&self, current: Option<u64>) -> usize {
        self.keep_alive.store(true, Ordering::SeqCst);
        if !self.prepared.swap(false, Ordering::SeqCst) {
            return 0;
        }
        self.order_all(Order::Close, |id| Some(id) != current)
    }

    /// Orders every connection to drain, as on shutdown.
    pub fn drain_all(&self) -> usize {
        self.order_all(Order::Drain, |_| true)
    }

    fn order_all(&self, order: Order, which: impl Fn(u64) -> bool) -> usize {
        self.open()
            .iter()
            .filter(|(id, _)| which(**id))
            .map(|(_, tx)| tx.send(order))
            .filter(Result::is_ok)
            .count()
    }
}
