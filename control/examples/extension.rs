//! An extension of the control plane, as an application that embeds
//! `warren-control` writes one ([`install`]): a hook that records every
//! capsule event, a background worker that keeps that record bounded, and
//! a route, `GET /v1/example/events`, that shows the caller's team the
//! events of its capsules (authenticated like the rest of the API, and
//! listed in `/openapi.json`).
//!
//! Run it like `warren-control` (same flags and environment):
//! `cargo run -p warren-control --example extension -- --database-url ...`.
//! `control/tests/api/extension.rs` runs it against a real Postgres.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Extension, Json};
use clap::Parser;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_control::app::AppState;
use warren_control::auth::Principal;
use warren_control::config::ControlConfig;
use warren_control::extension::CapsuleEvent;
use warren_control::{Server, ServerBuilder};

/// Events kept (the worker trims the rest).
const KEEP: usize = 1000;

/// One recorded event, as the route shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Seen {
    #[serde(skip)]
    pub team_id: String,
    pub capsule_id: String,
    /// `created`, `state_changed` or `destroyed`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub status: String,
}

impl From<&CapsuleEvent> for Seen {
    fn from(ev: &CapsuleEvent) -> Self {
        let (event, from) = match ev {
            CapsuleEvent::Created(_) => ("created", None),
            CapsuleEvent::StateChanged { from, .. } => ("state_changed", Some(from.to_string())),
            CapsuleEvent::Destroyed(_) => ("destroyed", None),
        };
        let c = ev.capsule();
        Self {
            team_id: c.team_id.clone(),
            capsule_id: c.capsule.id.clone(),
            event,
            from,
            status: c.capsule.status.to_string(),
        }
    }
}

type Record = Arc<Mutex<VecDeque<Seen>>>;

fn lock(r: &Record) -> std::sync::MutexGuard<'_, VecDeque<Seen>> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// The capsule events of the caller's team this replica saw, oldest first.
#[utoipa::path(get, path = "/v1/example/events", tag = "example",
    responses((status = 200, body = [Seen])))]
async fn events(p: Principal, Extension(record): Extension<Record>) -> Json<Vec<Seen>> {
    let mine = lock(&record)
        .iter()
        .filter(|s| s.team_id == p.team_id)
        .cloned()
        .collect();
    Json(mine)
}

/// Adds the example's hook, worker and route to a control plane.
pub fn install(builder: ServerBuilder) -> ServerBuilder {
    let record: Record = Arc::default();
    let (hooked, trimmed) = (record.clone(), record.clone());
    let route = OpenApiRouter::new()
        .routes(routes!(events))
        .layer(Extension(record));
    builder
        .on_capsule_event(move |_app: AppState, ev: CapsuleEvent| {
            let record = hooked.clone();
            async move { lock(&record).push_back(Seen::from(&ev)) }
        })
        .worker("example-trim", move |_app| async move {
            loop {
                {
                    let mut r = lock(&trimmed);
                    let excess = r.len().saturating_sub(KEEP);
                    r.drain(..excess);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
        .documented_routes(route)
}

/// The example as a program: `warren-control` plus the extension.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    config: ControlConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    warren_logging::init(false, None);
    let cli = Cli::parse();
    install(Server::builder(cli.config))
        .build()
        .await?
        .run()
        .await
}
