//! Build wake-ups between replicas: `pg_notify` on channel
//! `warren_builds`, sent inside the transaction that made the change, and
//! fanned out on every replica (the listener is
//! [`crate::events::EventHub`]'s) to its workers (a build was queued), its
//! runners (a cancel was asked for) and its log streams (new log rows or
//! step states). Payloads carry only the kind and the build id; readers
//! fetch what changed from the tables, so a missed wake-up costs at most
//! a poll interval, never data.

use std::time::Duration;

use tokio::sync::broadcast;

pub const CHANNEL: &str = "warren_builds";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A build was queued: workers look for work.
    Queued,
    /// A cancel was asked for.
    Cancel,
    /// New log rows.
    Log,
    /// A step's or the build's state changed.
    Status,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Cancel => "cancel",
            Self::Log => "log",
            Self::Status => "status",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Cancel, Self::Log, Self::Status]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One wake-up: what happened to which build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    pub kind: Kind,
    pub build_id: String,
}

/// Queues a wake-up for when the surrounding transaction commits.
pub async fn publish<'e, E>(exec: E, build_id: &str, kind: Kind) -> sqlx::Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    crate::db::notify(exec, CHANNEL, &format!("{}:{build_id}", kind.as_str())).await
}

/// This replica's fan-out of build wake-ups.
#[derive(Debug, Clone)]
pub struct BuildHub {
    tx: broadcast::Sender<Wake>,
}

impl Default for BuildHub {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.tx.subscribe()
    }

    /// Hands a payload received on [`CHANNEL`] to this replica's
    /// subscribers (called by [`crate::events::EventHub`]'s listener).
    pub fn deliver(&self, payload: &str) {
        let wake = payload.split_once(':').and_then(|(k, id)| {
            Some(Wake {
                kind: Kind::parse(k)?,
                build_id: id.to_string(),
            })
        });
        match wake {
            // No subscribers is fine.
            Some(w) => drop(self.tx.send(w)),
            None => tracing::warn!(payload, "undecodable build wake-up"),
        }
    }
}

/// Waits until a wake-up for `build_id` (of one of `kinds`) arrives, or
/// `timeout` passes (the caller then polls the tables anyway).
pub async fn wait_for(
    rx: &mut broadcast::Receiver<Wake>,
    build_id: &str,
    kinds: &[Kind],
    timeout: Duration,
) {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(w) if w.build_id == build_id && kinds.contains(&w.kind) => return,
                Ok(_) => {}
                // Missed some: the caller re-reads the tables.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(timeout, wait).await;
}
