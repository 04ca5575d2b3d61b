//! Platform administration (`/v1/admin/*`, platform administrators only):
//! every team, user, template and capsule.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::app::AppState;
use crate::audit::{AuditNote, noted};
use crate::auth::Principal;
use crate::db::capsules::{self, CapsuleRow, CapsuleView, ser_ts};
use crate::db::templates::{TemplateRow, TemplateView};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{ids, lifecycle};

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct AdminTeam {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub members: i64,
    pub active_capsules: i64,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct AdminUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub is_admin: bool,
    pub status: String,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub is_admin: Option<bool>,
    /// `active` or `disabled`.
    pub status: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminCapsule {
    pub team_id: String,
    pub host_id: Option<String>,
    #[serde(flatten)]
    pub capsule: CapsuleView,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    pub name: String,
    /// Name the agents store it under (defaults to `name`).
    pub agent_name: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
    pub default_user: Option<String>,
    pub default_workdir: Option<String>,
    pub default_env: Option<std::collections::HashMap<String, String>>,
    /// How shell strings run, e.g. `/bin/bash -l -c` or `/bin/sh -c`.
    pub shell: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/teams", tag = "admin", responses((status = 200, body = [AdminTeam]), (status = 403, body = ErrorBody)))]
pub async fn teams(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<AdminTeam>>> {
    p.require_admin()?;
    let rows = sqlx::query_as::<_, AdminTeam>(
        "SELECT t.id, t.name, t.slug, t.created_at, t.deleted_at,
                (SELECT count(*) FROM team_members m WHERE m.team_id = t.id) AS members,
                (SELECT count(*) FROM capsules c WHERE c.team_id = t.id
                   AND c.status NOT IN ('stopped', 'error')) AS active_capsules
           FROM teams t WHERE t.deleted_at IS NULL ORDER BY t.created_at",
    )
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows))
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", responses((status = 200, body = [AdminUser]), (status = 403, body = ErrorBody)))]
pub async fn users(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<AdminUser>>> {
    p.require_admin()?;
    let rows = sqlx::query_as::<_, AdminUser>(
        "SELECT id, email, name, is_admin, status, created_at FROM users ORDER BY created_at",
    )
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows))
}

#[utoipa::path(patch, path = "/v1/admin/users/{id}", tag = "admin", params(("id" = String, Path)),
    request_body = UpdateUserRequest, responses((status = 200, body = AdminUser), (status = 404, body = ErrorBody)))]
pub async fn update_user(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<AdminUser>> {
    p.require_admin()?;
    if let Some(s) = &req.status {
        if s != "active" && s != "disabled" {
            return Err(ApiError::invalid("status must be 'active' or 'disabled'"));
        }
    }
    if p.actor_id() == id
        && (req.is_admin == Some(false) || req.status.as_deref() == Some("disabled"))
    {
        return Err(ApiError::invalid(
            "administrators cannot demote or disable themselves",
        ));
    }
    sqlx::query_as::<_, AdminUser>(
        "UPDATE users SET is_admin = COALESCE($2, is_admin), status = COALESCE($3, status)
          WHERE id = $1 RETURNING id, email, name, is_admin, status, created_at",
    )
    .bind(&id)
    .bind(req.is_admin)
    .bind(&req.status)
    .fetch_optional(&app.db)
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("user"))
}

#[utoipa::path(get, path = "/v1/admin/capsules", tag = "admin", responses((status = 200, body = [AdminCapsule]), (status = 403, body = ErrorBody)))]
pub async fn capsules(
    State(app): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<AdminCapsule>>> {
    p.require_admin()?;
    let rows = sqlx::query_as::<_, CapsuleRow>(
        "SELECT * FROM capsules WHERE status NOT IN ('stopped', 'error')
            OR updated_at > now() - interval '1 hour' ORDER BY created_at DESC",
    )
    .fetch_all(&app.db)
    .await?;
    Ok(Json(
        rows.iter()
            .map(|r| AdminCapsule {
                team_id: r.team_id.clone(),
                host_id: r.host_id.clone(),
                capsule: r.view(),
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/v1/admin/capsules/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn destroy_capsule(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    p.require_admin()?;
    let row = capsules::get_any(&app.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("capsule"))?;
    lifecycle::destroy(&app, row).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/admin/templates", tag = "admin", responses((status = 200, body = [TemplateView])))]
pub async fn templates(
    State(app): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<TemplateView>>> {
    p.require_admin()?;
    let rows = sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates ORDER BY team_id NULLS FIRST, name",
    )
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows.iter().map(TemplateRow::view).collect()))
}

fn validate_shell(shell: &str) -> ApiResult<()> {
    let ok = shell.starts_with('/') && shell.len() <= 128 && !shell.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "shell must be an absolute command such as '/bin/sh -c'",
        ))
    }
}

/// Register (or update) a platform base template.
#[utoipa::path(post, path = "/v1/admin/templates", tag = "admin", request_body = TemplateRequest,
    responses((status = 201, body = TemplateView), (status = 400, body = ErrorBody)))]
pub async fn put_template(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<TemplateRequest>,
) -> ApiResult<Response> {
    p.require_admin()?;
    super::snapshots::validate_template_name(&req.name)?;
    let agent_name = req.agent_name.clone().unwrap_or_else(|| req.name.clone());
    super::snapshots::validate_template_name(&agent_name)?;
    if let Some(s) = &req.shell {
        validate_shell(s)?;
    }
    if req.vcpus.is_some_and(|v| v == 0 || v > app.cfg.max_vcpus)
        || req
            .memory_mb
            .is_some_and(|m| !(128..=app.cfg.max_memory_mb).contains(&m))
    {
        return Err(ApiError::invalid("vcpus or memory_mb out of range"));
    }
    let env = serde_json::to_value(req.default_env.clone().unwrap_or_default())
        .map_err(ApiError::internal)?;
    let row = sqlx::query_as::<_, TemplateRow>(
        "INSERT INTO templates (id, team_id, name, agent_name, type, vcpus, memory_mb, default_user,
                                default_workdir, default_env, shell, protected)
         VALUES ($1, NULL, $2, $3, 'base', $4, $5, COALESCE($6, 'user'), $7, $8, COALESCE($9, '/bin/bash -l -c'), TRUE)
         ON CONFLICT (agent_name) DO UPDATE SET vcpus = EXCLUDED.vcpus, memory_mb = EXCLUDED.memory_mb,
             default_user = EXCLUDED.default_user, default_workdir = EXCLUDED.default_workdir,
             default_env = EXCLUDED.default_env, shell = EXCLUDED.shell
         RETURNING *",
    )
    .bind(ids::new_id("tpl-"))
    .bind(&req.name)
    .bind(&agent_name)
    .bind(req.vcpus.map(|v| v as i32))
    .bind(req.memory_mb.map(|v| v as i32))
    .bind(&req.default_user)
    .bind(&req.default_workdir)
    .bind(env)
    .bind(&req.shell)
    .fetch_one(&app.db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => ApiError::Conflict("template name taken".into()),
        _ => e.into(),
    })?;
    Ok(noted(
        (StatusCode::CREATED, Json(row.view())).into_response(),
        AuditNote::resource(row.name.clone()),
    ))
}

#[utoipa::path(delete, path = "/v1/admin/templates/{name}", tag = "admin", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_template(
    State(app): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    p.require_admin()?;
    let tpl = sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates WHERE team_id IS NULL AND name = $1",
    )
    .bind(&name)
    .fetch_optional(&app.db)
    .await?
    .ok_or_else(|| ApiError::not_found("template"))?;
    let users: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM capsules WHERE template_id = $1 AND status NOT IN ('stopped', 'error')",
    )
    .bind(&tpl.id)
    .fetch_one(&app.db)
    .await?;
    if users > 0 {
        return Err(ApiError::Conflict(format!(
            "{users} capsules still use this template"
        )));
    }
    super::snapshots::delete_everywhere(&app, &tpl).await?;
    Ok(StatusCode::NO_CONTENT)
}
