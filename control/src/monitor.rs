//! The host monitor: a host silent for longer than the heartbeat timeout
//! becomes `unreachable` and its capsules `missing` (their previous status
//! kept, so a returning host restores them). The update is one statement
//! per host, so any number of replicas can run it at once.

use warren_api_types::status::CapsuleStatus;

use crate::app::AppState;
use crate::db::capsules::{self, Change};
use crate::db::hosts;
use crate::domain;

/// One sweep; returns the hosts it marked unreachable.
pub async fn sweep(app: &AppState) -> sqlx::Result<Vec<String>> {
    let mut tx = app.db.begin().await?;
    let down = hosts::mark_unreachable(&mut tx, app.cfg.heartbeat_timeout()).await?;
    let from = CapsuleStatus::all_where(|s| !s.is_terminal() && s != CapsuleStatus::Missing);
    let mut moved = Vec::new();
    for (host, _) in &down {
        for id in capsules::ids_on_host(&mut tx, host, &from).await? {
            let t = capsules::transition(
                &mut tx,
                &id,
                &from,
                CapsuleStatus::Missing,
                Change::default(),
            )
            .await?;
            moved.extend(t);
        }
    }
    tx.commit().await?;
    for t in &moved {
        app.hooks.transitioned(t);
    }
    for (host, team) in &down {
        tracing::warn!(host = %host, "host missed its heartbeats; marked unreachable");
        domain::hosts::host_event(app, host, team.clone(), "host.down").await;
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
