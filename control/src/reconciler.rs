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

use warren_proto::agent::v1 as pb;

use crate::agent_client::AgentClient;
use crate::app::AppState;
use crate::db::capsules::{self, CapsuleRow, Change};
use crate::db::{hosts, templates};
use crate::lifecycle;
use crate::status::CapsuleStatus::{self, *};

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

/// Claims up to `limit` capsules whose lease expired.
async fn claim_expired(app: &AppState, limit: i64) -> sqlx::Result<Vec<CapsuleRow>> {
    let lease_ms = (app.cfg.agent_timeout() + Duration::from_secs(5)).as_millis() as i64;
    let transitional: Vec<&str> = CapsuleStatus::ALL
        .into_iter()
        .filter(|s| s.is_transitional())
        .map(|s| s.as_str())
        .collect();
    sqlx::query_as::<_, CapsuleRow>(
        "UPDATE capsules SET lease_until = now() + $3::BIGINT * interval '1 millisecond',
                attempts = attempts + 1
          WHERE id IN (SELECT c.id FROM capsules c JOIN hosts h ON h.id = c.host_id
                        WHERE c.lease_until < now() AND c.status = ANY($1) AND h.status = 'online'
                        ORDER BY c.lease_until LIMIT $2 FOR UPDATE OF c SKIP LOCKED)
          RETURNING *",
    )
    .bind(&transitional)
    .bind(limit)
    .bind(lease_ms)
    .fetch_all(&app.db)
    .await
}

/// Finishes operations left half-done; returns how many it looked at.
pub async fn finish_expired(app: &AppState) -> anyhow::Result<usize> {
    let rows = claim_expired(app, 20).await?;
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
    let host = hosts::conn(&app.db, row.host()?).await?;
    let agent = app.agent(&host)?;
    if row.status() == Stopping {
        lifecycle::drive_destroy(app, row).await?;
        return Ok(());
    }
    let listed = agent.list_capsules().await?;
    let on_agent = listed
        .capsules
        .iter()
        .find(|c| c.capsule_id == row.id)
        .and_then(|c| agent_status(c.state));
    let status = row.status();
    tracing::info!(capsule = %row.id, status = %row.status, agent = ?on_agent, "taking over expired operation");
    let settle = |to: CapsuleStatus, error: Option<String>| {
        let db = app.db.clone();
        let id = row.id.clone();
        async move {
            capsules::transition_now(
                &db,
                &id,
                &[status],
                to,
                Change {
                    error,
                    ..Change::default()
                },
            )
            .await
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

/// Claims hosts due for a sync.
async fn claim_hosts(app: &AppState) -> sqlx::Result<Vec<hosts::HostConn>> {
    let every_ms = app.cfg.sync_interval().as_millis() as i64;
    sqlx::query_as::<_, hosts::HostConn>(
        "UPDATE hosts SET next_sync_at = now() + $1::BIGINT * interval '1 millisecond'
          WHERE id IN (SELECT id FROM hosts WHERE status = 'online' AND deleted_at IS NULL
                         AND next_sync_at <= now() ORDER BY next_sync_at LIMIT 5 FOR UPDATE SKIP LOCKED)
          RETURNING id, status, address, agent_token, proxy_address",
    )
    .bind(every_ms)
    .fetch_all(&app.db)
    .await
}

pub async fn sync_hosts(app: &AppState) -> anyhow::Result<usize> {
    let due = claim_hosts(app).await?;
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
    sqlx::query(
        "UPDATE hosts SET cpu_cores = $2, memory_mb = $3, disk_gb = $4, backend = $5, agent_version = $6,
                proxy_address = COALESCE(NULLIF($7, ''), proxy_address), updated_at = now()
          WHERE id = $1",
    )
    .bind(&host.id)
    .bind(info.vcpus as i32)
    .bind(info.memory_mb as i64)
    .bind((info.disk_mb / 1024) as i32)
    .bind(&info.backend)
    .bind(&info.agent_version)
    .bind(&info.proxy_address)
    .execute(&app.db)
    .await?;
    let names: Vec<String> = info.templates.iter().map(|t| t.name.clone()).collect();
    let mut tx = app.db.begin().await?;
    sqlx::query("DELETE FROM host_templates WHERE host_id = $1 AND NOT (agent_name = ANY($2))")
        .bind(&host.id)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    for t in &info.templates {
        sqlx::query(
            "INSERT INTO host_templates (host_id, agent_name, size_bytes) VALUES ($1, $2, $3)
             ON CONFLICT (host_id, agent_name) DO UPDATE SET size_bytes = EXCLUDED.size_bytes",
        )
        .bind(&host.id)
        .bind(&t.name)
        .bind(t.size_bytes as i64)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    for t in &info.templates {
        templates::register_reported(&app.db, &t.name, t.size_bytes as i64).await?;
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
    let rows = sqlx::query_as::<_, CapsuleRow>(
        "SELECT * FROM capsules WHERE host_id = $1 AND status IN ('running', 'paused', 'missing')
            AND (lease_until IS NULL OR lease_until < now())",
    )
    .bind(&host.id)
    .fetch_all(&app.db)
    .await?;
    for row in &rows {
        let now = row.status();
        let target = match on_agent.remove(row.id.as_str()) {
            Some(s) => s,
            None if listed.auto_destroyed_ids.contains(&row.id) => Stopped,
            None => Error,
        };
        if target == now {
            continue;
        }
        let from = if now == Missing {
            &[Missing][..]
        } else {
            &[now][..]
        };
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
        let moved = capsules::transition_now(
            &app.db,
            &row.id,
            from,
            to,
            Change {
                error,
                ..Change::default()
            },
        )
        .await?;
        if to == Stopping {
            if let Some(r) = moved {
                capsules::transition_now(&app.db, &r.id, &[Stopping], Stopped, Change::default())
                    .await?;
            }
        }
        tracing::info!(capsule = %row.id, from = %now.as_str(), to = %to.as_str(), "reconciled with host");
    }
    // Whatever the agent still lists and we do not track is an orphan
    // (destroyed here while the host was away): destroy it there.
    for (id, _) in on_agent {
        let known = capsules::get_any(&app.db, id).await?;
        let orphan = match &known {
            None => true,
            Some(r) => r.status().is_terminal() && r.host_id.as_deref() == Some(host.id.as_str()),
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
    let samples = agent.metrics("").await?;
    for m in samples {
        let at = chrono::DateTime::from_timestamp_millis(m.sampled_at_unix_ms)
            .unwrap_or_else(chrono::Utc::now);
        sqlx::query(
            "INSERT INTO capsule_metrics (capsule_id, sampled_at, cpu_pct, mem_bytes, disk_bytes)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM capsules WHERE id = $1)
             ON CONFLICT DO NOTHING",
        )
        .bind(&m.capsule_id)
        .bind(at)
        .bind(m.cpu_percent)
        .bind(m.memory_bytes as i64)
        .bind(m.disk_bytes as i64)
        .execute(&app.db)
        .await?;
    }
    sqlx::query("DELETE FROM capsule_metrics WHERE sampled_at < now() - interval '24 hours'")
        .execute(&app.db)
        .await?;
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
