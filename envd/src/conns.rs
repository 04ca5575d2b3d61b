//! The connections envd has accepted, so snapshot readiness can act on them.
//!
//! `POST /snapshot/prepare` (sent by the agent just before a microVM is
//! snapshotted) closes idle connections, lets busy ones finish their request
//! and close, and turns keep-alive off. The first `POST /init` after that
//! (sent once the snapshot is restored) force-closes every connection
//! accepted before the prepare (their peers are gone: the TCP state is from
//! another life) and turns keep-alive back on.

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
    /// Set by prepare: connections with a lower id predate the snapshot.
    snapshot_watermark: Mutex<Option<u64>>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(0),
            open: Mutex::default(),
            keep_alive: AtomicBool::new(true),
            snapshot_watermark: Mutex::default(),
        }
    }
}

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
        *self
            .snapshot_watermark
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(self.next_id.load(Ordering::SeqCst));
        self.order_all(Order::Drain, u64::MAX)
    }

    /// Called on `/init`: after a restore, closes what predates the
    /// snapshot. Returns how many connections were closed.
    pub fn after_restore(&self) -> usize {
        let watermark = self
            .snapshot_watermark
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.keep_alive.store(true, Ordering::SeqCst);
        match watermark {
            Some(w) => self.order_all(Order::Close, w),
            None => 0,
        }
    }

    /// Orders every connection (with an id below `below`) to drain, as on shutdown.
    pub fn drain_all(&self) -> usize {
        self.order_all(Order::Drain, u64::MAX)
    }

    fn order_all(&self, order: Order, below: u64) -> usize {
        self.open()
            .iter()
            .filter(|(id, _)| **id < below)
            .map(|(_, tx)| tx.send(order))
            .filter(Result::is_ok)
            .count()
    }
}
