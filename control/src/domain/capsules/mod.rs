//! Capsules of the caller's team: create, list, get, destroy, pause,
//! resume, ping (through [`crate::lifecycle`]); their usage ([`usage`]);
//! and what runs inside them, through envd ([`session`]). Others' capsules
//! are not found; platform administrators see and destroy every one.

pub mod session;
pub mod usage;

use warren_api_types::admin::AdminCapsule;
use warren_api_types::capsules::CreateCapsuleRequest;

use crate::agent_client::{RpcError, Unreachable};
use crate::app::AppState;
use crate::auth::{Denied, Principal};
use crate::db::{self, capsules::CapsuleRow};
use crate::envd_client::EnvdError;
use crate::lifecycle::{self, CreateSpec, LifecycleError};

#[derive(Debug, thiserror::Error)]
pub enum CapsuleError {
    #[error("capsule not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// A `/files` transfer with envd failed.
    #[error(transparent)]
    Envd(#[from] EnvdError),
    /// An envd RPC failed.
    #[error("{}", .0.message)]
    Rpc(#[from] RpcError),
    /// A command outlived its time limit (and was killed).
    #[error("{0}")]
    Timeout(String),
    /// envd broke its protocol (a stream ended early, an answer was empty).
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub type Result<T> = std::result::Result<T, CapsuleError>;

/// Capsule `id` of the caller's team.
pub async fn get(app: &AppState, p: &Principal, id: &str) -> Result<CapsuleRow> {
    db::capsules::get(&app.db, &p.team_id, id)
        .await?
        .ok_or(CapsuleError::NotFound)
}

/// The team's capsules (those that ended in the last hour included).
pub async fn list(app: &AppState, p: &Principal) -> Result<Vec<CapsuleRow>> {
    Ok(db::capsules::list_recent(&app.db, Some(&p.team_id)).await?)
}

/// Creates a capsule; returns once it runs, or still `starting` if its
/// host is slow to confirm.
pub async fn create(
    app: &AppState,
    p: &Principal,
    req: CreateCapsuleRequest,
) -> Result<CapsuleRow> {
    let spec = CreateSpec {
        template: req.template,
        vcpus: req.vcpus,
        memory_mb: req.memory_mb,
        timeout_sec: req.timeout_sec,
        metadata: req.metadata,
    };
    Ok(lifecycle::create(app, &p.team_id, spec).await?)
}

/// Destroys a capsule; `stopped`, or `stopping` while its host retries.
pub async fn destroy(app: &AppState, p: &Principal, id: &str) -> Result<CapsuleRow> {
    Ok(lifecycle::destroy(app, get(app, p, id).await?).await?)
}

pub async fn pause(app: &AppState, p: &Principal, id: &str) -> Result<CapsuleRow> {
    Ok(lifecycle::pause(app, get(app, p, id).await?).await?)
}

/// Resumes a paused capsule on the host that holds it.
pub async fn resume(app: &AppState, p: &Principal, id: &str) -> Result<CapsuleRow> {
    Ok(lifecycle::resume(app, get(app, p, id).await?).await?)
}

/// Resets a running capsule's idle timer.
pub async fn ping(app: &AppState, p: &Principal, id: &str) -> Result<()> {
    Ok(lifecycle::ping(app, &get(app, p, id).await?).await?)
}

/// Every team's capsules (platform administrators only).
pub async fn list_all(app: &AppState, p: &Principal) -> Result<Vec<AdminCapsule>> {
    p.require_admin()?;
    let rows = db::capsules::list_recent(&app.db, None).await?;
    Ok(rows
        .iter()
        .map(|r| AdminCapsule {
            team_id: r.team_id.clone(),
            host_id: r.host_id.clone(),
            capsule: r.view(),
        })
        .collect())
}

/// Destroys any team's capsule (platform administrators only).
pub async fn destroy_any(app: &AppState, p: &Principal, id: &str) -> Result<CapsuleRow> {
    p.require_admin()?;
    let row = db::capsules::get_any(&app.db, id)
        .await?
        .ok_or(CapsuleError::NotFound)?;
    Ok(lifecycle::destroy(app, row).await?)
}
