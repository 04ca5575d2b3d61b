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
    let timeout = match spec.timeout_sec.unwrap_or(0) {
        0 => 0,
        t => t.max(MIN_TIMEOUT_SEC),
    };
    let metadata =
        serde_json::to_value(spec.metadata.unwrap_or_default()).map_err(ApiError::internal)?;

    let mut tx = app.db.begin().await?;
    let loads = hosts::lock_loads(
        &mut tx,
        team_id,
        &tpl.agent_name,
        None,
        app.cfg.cpu_overcommit,
        app.cfg.memory_overcommit,
    )
    .await?;
    let req = scheduler::Request {
        vcpus,
        memory_mb,
        template_pinned: tpl.pinned(),
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
    .bind(&tpl.id)
    .bind(&tpl.name)
    .bind(&tpl.agent_name)
    .bind(i32::try_from(vcpus).unwrap_or(i32::MAX))
    .bind(i32::try_from(memory_mb).unwrap_or(i32::MAX))
    .bind(i32::try_from(timeout).unwrap_or(i32::MAX))
    .bind(metadata)
    .bind(ids::new_secret(32))
    .bind(lease_ms)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;

    let app2 = app.clone();
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

/// Turns a running or paused capsule into team template `name`.
pub async fn snapshot(
    app: &AppState,
    row: CapsuleRow,
    name: &str,
    overwrite: bool,
) -> ApiResult<TemplateRow> {
    let back = row.status();
    if !matches!(back, Running | Paused) {
        return Err(ApiError::InvalidState(format!(
            "capsule must be running or paused to snapshot (status: {})",
            row.status
        )));
    }
    let existing = sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates WHERE name = $1 AND (team_id = $2 OR team_id IS NULL)",
    )
    .bind(name)
    .bind(&row.team_id)
    .fetch_all(&app.db)
    .await?;
    if existing.iter().any(|t| t.team_id.is_none()) {
        return Err(ApiError::Conflict(format!(
            "'{name}' is a platform template name"
        )));
    }
    let previous = existing.into_iter().next();
    if previous.is_some() && !overwrite {
        return Err(ApiError::Conflict(format!(
            "a template named '{name}' already exists (use overwrite=true)"
        )));
    }
    let host_id = row.host()?.to_string();
    let row = begin(app, &row, &[back], Snapshotting).await?;
    let app2 = app.clone();
    let name = name.to_string();
    detached(async move {
        let host = hosts::conn(&app2.db, &host_id).await?;
        let agent = app2.agent(&host)?;
        let agent_name = previous
            .as_ref()
            .map(|t| t.agent_name.clone())
            .unwrap_or_else(|| ids::new_id("snap-"));
        let result = agent
            .snapshot_capsule(&row.id, &agent_name, previous.is_some())
            .await;
        let mut tx = app2.db.begin().await?;
        capsules::transition(&mut tx, &row.id, &[Snapshotting], back, Change::default()).await?;
        let info = match result {
            Ok(info) => info,
            Err(e) => {
                tx.commit().await?;
                return Err(rpc_to_api(e));
            }
        };
        let size = i64::try_from(info.size_bytes).unwrap_or(i64::MAX);
        let tpl_src = match &row.template_id {
            Some(id) => templates::by_id(&app2.db, id).await?,
            None => None,
        };
        let tpl = sqlx::query_as::<_, TemplateRow>(
            "INSERT INTO templates (id, team_id, name, agent_name, type, vcpus, memory_mb, size_bytes,
                                    host_id, default_user, default_workdir, default_env, shell)
             VALUES ($1, $2, $3, $4, 'snapshot', $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (agent_name) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,
                 vcpus = EXCLUDED.vcpus, memory_mb = EXCLUDED.memory_mb, created_at = now()
             RETURNING *",
        )
        .bind(ids::new_id("tpl-"))
        .bind(&row.team_id)
        .bind(&name)
        .bind(&agent_name)
        .bind(row.vcpus)
        .bind(row.memory_mb)
        .bind(size)
        .bind(&host_id)
        .bind(tpl_src.as_ref().map_or("user", |t| t.default_user.as_str()))
        .bind(tpl_src.as_ref().and_then(|t| t.default_workdir.clone()))
        .bind(tpl_src.as_ref().map_or(serde_json::json!({}), |t| t.default_env.clone()))
        .bind(tpl_src.as_ref().map_or("/bin/bash -l -c", |t| t.shell.as_str()))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO host_templates (host_id, agent_name, size_bytes) VALUES ($1, $2, $3)
             ON CONFLICT (host_id, agent_name) DO UPDATE SET size_bytes = EXCLUDED.size_bytes",
        )
        .bind(&host_id)
        .bind(&agent_name)
        .bind(size)
        .execute(&mut *tx)
        .await?;
        events::publish(
            &mut *tx,
            &Notification {
                team_id: Some(row.team_id.clone()),
                event: "template.snapshot.create".into(),
                data: events::frame(
                    "template.snapshot.create",
                    Some("success"),
                    ("template", &name),
                    serde_json::json!({ "sandbox_id": row.id }),
                    None,
                ),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(tpl)
    })
    .await?
}
