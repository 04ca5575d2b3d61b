//! Hooks on capsule events, the part of an extension (see
//! [`crate::server::ServerBuilder`]) that watches capsules.
//!
//! A hook runs on the replica that made the change, after the change
//! committed: [`CapsuleEvent::Created`] when a capsule was placed (its row
//! written, `starting`), [`CapsuleEvent::StateChanged`] on every status
//! transition, and [`CapsuleEvent::Destroyed`] when a capsule ended
//! (`stopped`, also after a `StateChanged`). Each hook gets its events in
//! order on its own task, off the request path; a hook that falls more
//! than [`QUEUE`] events behind loses the newest (logged), so a slow hook
//! never slows the control plane down. A replica that dies between a
//! commit and its hooks loses those events: hooks are a live feed, the
//! database stays the record.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use warren_api_types::capsules::CapsuleView;
use warren_api_types::status::CapsuleStatus;

use crate::app::AppState;
use crate::db::capsules::{CapsuleRow, Transitioned};

/// Events a hook may have waiting before newer ones are dropped.
pub const QUEUE: usize = 1024;

/// Something that happened to a capsule.
#[derive(Debug, Clone)]
pub enum CapsuleEvent {
    Created(CapsuleInfo),
    StateChanged {
        capsule: CapsuleInfo,
        from: CapsuleStatus,
        to: CapsuleStatus,
    },
    Destroyed(CapsuleInfo),
}

/// The capsule an event is about, as it is after the event.
#[derive(Debug, Clone)]
pub struct CapsuleInfo {
    pub team_id: String,
    pub host_id: Option<String>,
    pub capsule: CapsuleView,
}

impl CapsuleEvent {
    pub fn capsule(&self) -> &CapsuleInfo {
        match self {
            Self::Created(c) | Self::Destroyed(c) | Self::StateChanged { capsule: c, .. } => c,
        }
    }
}

impl From<&CapsuleRow> for CapsuleInfo {
    fn from(row: &CapsuleRow) -> Self {
        Self {
            team_id: row.team_id.clone(),
            host_id: row.host_id.clone(),
            capsule: row.view(),
        }
    }
}

/// A hook: called with the replica's state and one event.
pub type Hook = Arc<dyn Fn(AppState, CapsuleEvent) -> BoxFuture<'static, ()> + Send + Sync>;

type Pending = Vec<(Hook, mpsc::Receiver<CapsuleEvent>)>;

/// The registered hooks: a queue per hook, drained by a task per hook
/// once the server runs ([`Hooks::start`]).
#[derive(Default)]
pub struct Hooks {
    queues: Vec<mpsc::Sender<CapsuleEvent>>,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("hooks", &self.queues.len())
            .finish()
    }
}

impl Hooks {
    pub fn new(hooks: Vec<Hook>) -> Self {
        let mut queues = Vec::with_capacity(hooks.len());
        let mut pending = Vec::with_capacity(hooks.len());
        for hook in hooks {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.push(tx);
            pending.push((hook, rx));
        }
        Self {
            queues,
            pending: Mutex::new(pending),
        }
    }

    /// Starts one task per hook (once; later calls start nothing).
    pub fn start(&self, app: &AppState) -> Vec<JoinHandle<()>> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        pending
            .into_iter()
            .map(|(hook, mut rx)| {
                let app = app.clone();
                tokio::spawn(async move {
                    while let Some(ev) = rx.recv().await {
                        hook(app.clone(), ev).await;
                    }
                })
            })
            .collect()
    }

    fn fire(&self, ev: impl FnOnce() -> CapsuleEvent) {
        if self.queues.is_empty() {
            return;
        }
        let ev = ev();
        for q in &self.queues {
            if q.try_send(ev.clone()).is_err() {
                tracing::warn!(capsule = %ev.capsule().capsule.id, "a capsule hook is behind; event dropped");
            }
        }
    }

    pub fn created(&self, row: &CapsuleRow) {
        self.fire(|| CapsuleEvent::Created(row.into()));
    }

    /// A committed transition (and, into `stopped`, the capsule's end).
    pub fn transitioned(&self, t: &Transitioned) {
        self.fire(|| CapsuleEvent::StateChanged {
            capsule: (&t.row).into(),
            from: t.from,
            to: t.row.status,
        });
        if t.row.status == CapsuleStatus::Stopped {
            self.destroyed(&t.row);
        }
    }

    pub fn destroyed(&self, row: &CapsuleRow) {
        self.fire(|| CapsuleEvent::Destroyed(row.into()));
    }
}
