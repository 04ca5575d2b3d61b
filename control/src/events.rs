//! Lifecycle events: written with `pg_notify` inside the transaction that
//! changes the state (so they are sent only if it commits), received by
//! every replica through `LISTEN`, and fanned out to that replica's SSE
//! subscribers. Nothing here outlives a restart, and nothing needs to:
//! the database is the record, events are the live feed.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::build::notify::{self as build_notify, BuildHub};

pub const CHANNEL: &str = "warren_events";
/// `pg_notify` refuses payloads from 8000 bytes on.
const MAX_PAYLOAD: usize = 7900;

/// One event as it travels between replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    /// Team the event belongs to; `None` for platform events (hosts).
    pub team_id: Option<String>,
    /// Event kind: `capsule.create`, `capsule.state.changed`, `host.down`...
    pub event: String,
    /// The SSE frame's JSON (Wrenn's `SSEEvent`).
    pub data: Value,
}

/// Builds the SSE frame body.
pub fn frame(
    event: &str,
    outcome: Option<&str>,
    resource: (&str, &str),
    metadata: Value,
    capsule: Option<Value>,
) -> Value {
    let mut v = serde_json::json!({
        "event": event,
        "resource": { "id": resource.1, "type": resource.0 },
        "metadata": metadata,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let Some(o) = outcome {
        v["outcome"] = Value::String(o.into());
    }
    if let Some(c) = capsule {
        v["sandbox"] = c;
    }
    v
}

/// Queues `n` for delivery when the surrounding transaction commits (or at
/// once, outside one).
pub async fn publish<'e, E>(exec: E, n: &Notification) -> sqlx::Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    let mut payload = serde_json::to_string(n).unwrap_or_default();
    if payload.len() > MAX_PAYLOAD {
        let mut slim = n.clone();
        if let Some(obj) = slim.data.as_object_mut() {
            obj.remove("sandbox");
        }
        payload = serde_json::to_string(&slim).unwrap_or_default();
    }
    crate::db::notify(exec, CHANNEL, &payload).await
}

/// This replica's fan-out of received events.
#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Notification>>,
    /// Build wake-ups, received on the same connection.
    pub builds: BuildHub,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self {
            tx,
            builds: BuildHub::new(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notification>> {
        self.tx.subscribe()
    }

    /// Listens on Postgres until the process ends, reconnecting on errors.
    pub async fn run(self, pool: PgPool) {
        loop {
            if let Err(err) = self.listen(&pool).await {
                tracing::warn!(error = %err, "event listener failed; reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn listen(&self, pool: &PgPool) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener
            .listen_all([CHANNEL, build_notify::CHANNEL])
            .await?;
        loop {
            let n = listener.recv().await?;
            if n.channel() == build_notify::CHANNEL {
                self.builds.deliver(n.payload());
                continue;
            }
            match serde_json::from_str::<Notification>(n.payload()) {
                Ok(ev) => {
                    // No subscribers is fine.
                    let _ = self.tx.send(Arc::new(ev));
                }
                Err(err) => tracing::warn!(error = %err, "undecodable event"),
            }
        }
    }
}
