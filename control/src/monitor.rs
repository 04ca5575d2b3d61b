//! The host monitor: a host silent for longer than the heartbeat timeout
//! becomes `unreachable` and its capsules `missing` (their previous status
//! kept, so a returning host restores them). The update is one statement
//! per host, so any number of replicas can run it at once.

use crate::app::AppState;
use crate::db::capsules::{self, Change};
use crate::status::CapsuleStatus;

/// One sweep; returns the hosts it marked unreachable.
pub async fn sweep(app: &AppState) -> sqlx::Result<Vec<String>> {
    let timeout_ms = app.cfg.heartbeat_timeout().as_millis() as i64;
    let mut tx = app.db.begin().await?;
    let down: Vec<(String, Option<String>)> = sqlx::query_as(
        "UPDATE hosts SET status = 'unreachable', updated_at = now()
          WHERE status = 'online' AND deleted_at IS NULL
            AND last_heartbeat_at < now() - $1::BIGINT * interval '1 millisecond'
          RETURNING id, team_id",
    )
    .bind(timeout_ms)
    .fetch_all(&mut *tx)
    .await?;
    let from: Vec<CapsuleStatus> = CapsuleStatus::ALL
        .into_iter()
        .filter(|s| !s.is_terminal() && *s != CapsuleStatus::Missing)
        .collect();
    let from_str: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    for (host, _) in &down {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM capsules WHERE host_id = $1 AND status = ANY($2)")
                .bind(host)
                .bind(&from_str)
                .fetch_all(&mut *tx)
                .await?;
        for id in ids {
            capsules::transition(
                &mut tx,
                &id,
                &from,
                CapsuleStatus::Missing,
                Change::default(),
            )
            .await?;
        }
    }
    tx.commit().await?;
    for (host, team) in &down {
        tracing::warn!(host = %host, "host missed its heartbeats; marked unreachable");
        crate::api::hosts::host_event(app, host, team.clone(), "host.down").await;
    }
    Ok(down.into_iter().map(|(h, _)| h).collect())
}

pub async fn run(app: AppState) {
    let period = (app.cfg.heartbeat_timeout() / 4).max(std::time::Duration::from_millis(500));
    loop {
        if let Err(e) = sweep(&app).await {
            tracing::warn!(error = %e, "host monitor sweep failed");
        }
        tokio::time::sleep(period).await;
    }
}
