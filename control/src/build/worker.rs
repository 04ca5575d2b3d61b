//! The build workers of one control replica: up to `build_workers` builds
//! at once, each claimed from the shared queue with `FOR UPDATE SKIP
//! LOCKED` (so replicas never take the same build) under a lease that the
//! runner renews. Queued builds wake the workers through `LISTEN`; builds
//! whose lease ran out (their replica died) are found by polling.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast};

use super::notify::{Kind, Wake};
use super::runner;
use crate::app::AppState;
use crate::db::builds as store;

/// How often idle workers look for expired leases.
const POLL: Duration = Duration::from_secs(2);

/// This replica's worker name (shown on the build rows it holds).
fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "control".into());
    format!("{host}:{}:{}", std::process::id(), crate::ids::new_id(""))
}

/// Waits for a queued build, or `POLL`.
async fn idle(rx: &mut broadcast::Receiver<Wake>) {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(w) if w.kind == Kind::Queued => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    let _ = tokio::time::timeout(POLL, wait).await;
}

/// Runs until the process ends.
pub async fn run(app: AppState) {
    let slots = Arc::new(Semaphore::new(app.cfg.build_workers));
    let name = worker_name();
    let mut wake = app.events.builds.subscribe();
    tracing::info!(worker = %name, slots = app.cfg.build_workers, "build workers ready");
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match store::claim(&app.db, &name, app.cfg.build_lease()).await {
            Ok(Some(row)) => {
                let app = app.clone();
                tokio::spawn(async move {
                    runner::run(app, row).await;
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                idle(&mut wake).await;
            }
            Err(e) => {
                drop(permit);
                tracing::warn!(error = %e, "claiming a build failed");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}
