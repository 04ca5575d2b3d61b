//! Capsule lifecycle operations: create, destroy, pause, resume, snapshot.
//!
//! Each one writes a transitional status with a lease, asks the agent, and
//! writes the final status. The agent call runs in its own task, so a
//! client that hangs up does not abort it halfway; if this replica dies
//! instead, the lease runs out and [`crate::reconciler`] finishes the job
//! on whichever replica gets there first. An agent that clearly refused
//! leaves the capsule in a definite state (`error` for a failed create,
//! back to `running` for a refused pause); one that could not be reached
//! leaves the operation to the reconciler.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use warren_proto::agent::v1 as pb;
use warren_proto::connect::Code;

use crate::agent_client::{is_definite, rpc_to_api};
use crate::app::AppState;
use crate::db::capsules::{self, CapsuleRow, Change};
use crate::db::hosts;
use crate::db::templates::{self, TemplateRow};
use crate::error::{ApiError, ApiResult};
use crate::events::{self, Notification};
use crate::ids;
use crate::scheduler::{self, NoPlacement};
use crate::status::CapsuleStatus::{self, *};

/// Idle timeouts below this are raised to it (as Wrenn does).
pub const MIN_TIMEOUT_SEC: u32 = 60;
const MAX_METADATA_KEYS: usize = 20;
const RESERVED_METADATA: [&str; 4] = [
    "kernel_version",
    "vmm_version",
    "agent_version",
    "envd_version",
];

/// What a create asks for (already type-checked by serde).
#[derive(Debug, Default, Clone)]
pub struct CreateSpec {
    pub template: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
    pub timeout_sec: Option<u32>,
    pub metadata: Option<HashMap<String, String>>,
}

fn valid_metadata_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && k.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks a create request against the limits, before anything is written.
pub fn validate(app: &AppState, spec: &CreateSpec) -> ApiResult<()> {
    if let Some(v) = spec.vcpus {
        if v == 0 || v > app.cfg.max_vcpus {
            return Err(ApiError::invalid(format!(
                "vcpus must be between 1 and {}",
                app.cfg.max_vcpus
            )));
        }
    }
    if let Some(m) = spec.memory_mb {
        if !(128..=app.cfg.max_memory_mb).contains(&m) {
            return Err(ApiError::invalid(format!(
                "memory_mb must be between 128 and {}",
                app.cfg.max_memory_mb
            )));
        }
    }
    if let Some(t) = spec.timeout_sec {
        if t > 30 * 24 * 3600 {
            return Err(ApiError::invalid("timeout_sec must be at most 30 days"));
        }
    }
    if let Some(name) = &spec.template {
        if name.is_empty() || name.len() > 128 {
            return Err(ApiError::invalid("template must be 1 to 128 characters"));
        }
    }
    if let Some(md) = &spec.metadata {
        if md.len() > MAX_METADATA_KEYS {
            return Err(ApiError::invalid("metadata has more than 20 keys"));
        }
        for (k, v) in md {
            if !valid_metadata_key(k) {
                return Err(ApiError::invalid(format!("invalid metadata key '{k}'")));
            }
            if RESERVED_METADATA.contains(&k.as_str()) {
                return Err(ApiError::invalid(format!("metadata key '{k}' is reserved")));
            }
            if v.chars().count() > 64 {
                return Err(ApiError::invalid(format!(
                    "metadata value of '{k}' exceeds 64 characters"
                )));
            }
        }
    }
    Ok(())
}

fn lease(app: &AppState) -> Option<Duration> {
    Some(app.cfg.agent_timeout() + Duration::from_secs(5))
}

fn no_placement(err: NoPlacement) -> ApiError {
    ApiError::HostUnavailable(err.to_string())
}

/// envd defaults a capsule of `tpl` starts (and resumes) with.
fn envd_defaults(tpl: Option<&TemplateRow>) -> pb::EnvdDefaults {
    let Some(tpl) = tpl else {
        return pb::EnvdDefaults::default();
    };
    let env = tpl
        .default_env
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    pb::EnvdDefaults {
        env,
        user: tpl.default_user.clone(),
        workdir: tpl.default_workdir.clone().unwrap_or_default(),
    }
}

async fn action_event(app: &AppState, row: &CapsuleRow, event: &str, err: Option<&ApiError>) {
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
async fn detached<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(fut).await.map_err(ApiError::internal)
}

pub async fn create(app: &AppState, team_id: &str, spec: CreateSpec) -> ApiResult<CapsuleRow> {
    validate(app, &spec)?;
    let name = spec
        .template
        .clone()
        .unwrap_or_else(|| app.cfg.default_template.clone());
    let tpl = templates::resolve(&app.db, team_id, &name).await?;
    let vcpus = spec
        .vcpus
        .or(tpl.vcpus.and_then(|v| u32::try_from(v).ok()))
        .unwrap_or(1);
    let memory_mb = spec
        .memory_mb
        .or(tpl.memory_mb.and_then(|v| u32::try_from(v).ok()))
        .unwrap_or(512);
    let timeout_sec = match spec.timeout_sec.unwrap_or(0) {
        0 => 0,
        t => t.max(MIN_TIMEOUT_SEC),
    };
    let launch = Launch {
        agent_template: tpl.agent_name.clone(),
        pinned: tpl.pinned(),
        tpl,
        vcpus,
        memory_mb,
        timeout_sec,
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

/// Places and makes a capsule of `team_id` (admission checked across
/// replicas by the host row locks), returning once the agent answered.
pub async fn launch(app: &AppState, team_id: &str, l: Launch) -> ApiResult<CapsuleRow> {
    let metadata = serde_json::to_value(&l.metadata).map_err(ApiError::internal)?;
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
    let host = scheduler::place(&loads, &req)
        .map_err(no_placement)?
        .id
        .clone();
    let id = ids::new_id("sb-");
    let lease_ms = lease(app).map(|d| d.as_millis() as i64);
    let row = sqlx::query_as::<_, CapsuleRow>(
        "INSERT INTO capsules (id, team_id, host_id, template_id, template, agent_template, status,
                               vcpus, memory_mb, timeout_sec, metadata, envd_token, lease_until)
         VALUES ($1, $2, $3, $4, $5, $6, 'starting', $7, $8, $9, $10, $11,
                 now() + $12::BIGINT * interval '1 millisecond')
         RETURNING *",
    )
    .bind(&id)
    .bind(team_id)
    .bind(&host)
    .bind(&l.tpl.id)
    .bind(&l.tpl.name)
    .bind(&l.agent_template)
    .bind(i32::try_from(l.vcpus).unwrap_or(i32::MAX))
    .bind(i32::try_from(l.memory_mb).unwrap_or(i32::MAX))
    .bind(i32::try_from(l.timeout_sec).unwrap_or(i32::MAX))
    .bind(metadata)
    .bind(ids::new_secret(32))
    .bind(lease_ms)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;

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
) -> Result<CapsuleRow, (CapsuleRow, ApiError)> {
    let tpl = match tpl {
        Some(t) => Some(t),
        None => match &row.template_id {
            Some(id) => templates::by_id(&app.db, id).await.ok().flatten(),
            None => None,
        },
    };
    let call = async {
        let host = hosts::conn(&app.db, row.host()?).await?;
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
        Ok::<_, ApiError>(agent.create_capsule(req).await)
    };
    match call.await {
        Ok(Ok(_)) => settle(app, &row, &[Starting], Running, None)
            .await
            .map_err(|e| (row, e)),
        Ok(Err(e)) if e.code == Code::AlreadyExists => {
            // A retry of a create the agent already did.
            settle(app, &row, &[Starting], Running, None)
                .await
                .map_err(|e| (row, e))
        }
        Ok(Err(e)) if is_definite(&e) => {
            let err = rpc_to_api(e);
            let settled = settle(app, &row, &[Starting], Error, Some(err.to_string())).await;
            Err((settled.unwrap_or(row), err))
        }
        Ok(Err(e)) => {
            tracing::warn!(capsule = %row.id, error = %e, "create outcome unknown; the reconciler will finish it");
            Ok(row)
        }
        Err(err) => {
            let settled = settle(app, &row, &[Starting], Error, Some(err.to_string())).await;
            Err((settled.unwrap_or(row), err))
        }
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
) -> ApiResult<CapsuleRow> {
    let change = Change {
        error,
        ..Change::default()
    };
    match capsules::transition_now(&app.db, &row.id, from, to, change).await? {
        Some(r) => Ok(r),
        None => capsules::get_any(&app.db, &row.id)
            .await?
            .ok_or_else(|| ApiError::not_found("capsule")),
    }
}

/// Starts a transition into a transitional state, or explains why not.
async fn begin(
    app: &AppState,
    row: &CapsuleRow,
    from: &[CapsuleStatus],
    to: CapsuleStatus,
) -> ApiResult<CapsuleRow> {
    let change = Change {
        lease: lease(app),
        ..Change::default()
    };
    capsules::transition_now(&app.db, &row.id, from, to, change)
        .await?
        .ok_or_else(|| {
            ApiError::InvalidState(format!(
                "capsule cannot go from {} to {}",
                row.status,
                to.as_str()
            ))
        })
}

/// Destroys a capsule. Returns the row; `stopping` if the agent could not be
/// reached (the reconciler keeps trying), else `stopped`.
pub async fn destroy(app: &AppState, row: CapsuleRow) -> ApiResult<CapsuleRow> {
    let status = row.status();
    if status.is_terminal() {
        return Err(ApiError::not_found("capsule"));
    }
    let from: Vec<CapsuleStatus> = CapsuleStatus::ALL
        .into_iter()
        .filter(|s| !s.is_terminal() && *s != Stopping)
        .collect();
    let row = if status == Stopping {
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
pub async fn drive_destroy(app: &AppState, row: CapsuleRow) -> ApiResult<CapsuleRow> {
    let Some(host_id) = row.host_id.clone() else {
        return settle(app, &row, &[Stopping], Stopped, None).await;
    };
    let host = match hosts::conn(&app.db, &host_id).await {
        Ok(h) => h,
        // The host is gone and its capsules with it.
        Err(_) => return settle(app, &row, &[Stopping], Stopped, None).await,
    };
    let agent = app.agent(&host)?;
    match agent.destroy_capsule(&row.id).await {
        Ok(()) => settle(app, &row, &[Stopping], Stopped, None).await,
        Err(e) if e.code == Code::NotFound => settle(app, &row, &[Stopping], Stopped, None).await,
        Err(e) => {
            tracing::warn!(capsule = %row.id, error = %e, "destroy not confirmed; will retry");
            Ok(row)
        }
    }
}

/// Pauses a running capsule.
pub async fn pause(app: &AppState, row: CapsuleRow) -> ApiResult<CapsuleRow> {
    if row.status() != Running {
        return Err(ApiError::InvalidState(format!(
            "capsule is not running (status: {})",
            row.status
        )));
    }
    let row = begin(app, &row, &[Running], Pausing).await?;
    let app2 = app.clone();
    let result = detached(async move { drive_pause(&app2, row).await }).await?;
    if let Ok(r) = &result {
        action_event(app, r, "capsule.pause", None).await;
    }
    result
}

pub async fn drive_pause(app: &AppState, row: CapsuleRow) -> ApiResult<CapsuleRow> {
    let host = hosts::conn(&app.db, row.host()?).await?;
    let agent = app.agent(&host)?;
    match agent.pause_capsule(&row.id).await {
        Ok(_) => settle(app, &row, &[Pausing], Paused, None).await,
        Err(e) if is_definite(&e) => {
            let err = rpc_to_api(e);
            settle(app, &row, &[Pausing], Running, None).await?;
            Err(err)
        }
        Err(e) => {
            tracing::warn!(capsule = %row.id, error = %e, "pause outcome unknown; will reconcile");
            Ok(row)
        }
    }
}

/// Resumes a paused capsule on the host that holds it, if it has room.
pub async fn resume(app: &AppState, row: CapsuleRow) -> ApiResult<CapsuleRow> {
    if row.status() != Paused {
        return Err(ApiError::InvalidState(format!(
            "capsule is not paused (status: {})",
            row.status
        )));
    }
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
    scheduler::place(&loads, &req).map_err(no_placement)?;
    let change = Change {
        lease: lease(app),
        ..Change::default()
    };
    let row = capsules::transition(&mut tx, &row.id, &[Paused], Resuming, change)
        .await?
        .ok_or_else(|| ApiError::InvalidState("capsule is no longer paused".into()))?;
    tx.commit().await?;
    let app2 = app.clone();
    let result = detached(async move { drive_resume(&app2, row).await }).await?;
    if let Ok(r) = &result {
        action_event(app, r, "capsule.resume", None).await;
    }
    result
}

pub async fn drive_resume(app: &AppState, row: CapsuleRow) -> ApiResult<CapsuleRow> {
    let host = hosts::conn(&app.db, row.host()?).await?;
    let agent = app.agent(&host)?;
    let tpl = match &row.template_id {
        Some(id) => templates::by_id(&app.db, id).await?,
        None => None,
    };
    let req = pb::ResumeCapsuleRequest {
        capsule_id: row.id.clone(),
        timeout_sec: row.timeout_sec as u32,
        defaults: Some(envd_defaults(tpl.as_ref())),
    };
    match agent.resume_capsule(req).await {
        Ok(_) => settle(app, &row, &[Resuming], Running, None).await,
        Err(e) if is_definite(&e) => {
            let err = rpc_to_api(e);
            settle(app, &row, &[Resuming], Paused, None).await?;
            Err(err)
        }
        Err(e) => {
            tracing::warn!(capsule = %row.id, error = %e, "resume outcome unknown; will reconcile");
            Ok(row)
        }
    }
}

/// Resets a running capsule's idle timer.
pub async fn ping(app: &AppState, row: &CapsuleRow) -> ApiResult<()> {
    row.require_running()?;
    let host = hosts::conn(&app.db, row.host()?).await?;
    host.require_online()?;
    app.agent(&host)?
        .ping_capsule(&row.id)
        .await
        .map_err(rpc_to_api)?;
    capsules::touch(&app.db, &row.id).await;
    Ok(())
}

/// Turns a running or paused capsule into team template `name` (an
/// existing one of the team is replaced only with `overwrite`).
pub async fn snapshot(
    app: &AppState,
    row: CapsuleRow,
    name: &str,
    overwrite: bool,
) -> ApiResult<TemplateRow> {
    require_snapshottable(&row)?;
    let previous = templates::claim_name(&app.db, &row.team_id, name, overwrite).await?;
    let host_id = row.host()?.to_string();
    let (agent_name, replace) = templates::agent_name_for(previous.as_ref(), &host_id);
    let source = match &row.template_id {
        Some(id) => templates::by_id(&app.db, id).await?,
        None => None,
    };
    let (team_id, capsule_id) = (row.team_id.clone(), row.id.clone());
    let info = snapshot_to(app, row.clone(), &agent_name, replace, None).await?;
    let new = templates::TeamTemplate {
        team_id: team_id.clone(),
        name: name.to_string(),
        agent_name,
        host_id,
        size_bytes: i64::try_from(info.size_bytes).unwrap_or(i64::MAX),
        vcpus: Some(row.vcpus),
        memory_mb: Some(row.memory_mb),
        default_user: source
            .as_ref()
            .map_or_else(|| "user".to_string(), |t| t.default_user.clone()),
        default_workdir: source.as_ref().and_then(|t| t.default_workdir.clone()),
        default_env: source
            .as_ref()
            .map_or_else(|| serde_json::json!({}), |t| t.default_env.clone()),
        shell: source
            .as_ref()
            .map_or_else(|| "/bin/bash -l -c".to_string(), |t| t.shell.clone()),
        metadata: serde_json::json!({ "source_capsule": capsule_id }),
    };
    let mut tx = app.db.begin().await?;
    let tpl = templates::put_team_template(&mut tx, &new, previous.as_ref()).await?;
    events::publish(
        &mut *tx,
        &Notification {
            team_id: Some(team_id),
            event: "template.snapshot.create".into(),
            data: events::frame(
                "template.snapshot.create",
                Some("success"),
                ("template", name),
                serde_json::json!({ "sandbox_id": capsule_id }),
                None,
            ),
        },
    )
    .await?;
    tx.commit().await?;
    if let Some(prev) = previous.filter(|p| p.agent_name != tpl.agent_name) {
        crate::api::snapshots::forget_agent_template(app, &prev.agent_name).await;
    }
    Ok(tpl)
}

fn require_snapshottable(row: &CapsuleRow) -> ApiResult<()> {
    if matches!(row.status(), Running | Paused) {
        Ok(())
    } else {
        Err(ApiError::InvalidState(format!(
            "capsule must be running or paused to snapshot (status: {})",
            row.status
        )))
    }
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
) -> ApiResult<pb::TemplateInfo> {
    require_snapshottable(&row)?;
    let back = row.status();
    let host_id = row.host()?.to_string();
    let row = begin(app, &row, &[back], Snapshotting).await?;
    let app = app.clone();
    let agent_name = agent_name.to_string();
    detached(async move {
        let host = hosts::conn(&app.db, &host_id).await?;
        let result = app
            .agent(&host)?
            .snapshot_capsule(&row.id, &agent_name, overwrite, defaults)
            .await;
        capsules::transition_now(&app.db, &row.id, &[Snapshotting], back, Change::default())
            .await?;
        let info = result.map_err(rpc_to_api)?;
        sqlx::query(
            "INSERT INTO host_templates (host_id, agent_name, size_bytes) VALUES ($1, $2, $3)
             ON CONFLICT (host_id, agent_name) DO UPDATE SET size_bytes = EXCLUDED.size_bytes",
        )
        .bind(&host_id)
        .bind(&agent_name)
        .bind(i64::try_from(info.size_bytes).unwrap_or(i64::MAX))
        .execute(&app.db)
        .await?;
        Ok(info)
    })
    .await?
}
