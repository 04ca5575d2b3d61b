//! The capsule lifecycle service: create, destroy, pause, resume, ping and
//! snapshot, driving the agent. The domain layer
//! ([`crate::domain::capsules`], builds, templates) decides who may; this
//! makes it happen.
//!
//! Each operation writes a transitional status with a lease, asks the
//! agent, and writes the final status. The agent call runs in its own task,
//! so a client that hangs up does not abort it halfway; if this replica dies
//! instead, the lease runs out and [`crate::reconciler`] finishes the job
//! on whichever replica gets there first. An agent that clearly refused
//! leaves the capsule in a definite state (`error` for a failed create,
//! back to `running` for a refused pause); one that could not be reached
//! leaves the operation to the reconciler. Every transition made here is
//! announced to the extensions' hooks once it committed.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use warren_api_types::status::CapsuleStatus::{self, *};
use warren_proto::agent::v1 as pb;
use warren_proto::connect::Code;

use crate::agent_client::{RpcError, Unreachable, is_definite};
use crate::app::AppState;
use crate::db::capsules::{self, CapsuleRow, Change, NewCapsule, Transitioned};
use crate::db::hosts::{self, HostConn};
use crate::db::templates::{self, TemplateRow};
use crate::events::{self, Notification};
use crate::ids;
use crate::scheduler::{self, NoPlacement};

/// Idle timeouts below this are raised to it (as Wrenn does).
pub const MIN_TIMEOUT_SEC: u32 = 60;
const MAX_METADATA_KEYS: usize = 20;
const RESERVED_METADATA: [&str; 4] = [
    "kernel_version",
    "vmm_version",
    "agent_version",
    "envd_version",
];

/// Why a lifecycle operation did not happen (or did not finish).
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The request breaks a limit.
    #[error("{0}")]
    Invalid(String),
    #[error("capsule not found")]
    NotFound,
    #[error("template '{0}' not found")]
    TemplateNotFound(String),
    /// The capsule's state forbids the operation.
    #[error("{0}")]
    InvalidState(String),
    /// No host can take the capsule.
    #[error(transparent)]
    NoPlacement(#[from] NoPlacement),
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// The agent refused or failed.
    #[error("{}", .0.message)]
    Agent(#[from] RpcError),
    #[error("the operation's task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

type Result<T, E = LifecycleError> = std::result::Result<T, E>;

/// What a create asks for (already type-checked by serde).
#[derive(Debug, Default, Clone)]
pub struct CreateSpec {
    pub template: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
    pub timeout_sec: Option<u32>,
    pub metadata: Option<HashMap<String, String>>,
}

/// Checks a capsule size against the limits.
pub fn check_size(app: &AppState, vcpus: Option<u32>, memory_mb: Option<u32>) -> Result<()> {
    if vcpus.is_some_and(|v| v == 0 || v > app.cfg.max_vcpus) {
        return Err(LifecycleError::Invalid(format!(
            "vcpus must be between 1 and {}",
            app.cfg.max_vcpus
        )));
    }
    if memory_mb.is_some_and(|m| !(128..=app.cfg.max_memory_mb).contains(&m)) {
        return Err(LifecycleError::Invalid(format!(
            "memory_mb must be between 128 and {}",
            app.cfg.max_memory_mb
        )));
    }
    Ok(())
}

/// Checks a create request against the limits, before anything is written.
pub fn validate(app: &AppState, spec: &CreateSpec) -> Result<()> {
    let invalid = |m: &str| Err(LifecycleError::Invalid(m.into()));
    check_size(app, spec.vcpus, spec.memory_mb)?;
    if spec.timeout_sec.is_some_and(|t| t > 30 * 24 * 3600) {
        return invalid("timeout_sec must be at most 30 days");
    }
    if spec
        .template
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.len() > 128)
    {
        return invalid("template must be 1 to 128 characters");
    }
    if let Some(md) = &spec.metadata {
        if md.len() > MAX_METADATA_KEYS {
            return invalid("metadata has more than 20 keys");
        }
        for (k, v) in md {
            if !crate::domain::is_slug(k, 64) {
                return invalid(&format!("invalid metadata key '{k}'"));
            }
            if RESERVED_METADATA.contains(&k.as_str()) {
                return invalid(&format!("metadata key '{k}' is reserved"));
            }
            if v.chars().count() > 64 {
                return invalid(&format!("metadata value of '{k}' exceeds 64 characters"));
            }
        }
    }
    Ok(())
}

impl CapsuleRow {
    /// The capsule's host, which every in-capsule operation needs.
    pub fn host(&self) -> Result<&str> {
        self.host_id
            .as_deref()
            .ok_or_else(|| LifecycleError::InvalidState(format!("capsule {} has no host", self.id)))
    }

    pub fn require_running(&self) -> Result<()> {
        self.require(&[Running], "capsule is not running")
    }

    pub fn require_snapshottable(&self) -> Result<()> {
        self.require(
            &[Running, Paused],
            "capsule must be running or paused to snapshot",
        )
    }

    fn require(&self, states: &[CapsuleStatus], what: &str) -> Result<()> {
        if states.contains(&self.status) {
            Ok(())
        } else {
            Err(LifecycleError::InvalidState(format!(
                "{what} (status: {})",
                self.status
            )))
        }
    }
}

/// The host `host_id`, which must still exist.
pub async fn host(app: &AppState, host_id: &str) -> Result<HostConn> {
    hosts::conn(&app.db, host_id)
        .await?
        .ok_or_else(|| Unreachable(format!("host {host_id} no longer exists")).into())
}

fn lease(app: &AppState) -> Duration {
    app.cfg.agent_timeout() + Duration::from_secs(5)
}

/// envd defaults a capsule of `tpl` starts (and resumes) with.
fn envd_defaults(tpl: Option<&TemplateRow>) -> pb::EnvdDefaults {
    let Some(tpl) = tpl else {
        return pb::EnvdDefaults::default();
    };
    pb::EnvdDefaults {
        env: tpl.env(),
        user: tpl.default_user.clone(),
        workdir: tpl.default_workdir.clone().unwrap_or_default(),
    }
}

async fn template_of(app: &AppState, row: &CapsuleRow) -> Result<Option<TemplateRow>> {
    Ok(match &row.template_id {
        Some(id) => templates::by_id(&app.db, id).await?,
        None => None,
    })
}

async fn action_event(app: &AppState, row: &CapsuleRow, event: &str, err: Option<&LifecycleError>) {
    let mut data = events::frame(
        event,
        Some(if err.is_some() { "error" } else { "success" }),
        ("capsule", &row.id),
        serde_json::json!({}),
        serde_json::to_value(row.view()).ok(),
    );
    if let Some(e) = err {
        data["error"] = Value::String(e.to_string());
    }
    let n = Notification {
        team_id: Some(row.team_id.clone()),
        event: event.into(),
        data,
    };
    if let Err(e) = events::publish(&app.db, &n).await {
        tracing::warn!(error = %e, "publishing event");
    }
}

/// Runs `fut` on its own task so a dropped request does not cancel it.
async fn detached<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
    Ok(tokio::spawn(fut).await?)
}

/// Announces a committed transition to the hooks; the row after it.
pub fn moved(app: &AppState, t: Option<Transitioned>) -> Option<CapsuleRow> {
    t.map(|t| {
        app.hooks.transitioned(&t);
        t.row
    })
}

/// [`capsules::transition_now`], announced.
pub async fn transition(
    app: &AppState,
    id: &str,
    from: &[CapsuleStatus],
    to: CapsuleStatus,
    change: Change,
) -> Result<Option<CapsuleRow>> {
    let t = capsules::transition_now(&app.db, id, from, to, change).await?;
    Ok(moved(app, t))
}

/// Creates a capsule of `team_id` from `spec`.
pub async fn create(app: &AppState, team_id: &str, spec: CreateSpec) -> Result<CapsuleRow> {
    validate(app, &spec)?;
    let name = spec
        .template
        .clone()
        .unwrap_or_else(|| app.cfg.default_template.clone());
    let tpl = templates::resolve(&app.db, team_id, &name)
        .await?
        .ok_or(LifecycleError::TemplateNotFound(name))?;
    let size = |asked: Option<u32>, of_tpl: Option<i32>, dflt| {
        asked
            .or(of_tpl.and_then(|v| u32::try_from(v).ok()))
            .unwrap_or(dflt)
    };
    let launch = Launch {
        agent_template: tpl.agent_name.clone(),
        pinned: tpl.pinned(),
        vcpus: size(spec.vcpus, tpl.vcpus, 1),
        memory_mb: size(spec.memory_mb, tpl.memory_mb, 512),
        timeout_sec: match spec.timeout_sec.unwrap_or(0) {
            0 => 0,
            t => t.max(MIN_TIMEOUT_SEC),
        },
        tpl,
        metadata: spec.metadata.unwrap_or_default(),
    };
    self::launch(app, team_id, launch).await
}

/// A capsule about to be placed and made.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The template users see it made from (its defaults and shell apply).
    pub tpl: TemplateRow,
    /// What the agent makes it from: the template's own name, or a build
    /// layer stored on some hosts only.
    pub agent_template: String,
    /// Only hosts that hold `agent_template` can take it.
    pub pinned: bool,
    pub vcpus: u32,
    pub memory_mb: u32,
    /// Idle timeout (0: never idle-paused).
    pub timeout_sec: u32,
    pub metadata: HashMap<String, String>,
}

fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Places and makes a capsule of `team_id` (admission checked across
/// replicas by the host row locks), returning once the agent answered.
pub async fn launch(app: &AppState, team_id: &str, l: Launch) -> Result<CapsuleRow> {
    let mut tx = app.db.begin().await?;
    let loads = hosts::lock_loads(
        &mut tx,
        team_id,
        &l.agent_template,
        None,
        app.cfg.cpu_overcommit,
        app.cfg.memory_overcommit,
    )
    .await?;
    let req = scheduler::Request {
        vcpus: l.vcpus,
        memory_mb: l.memory_mb,
        template_pinned: l.pinned,
    };
    let host = scheduler::place(&loads, &req)?.id.clone();
    let new = NewCapsule {
        id: ids::new_id("sb-"),
        team_id: team_id.to_string(),
        host_id: host,
        template_id: l.tpl.id.clone(),
        template: l.tpl.name.clone(),
        agent_template: l.agent_template,
        vcpus: i32_of(l.vcpus),
        memory_mb: i32_of(l.memory_mb),
        timeout_sec: i32_of(l.timeout_sec),
        metadata: serde_json::json!(l.metadata),
        envd_token: ids::new_secret(32),
        lease: lease(app),
    };
    let row = capsules::insert(&mut tx, &new).await?;
    tx.commit().await?;
    app.hooks.created(&row);

    let app2 = app.clone();
    let tpl = l.tpl;
    let result = detached(async move { drive_create(&app2, row, Some(tpl)).await }).await?;
    let row = match &result {
        Ok(r) | Err((r, _)) => r.clone(),
    };
    action_event(
        app,
        &row,
        "capsule.create",
        result.as_ref().err().map(|(_, e)| e),
    )
    .await;
    result.map_err(|(_, e)| e)
}

/// Asks the agent to create `row` and settles the outcome. Also the
/// reconciler's retry.
pub async fn drive_create(
    app: &AppState,
    row: CapsuleRow,
    tpl: Option<TemplateRow>,
) -> std::result::Result<CapsuleRow, (CapsuleRow, LifecycleError)> {
    let tpl = match tpl {
        Some(t) => Some(t),
        None => template_of(app, &row).await.ok().flatten(),
    };
    let call = async {
        let host = host(app, row.host()?).await?;
        let agent = app.agent(&host)?;
        let req = pb::CreateCapsuleRequest {
            capsule_id: row.id.clone(),
            template: row.agent_template.clone(),
            vcpus: row.vcpus as u32,
            memory_mb: row.memory_mb as u32,
            disk_mb: row.disk_mb as u32,
            timeout_sec: row.timeout_sec as u32,
            idle_policy: pb::IdlePolicy::Pause as i32,
            defaults: Some(envd_defaults(tpl.as_ref())),
            metadata: serde_json::from_value(row.metadata.clone()).unwrap_or_default(),
            egress: None,
            access_token: row.envd_token.clone(),
            tx_rate_limit: None,
            // Capsule ports are public, as in Wrenn.
            traffic_access_token: String::new(),
        };
        Ok::<_, LifecycleError>(agent.create_capsule(req).await)
    };
    let failed = |err: LifecycleError| async {
        let settled = settle(app, &row, &[Starting], Error, Some(err.to_string())).await;
        Err((settled.unwrap_or_else(|_| row.clone()), err))
    };
    match call.await {
        // `AlreadyExists`: a retry of a create the agent already did.
        Ok(Ok(_)) => settle(app, &row, &[Starting], Running, None)
            .await
            .map_err(|e| (row.clone(), e)),
        Ok(Err(e)) if e.code == Code::AlreadyExists => {
            settle(app, &row, &[Starting], Running, None)
                .await
                .map_err(|e| (row.clone(), e))
        }
        Ok(Err(e)) if is_definite(&e) => failed(e.into()).await,
        Ok(Err(e)) => {
            tracing::warn!(capsule = %row.id, error = %e, "create outcome unknown; the reconciler will finish it");
            Ok(row)
        }
        Err(err) => failed(err).await,
    }
}

/// Moves `row` from `from` to `to`; if another replica moved it first, the
/// row as it is now.
async fn settle(
    app: &AppState,
    row: &CapsuleRow,
    from: &[CapsuleStatus],
    to: CapsuleStatus,
    error: Option<String>,
) -> Result<CapsuleRow> {
    let change = Change {
        error,
        ..Change::default()
    };
    match transition(app, &row.id, from, to, change).await? {
        Some(r) => Ok(r),
        None => capsules::get_any(&app.db, &row.id)
            .await?
            .ok_or(LifecycleError::NotFound),
    }
}

/// Starts a transition into a transitional state, or explains why not.
async fn begin(
    app: &AppState,
    row: &CapsuleRow,
    from: &[CapsuleStatus],
    to: CapsuleStatus,
) -> Result<CapsuleRow> {
    let change = Change {
        lease: Some(lease(app)),
        ..Change::default()
    };
    transition(app, &row.id, from, to, change)
        .await?
        .ok_or_else(|| {
            LifecycleError::InvalidState(format!("capsule cannot go from {} to {to}", row.status))
        })
}

/// Destroys a capsule. Returns the row; `stopping` if the agent could not be
/// reached (the reconciler keeps trying), else `stopped`.
pub async fn destroy(app: &AppState, row: CapsuleRow) -> Result<CapsuleRow> {
    if row.status.is_terminal() {
        return Err(LifecycleError::NotFound);
    }
    let from = CapsuleStatus::all_where(|s| !s.is_terminal() && s != Stopping);
    let row = if row.status == Stopping {
        row
    } else {
        begin(app, &row, &from, Stopping).await?
    };
    let app2 = app.clone();
    let result = detached(async move { drive_destroy(&app2, row).await }).await?;
    if let Ok(r) = &result {
        action_event(app, r, "capsule.destroy", None).await;
    }
    result
}

/// Asks the agent to destroy `row`; also the reconciler's retry.
pub async fn drive_destroy(app: &AppState, row: CapsuleRow) -> Result<CapsuleRow> {
    let Some(host_id) = row.host_id.clone() else {
        return settle(app, &row, &[Stopping], Stopped, None).await;
    };
    let Some(host) = hosts::conn(&app.db, &host_id).await? else {
        // The host is gone and its capsules with it.
        return settle(app, &row, &[Stopping], Stopped, None).await;
    };
    match app.agent(&host)?.destroy_capsule(&row.id).await {
        Ok(()) => settle(app, &row, &[Stopping], Stopped, None).await,
        Err(e) if e.code == Code::NotFound => settle(app, &row, &[Stopping], Stopped, None).await,
        Err(e) => {
            tracing::warn!(capsule = %row.id, error = %e, "destroy not confirmed; will retry");
            Ok(row)
        }
    }
}

/// Pauses a running capsule.
pub async fn pause(app: &AppState, row: CapsuleRow) -> Result<CapsuleRow> {
    row.require_running()?;
    let row = begin(app, &row, &[Running], Pausing).await?;
    let app2 = app.clone();
    let result = detached(async move { drive_pause(&app2, row).await }).await?;
    if let Ok(r) = &result {
        action_event(app, r, "capsule.pause", None).await;
    }
    result
}

pub async fn drive_pause(app: &AppState, row: CapsuleRow) -> Result<CapsuleRow> {
    let host = host(app, row.host()?).await?;
    match app.agent(&host)?.pause_capsule(&row.id).await {
        Ok(_) => settle(app, &row, &[Pausing], Paused, None).await,
        Err(e) if is_definite(&e) => {
            settle(app, &row, &[Pausing], Running, None).await?;
            Err(e.into())
        }
        Err(e) => {
            tracing::warn!(capsule = %row.id, error = %e, "pause outcome unknown; will reconcile");
            Ok(row)
        }
    }
}

/// Resumes a paused capsule on the host that holds it, if it has room.
pub async fn resume(app: &AppState, row: CapsuleRow) -> Result<CapsuleRow> {
    row.require(&[Paused], "capsule is not paused")?;
    let host_id = row.host()?.to_string();
    // Admission on the capsule's own host: its snapshot is there.
    let mut tx = app.db.begin().await?;
    let loads = hosts::lock_loads(
        &mut tx,
        &row.team_id,
        &row.agent_template,
        Some(&host_id),
        app.cfg.cpu_overcommit,
        app.cfg.memory_overcommit,
    )
    .await?;
    let req = scheduler::Request {
        vcpus: row.vcpus as u32,
        memory_mb: row.memory_mb as u32,
        template_pinned: false,
    };
    scheduler::place(&loads, &req)?;
    let change = Change {
        lease: Some(lease(app)),
        ..Change::default()
    };
    let moved_row = capsules::transition(&mut tx, &row.id, &[Paused], Resuming, change).await?;
    tx.commit().await?;
    let row = moved(app, moved_row)
        .ok_or_else(|| LifecycleError::InvalidState("capsule is no longer paused".into()))?;
    let app2 = app.clone();
    let result = detached(async move { drive_resume(&app2, row).await }).await?;
    if let Ok(r) = &result {
        action_event(app, r, "capsule.resume", None).await;
    }
    result
}

pub async fn drive_resume(app: &AppState, row: CapsuleRow) -> Result<CapsuleRow> {
    let host = host(app, row.host()?).await?;
    let agent = app.agent(&host)?;
    let tpl = template_of(app, &row).await?;
    let req = pb::ResumeCapsuleRequest {
        capsule_id: row.id.clone(),
        timeout_sec: row.timeout_sec as u32,
        defaults: Some(envd_defaults(tpl.as_ref())),
    };
    match agent.resume_capsule(req).await {
        Ok(_) => settle(app, &row, &[Resuming], Running, None).await,
        Err(e) if is_definite(&e) => {
            settle(app, &row, &[Resuming], Paused, None).await?;
            Err(e.into())
        }
        Err(e) => {
            tracing::warn!(capsule = %row.id, error = %e, "resume outcome unknown; will reconcile");
            Ok(row)
        }
    }
}

/// Resets a running capsule's idle timer.
pub async fn ping(app: &AppState, row: &CapsuleRow) -> Result<()> {
    row.require_running()?;
    let host = host(app, row.host()?).await?;
    host.require_online()?;
    app.agent(&host)?.ping_capsule(&row.id).await?;
    capsules::touch(&app.db, &row.id).await?;
    Ok(())
}

/// Copies `row`'s filesystem into agent template `agent_name` on its host
/// (replacing one there only with `overwrite`); the capsule is
/// `snapshotting` meanwhile and back in its state after. Records that the
/// host holds the template.
pub async fn snapshot_to(
    app: &AppState,
    row: CapsuleRow,
    agent_name: &str,
    overwrite: bool,
    defaults: Option<pb::TemplateDefaults>,
) -> Result<pb::TemplateInfo> {
    row.require_snapshottable()?;
    let back = row.status;
    let host_id = row.host()?.to_string();
    let row = begin(app, &row, &[back], Snapshotting).await?;
    let app = app.clone();
    let agent_name = agent_name.to_string();
    detached(async move {
        let host = host(&app, &host_id).await?;
        let result = app
            .agent(&host)?
            .snapshot_capsule(&row.id, &agent_name, overwrite, defaults)
            .await;
        transition(&app, &row.id, &[Snapshotting], back, Change::default()).await?;
        let info = result?;
        let size = i64::try_from(info.size_bytes).unwrap_or(i64::MAX);
        let mut conn = app.db.acquire().await?;
        hosts::record_template(&mut conn, &host_id, &agent_name, Some(size)).await?;
        Ok(info)
    })
    .await?
}
