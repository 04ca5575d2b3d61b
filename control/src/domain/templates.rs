//! Templates: a team's snapshots (made from its capsules, or by builds),
//! the platform's base templates (platform administrators only), and
//! removing a template version from every host that holds it.

use warren_api_types::status::TemplateKind;
use warren_api_types::templates::{TemplateRequest, TemplateView};
use warren_proto::connect::Code;

use crate::agent_client::{RpcError, Unreachable};
use crate::app::AppState;
use crate::auth::{Denied, Principal};
use crate::db::templates::{PlatformTemplate, SNAPSHOT_PREFIX, TeamTemplate, TemplateRow};
use crate::events::{self, Notification};
use crate::lifecycle::{self, LifecycleError};
use crate::{db, ids};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A name clash, a template still in use, or a host refusing to let
    /// go of it.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// An agent refused to delete a template.
    #[error("{}", .0.message)]
    Agent(#[from] RpcError),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, TemplateError>;

pub fn validate_name(name: &str) -> Result<()> {
    if super::is_slug(name, 64) {
        Ok(())
    } else {
        Err(TemplateError::Invalid(
            "template name must match [a-zA-Z0-9][a-zA-Z0-9._-]{0,63}".into(),
        ))
    }
}

/// Checks that `team_id` may give a template `name`: platform names are
/// never free; a team template of that name is returned to be replaced
/// when `overwrite`, else it is a conflict.
pub async fn claim_name(
    app: &AppState,
    team_id: &str,
    name: &str,
    overwrite: bool,
) -> Result<Option<TemplateRow>> {
    let existing = db::templates::named(&app.db, team_id, name).await?;
    if existing.iter().any(|t| t.team_id.is_none()) {
        return Err(TemplateError::Conflict(format!(
            "'{name}' is a platform template name"
        )));
    }
    let previous = existing.into_iter().next();
    if previous.is_some() && !overwrite {
        return Err(TemplateError::Conflict(format!(
            "a template named '{name}' already exists (use overwrite=true)"
        )));
    }
    Ok(previous)
}

/// The agent name a new version of a team template is stored under on
/// `host_id`, and whether that replaces one there: the previous version's
/// name when it lives on the same host (the agent swaps it atomically and
/// capsules running on it keep theirs), else a fresh one.
pub fn agent_name_for(previous: Option<&TemplateRow>, host_id: &str) -> (String, bool) {
    match previous {
        Some(p) if p.host_id.as_deref() == Some(host_id) => (p.agent_name.clone(), true),
        _ => (ids::new_id(SNAPSHOT_PREFIX), false),
    }
}

/// Writes a team template (a new row, or `previous` replaced in place);
/// its name taken meanwhile is a conflict.
pub async fn put_team_template(
    conn: &mut sqlx::PgConnection,
    t: &TeamTemplate,
    previous: Option<&TemplateRow>,
) -> Result<TemplateRow> {
    db::templates::put_team_template(conn, t, previous)
        .await
        .map_err(|e| {
            if db::is_unique_violation(&e) {
                TemplateError::Conflict(format!("a template named '{}' already exists", t.name))
            } else {
                e.into()
            }
        })
}

/// Publishes a template event of `team_id` about template `name`.
async fn publish(
    conn: impl sqlx::PgExecutor<'_>,
    team_id: &str,
    event: &str,
    name: &str,
    meta: serde_json::Value,
) -> sqlx::Result<()> {
    events::publish(
        conn,
        &Notification {
            team_id: Some(team_id.to_string()),
            event: event.into(),
            data: events::frame(event, Some("success"), ("template", name), meta, None),
        },
    )
    .await
}

/// Turns the caller's running or paused capsule into team template `name`
/// (generated when absent; an existing one of the team is replaced only
/// with `overwrite`).
pub async fn create_snapshot(
    app: &AppState,
    p: &Principal,
    capsule_id: &str,
    name: Option<String>,
    overwrite: bool,
) -> Result<TemplateRow> {
    let name = name.unwrap_or_else(|| ids::new_id("snapshot-"));
    validate_name(&name)?;
    let row = db::capsules::get(&app.db, &p.team_id, capsule_id)
        .await?
        .ok_or(LifecycleError::NotFound)?;
    row.require_snapshottable()?;
    let previous = claim_name(app, &row.team_id, &name, overwrite).await?;
    let host_id = row.host()?.to_string();
    let (agent_name, replace) = agent_name_for(previous.as_ref(), &host_id);
    let source = match &row.template_id {
        Some(id) => db::templates::by_id(&app.db, id).await?,
        None => None,
    };
    let info = lifecycle::snapshot_to(app, row.clone(), &agent_name, replace, None).await?;
    let new = TeamTemplate {
        team_id: row.team_id.clone(),
        name: name.clone(),
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
        metadata: serde_json::json!({ "source_capsule": row.id }),
    };
    let mut tx = app.db.begin().await?;
    let tpl = put_team_template(&mut tx, &new, previous.as_ref()).await?;
    let meta = serde_json::json!({ "sandbox_id": row.id });
    publish(
        &mut *tx,
        &row.team_id,
        "template.snapshot.create",
        &name,
        meta,
    )
    .await?;
    tx.commit().await?;
    if let Some(prev) = previous.filter(|p| p.agent_name != tpl.agent_name) {
        forget_agent_template(app, &prev.agent_name).await;
    }
    Ok(tpl)
}

/// Templates the team can use (its snapshots and the platform's),
/// optionally of one kind (`base`, `snapshot`).
pub async fn list(app: &AppState, p: &Principal, kind: Option<&str>) -> Result<Vec<TemplateView>> {
    let kind =
        match kind {
            None => None,
            Some(k) => Some(TemplateKind::parse(k).ok_or_else(|| {
                TemplateError::Invalid("type must be 'base' or 'snapshot'".into())
            })?),
        };
    let rows = db::templates::list(&app.db, Some(&p.team_id), kind).await?;
    Ok(rows.iter().map(TemplateRow::view).collect())
}

/// Deletes one of the team's snapshot templates from its host and here.
pub async fn delete_snapshot(app: &AppState, p: &Principal, name: &str) -> Result<()> {
    let tpl = db::templates::resolve(&app.db, &p.team_id, name)
        .await?
        .ok_or_else(|| TemplateError::NotFound(format!("template '{name}' not found")))?;
    let Some(team_id) = tpl.team_id.clone() else {
        return Err(Denied::rule("platform templates cannot be deleted here").into());
    };
    delete_everywhere(app, &tpl).await?;
    let meta = serde_json::json!({});
    let _ = publish(&app.db, &team_id, "template.snapshot.delete", name, meta).await;
    Ok(())
}

/// Every template (platform administrators only).
pub async fn list_all(app: &AppState, p: &Principal) -> Result<Vec<TemplateView>> {
    p.require_admin()?;
    let rows = db::templates::list(&app.db, None, None).await?;
    Ok(rows.iter().map(TemplateRow::view).collect())
}

fn validate_shell(shell: &str) -> Result<()> {
    let ok = shell.starts_with('/') && shell.len() <= 128 && !shell.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(TemplateError::Invalid(
            "shell must be an absolute command such as '/bin/sh -c'".into(),
        ))
    }
}

/// Registers (or updates) a platform base template (platform
/// administrators only).
pub async fn put_platform(
    app: &AppState,
    p: &Principal,
    req: &TemplateRequest,
) -> Result<TemplateRow> {
    p.require_admin()?;
    validate_name(&req.name)?;
    let agent_name = req.agent_name.as_deref().unwrap_or(&req.name);
    validate_name(agent_name)?;
    if let Some(s) = &req.shell {
        validate_shell(s)?;
    }
    if lifecycle::check_size(app, req.vcpus, req.memory_mb).is_err() {
        return Err(TemplateError::Invalid(
            "vcpus or memory_mb out of range".into(),
        ));
    }
    let t = PlatformTemplate {
        name: &req.name,
        agent_name,
        vcpus: req.vcpus.map(|v| v as i32),
        memory_mb: req.memory_mb.map(|v| v as i32),
        default_user: req.default_user.as_deref(),
        default_workdir: req.default_workdir.as_deref(),
        default_env: serde_json::json!(req.default_env.clone().unwrap_or_default()),
        shell: req.shell.as_deref(),
    };
    db::templates::put_platform(&app.db, &t).await.map_err(|e| {
        if db::is_unique_violation(&e) {
            TemplateError::Conflict("template name taken".into())
        } else {
            e.into()
        }
    })
}

/// Deletes a platform template no live capsule uses (platform
/// administrators only).
pub async fn delete_platform(app: &AppState, p: &Principal, name: &str) -> Result<()> {
    p.require_admin()?;
    let tpl = db::templates::platform(&app.db, name)
        .await?
        .ok_or_else(|| TemplateError::NotFound("template not found".into()))?;
    let users = db::capsules::count_live_of_template(&app.db, &tpl.id).await?;
    if users > 0 {
        return Err(TemplateError::Conflict(format!(
            "{users} capsules still use this template"
        )));
    }
    delete_everywhere(app, &tpl).await
}

/// Removes a template from every host holding it, then its row.
pub async fn delete_everywhere(app: &AppState, tpl: &TemplateRow) -> Result<()> {
    delete_agent_template(app, &tpl.agent_name).await?;
    Ok(db::templates::delete(&app.db, &tpl.id).await?)
}

/// Removes agent template `agent_name` from every host that holds it. A
/// host that cannot be reached makes it a conflict (try again later).
pub async fn delete_agent_template(app: &AppState, agent_name: &str) -> Result<()> {
    for host_id in db::hosts::template_holders(&app.db, agent_name).await? {
        let host = lifecycle::host(app, &host_id).await?;
        match app.agent(&host)?.delete_template(agent_name).await {
            Ok(()) => {}
            Err(e) if e.code == Code::NotFound => {}
            Err(e) if e.code == Code::Unavailable => {
                return Err(TemplateError::Conflict(format!(
                    "delete failed: capsule host is unreachable: {}",
                    e.message
                )));
            }
            Err(e) if e.code == Code::ResourceExhausted => {
                return Err(TemplateError::Conflict(format!(
                    "delete failed: {}",
                    e.message
                )));
            }
            Err(e) => return Err(e.into()),
        }
        db::hosts::forget_template(&app.db, &host_id, agent_name).await?;
    }
    Ok(())
}

/// [`delete_agent_template`] for a version nothing refers to any more
/// (replaced by a newer one); a failure is only logged.
pub async fn forget_agent_template(app: &AppState, agent_name: &str) {
    if let Err(e) = delete_agent_template(app, agent_name).await {
        tracing::warn!(template = agent_name, error = %e, "removing a replaced template version failed");
    }
}
