//! Snapshot templates (`/v1/snapshots`): make one from a capsule, list the
//! templates the team can use, delete the team's own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery};
use crate::agent_client::rpc_to_api;
use crate::app::AppState;
use crate::audit::{AuditNote, noted};
use crate::auth::Principal;
use crate::db::capsules;
use crate::db::hosts;
use crate::db::templates::{TemplateRow, TemplateView};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::events::{self, Notification};
use crate::{ids, lifecycle};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// The capsule to snapshot (running or paused).
    pub sandbox_id: String,
    /// Template name; generated when omitted.
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OverwriteQuery {
    pub overwrite: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TypeQuery {
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

pub fn validate_template_name(name: &str) -> ApiResult<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "template name must match [a-zA-Z0-9][a-zA-Z0-9._-]{0,63}",
        ))
    }
}

/// Turn a capsule into a template of the team.
#[utoipa::path(post, path = "/v1/snapshots", tag = "snapshots", request_body = CreateSnapshotRequest,
    params(("overwrite" = Option<String>, Query)),
    responses((status = 201, body = TemplateView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<OverwriteQuery>,
    ApiJson(req): ApiJson<CreateSnapshotRequest>,
) -> ApiResult<Response> {
    let overwrite = match q.overwrite.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("overwrite must be 'true' or 'false'")),
    };
    let name = req.name.unwrap_or_else(|| ids::new_id("snapshot-"));
    validate_template_name(&name)?;
    let row = capsules::get(&app.db, &p.team_id, &req.sandbox_id).await?;
    let tpl = lifecycle::snapshot(&app, row, &name, overwrite).await?;
    Ok(noted(
        (StatusCode::CREATED, Json(tpl.view())).into_response(),
        AuditNote::resource(name),
    ))
}

/// Templates the team can use: its snapshots and the platform's.
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots", params(("type" = Option<String>, Query)),
    responses((status = 200, body = [TemplateView])))]
pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<TypeQuery>,
) -> ApiResult<Json<Vec<TemplateView>>> {
    if let Some(k) = &q.kind {
        if k != "base" && k != "snapshot" {
            return Err(ApiError::invalid("type must be 'base' or 'snapshot'"));
        }
    }
    let rows = sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates WHERE (team_id = $1 OR team_id IS NULL)
            AND ($2::TEXT IS NULL OR type = $2) ORDER BY team_id NULLS FIRST, name",
    )
    .bind(&p.team_id)
    .bind(&q.kind)
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows.iter().map(TemplateRow::view).collect()))
}

/// Delete one of the team's snapshot templates from its host and here.
#[utoipa::path(delete, path = "/v1/snapshots/{name}", tag = "snapshots", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let tpl = sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates WHERE name = $1 AND (team_id = $2 OR team_id IS NULL)
          ORDER BY team_id NULLS LAST LIMIT 1",
    )
    .bind(&name)
    .bind(&p.team_id)
    .fetch_optional(&app.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("template '{name}' not found")))?;
    if tpl.team_id.is_none() {
        return Err(ApiError::Forbidden(
            "platform templates cannot be deleted here".into(),
        ));
    }
    delete_everywhere(&app, &tpl).await?;
    let n = Notification {
        team_id: tpl.team_id.clone(),
        event: "template.snapshot.delete".into(),
        data: events::frame(
            "template.snapshot.delete",
            Some("success"),
            ("template", &name),
            serde_json::json!({}),
            None,
        ),
    };
    let _ = events::publish(&app.db, &n).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a template from every host holding it, then its row.
pub async fn delete_everywhere(app: &AppState, tpl: &TemplateRow) -> ApiResult<()> {
    let holders: Vec<String> =
        sqlx::query_scalar("SELECT host_id FROM host_templates WHERE agent_name = $1")
            .bind(&tpl.agent_name)
            .fetch_all(&app.db)
            .await?;
    for host_id in holders {
        let host = hosts::conn(&app.db, &host_id).await?;
        match app.agent(&host)?.delete_template(&tpl.agent_name).await {
            Ok(()) => {}
            Err(e) if e.code == warren_proto::connect::Code::NotFound => {}
            Err(e) => {
                return Err(match rpc_to_api(e) {
                    ApiError::HostUnavailable(m) => {
                        ApiError::Conflict(format!("delete failed: {m}"))
                    }
                    other => other,
                });
            }
        }
        sqlx::query("DELETE FROM host_templates WHERE host_id = $1 AND agent_name = $2")
            .bind(&host_id)
            .bind(&tpl.agent_name)
            .execute(&app.db)
            .await?;
    }
    sqlx::query("DELETE FROM templates WHERE id = $1")
        .bind(&tpl.id)
        .execute(&app.db)
        .await?;
    Ok(())
}
