//! The reconciler, run by every replica, coordinated only through row
//! locks (`FOR UPDATE SKIP LOCKED`):
//!
//! - [`finish_expired`]: lifecycle operations whose lease ran out (the
//!   replica doing them died, or the agent never answered) are taken over
//!   and finished, judged against what the agent reports.
//! - [`sync_hosts`]: every online host is pulled on a period (and at once
//!   when it comes back from `unreachable`): its capacity, templates and
//!   proxy address (GetHostInfo), its capsules (ListCapsules: missing ones
//!   restored, auto-paused ones marked, lost ones closed, orphans
//!   destroyed) and its metrics (GetMetrics).

use std::collections::HashMap;
use std::time::Duration;

use warren_api_types::status::CapsuleStatus::{self, *};
use warren_proto::agent::v1 as pb;

use crate::agent_client::AgentClient;
use crate::app::AppState;
use crate::db::capsules::{self, CapsuleRow, Change};
use crate::db::{hosts, templates, usage};
use crate::lifecycle;

/// Attempts at a create before the capsule is declared failed.
const MAX_CREATE_ATTEMPTS: i32 = 3;

fn agent_status(state: i32) -> Option<CapsuleStatus> {
    match pb::CapsuleState::try_from(state).ok()? {
        pb::CapsuleState::Running => Some(Running),
        pb::CapsuleState::Paused => Some(Paused),
        pb::CapsuleState::Stopped => Some(Stopped),
        pb::CapsuleState::Error => Some(Error),
        _ => None,
    }
}

/// Finishes operations left half-done; returns how many it looked at.
pub async fn finish_expired(app: &AppState) -> anyhow::Result<usize> {
    let lease = app.cfg.agent_timeout() + Duration::from_secs(5);
    let rows = capsules::claim_expired(&app.db, 20, lease).await?;
    let n = rows.len();
    for row in rows {
        let id = row.id.clone();
        if let Err(e) = finish_one(app, row).await {
            tracing::warn!(capsule = %id, error = %e, "reconciling capsule failed");
        }
    }
    Ok(n)
}

async fn finish_one(app: &AppState, row: CapsuleRow) -> anyhow::Result<()> {
    let host = lifecycle::host(app, row.host()?).await?;
    let agent = app.agent(&host)?;
    if row.status == Stopping {
        lifecycle::drive_destroy(app, row).await?;
        return Ok(());
    }
    let listed = agent.list_capsules().await?;
    let on_agent = listed
        .capsules
        .iter()
        .find(|c| c.capsule_id == row.id)
        .and_then(|c| agent_status(c.state));
    let status = row.status;
    tracing::info!(capsule = %row.id, status = %row.status, agent = ?on_agent, "taking over expired operation");
    let settle = |to: CapsuleStatus, error: Option<String>| {
        let id = row.id.clone();
        async move {
            let change = Change {
                error,
                ..Change::default()
            };
            lifecycle::transition(app, &id, &[status], to, change).await
        }
    };
    match (status, on_agent) {
        (Starting, None) if row.attempts <= MAX_CREATE_ATTEMPTS => {
            if let Err((_, e)) = lifecycle::drive_create(app, row, None).await {
                tracing::warn!(error = %e, "create retry failed");
            }
        }
        (Starting, None) => {
            settle(Error, Some("the host never created the capsule".into())).await?;
        }
        (Starting | Resuming | Pausing | Snapshotting, Some(to @ (Running | Paused)))
            if status.can_become(to) =>
        {
            settle(to, None).await?;
        }
        (Resuming, Some(Paused)) => {
            lifecycle::drive_resume(app, row).await?;
        }
        (Pausing | Snapshotting, Some(Running)) => {
            settle(Running, None).await?;
        }
        (_, Some(Error)) => {
            settle(Error, Some("the host reports the capsule failed".into())).await?;
        }
        (_, None | Some(Stopped)) => {
            settle(Error, Some("the host no longer has the capsule".into())).await?;
        }
        _ => {}
    }
    Ok(())
}

pub async fn sync_hosts(app: &AppState) -> anyhow::Result<usize> {
    let due = hosts::claim_due(&app.db, app.cfg.sync_interval()).await?;
    let n = due.len();
    for host in due {
        if let Err(e) = sync_host(app, &host).await {
            tracing::warn!(host = %host.id, error = %e, "host sync failed");
        }
    }
    Ok(n)
}

/// Pulls one host's state; public so tests and `warren up` can force it.
pub async fn sync_host(app: &AppState, host: &hosts::HostConn) -> anyhow::Result<()> {
    let agent = app.agent(host)?;
    let info = agent.host_info().await?;
    let facts = hosts::Info {
        cpu_cores: info.vcpus as i32,
        memory_mb: info.memory_mb as i64,
        disk_gb: (info.disk_mb / 1024) as i32,
        backend: &info.backend,
        agent_version: &info.agent_version,
        proxy_address: &info.proxy_address,
    };
    hosts::update_info(&app.db, &host.id, &facts).await?;
    let held: Vec<(String, i64)> = info
        .templates
        .iter()
        .map(|t| (t.name.clone(), t.size_bytes as i64))
        .collect();
    hosts::replace_templates(&app.db, &host.id, &held).await?;
    for (name, size) in &held {
        templates::register_reported(&app.db, name, *size).await?;
    }
    reconcile_capsules(app, host, &agent).await?;
    record_metrics(app, &agent).await?;
    Ok(())
}

async fn reconcile_capsules(
    app: &AppState,
    host: &hosts::HostConn,
    agent: &AgentClient,
) -> anyhow::Result<()> {
    let listed = agent.list_capsules().await?;
    let mut on_agent: HashMap<&str, CapsuleStatus> = listed
        .capsules
        .iter()
        .filter_map(|c| agent_status(c.state).map(|s| (c.capsule_id.as_str(), s)))
        .collect();
    for id in &listed.auto_paused_ids {
        on_agent.entry(id.as_str()).or_insert(Paused);
    }
    for row in &capsules::settled_on_host(&app.db, &host.id).await? {
        let now = row.status;
        let target = match on_agent.remove(row.id.as_str()) {
            Some(s) => s,
            None if listed.auto_destroyed_ids.contains(&row.id) => Stopped,
            None => Error,
        };
        if target == now {
            continue;
        }
        let (to, error) = match target {
            Error => (
                Error,
                Some("the host no longer has the capsule".to_string()),
            ),
            Stopped if now != Missing => (Stopping, None),
            other => (other, None),
        };
        if !now.can_become(to) {
            continue;
        }
        let change = Change {
            error,
            ..Change::default()
        };
        let moved = lifecycle::transition(app, &row.id, &[now], to, change).await?;
        if let (Stopping, Some(r)) = (to, moved) {
            lifecycle::transition(app, &r.id, &[Stopping], Stopped, Change::default()).await?;
        }
        tracing::info!(capsule = %row.id, from = %now, to = %to, "reconciled with host");
    }
    // Whatever the agent still lists and we do not track is an orphan
    // (destroyed here while the host was away): destroy it there.
    for (id, _) in on_agent {
        let known = capsules::get_any(&app.db, id).await?;
        let orphan = match &known {
            None => true,
            Some(r) => r.status.is_terminal() && r.host_id.as_deref() == Some(host.id.as_str()),
        };
        if orphan {
            tracing::info!(capsule = %id, host = %host.id, "destroying orphan capsule");
            if let Err(e) = agent.destroy_capsule(id).await {
                tracing::warn!(capsule = %id, error = %e, "destroying orphan failed");
            }
        }
    }
    Ok(())
}

async fn record_metrics(app: &AppState, agent: &AgentClient) -> anyhow::Result<()> {
    for m in agent.metrics("").await? {
        let sample = usage::NewSample {
            capsule_id: &m.capsule_id,
            at: chrono::DateTime::from_timestamp_millis(m.sampled_at_unix_ms)
                .unwrap_or_else(chrono::Utc::now),
            cpu_pct: m.cpu_percent,
            mem_bytes: m.memory_bytes as i64,
            disk_bytes: m.disk_bytes as i64,
        };
        usage::record(&app.db, &sample).await?;
    }
    usage::prune(&app.db).await?;
    Ok(())
}

pub async fn run(app: AppState) {
    loop {
        if let Err(e) = finish_expired(&app).await {
            tracing::warn!(error = %e, "reconciler pass failed");
        }
        if let Err(e) = sync_hosts(&app).await {
            tracing::warn!(error = %e, "host sync pass failed");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
