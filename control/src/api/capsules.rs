//! Capsule lifecycle routes (`/v1/capsules`), scoped to the caller's team.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::OptionalJson;
use crate::app::AppState;
use crate::audit::{AuditNote, noted};
use crate::auth::Principal;
use crate::db::capsules::{self, CapsuleRow, CapsuleView};
use crate::error::{ApiResult, ErrorBody};
use crate::lifecycle::{self, CreateSpec};
use crate::status::CapsuleStatus;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCapsuleRequest {
    /// Template name; the server's default when omitted.
    pub template: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
    /// Idle seconds before auto-pause; 0 never pauses; 1-59 become 60.
    pub timeout_sec: Option<u32>,
    pub metadata: Option<HashMap<String, String>>,
}

/// Create a capsule. Answers once it runs (202 with status `running`), or
/// with status `starting` if the host is slow to confirm.
#[utoipa::path(post, path = "/v1/capsules", tag = "capsules", request_body = CreateCapsuleRequest,
    responses((status = 202, body = CapsuleView), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    OptionalJson(req): OptionalJson<CreateCapsuleRequest>,
) -> ApiResult<Response> {
    let spec = CreateSpec {
        template: req.template,
        vcpus: req.vcpus,
        memory_mb: req.memory_mb,
        timeout_sec: req.timeout_sec,
        metadata: req.metadata,
    };
    let row = lifecycle::create(&app, &p.team_id, spec).await?;
    Ok(noted(
        (StatusCode::ACCEPTED, Json(row.view())).into_response(),
        AuditNote::resource(row.id),
    ))
}

/// The team's capsules (destroyed ones from the last hour included).
#[utoipa::path(get, path = "/v1/capsules", tag = "capsules", responses((status = 200, body = [CapsuleView])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<CapsuleView>>> {
    let rows = sqlx::query_as::<_, CapsuleRow>(
        "SELECT * FROM capsules WHERE team_id = $1
            AND (status NOT IN ('stopped', 'error') OR updated_at > now() - interval '1 hour')
          ORDER BY created_at DESC",
    )
    .bind(&p.team_id)
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows.iter().map(CapsuleRow::view).collect()))
}

/// One capsule.
#[utoipa::path(get, path = "/v1/capsules/{id}", tag = "capsules", params(("id" = String, Path)),
    responses((status = 200, body = CapsuleView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CapsuleView>> {
    Ok(Json(capsules::get(&app.db, &p.team_id, &id).await?.view()))
}

/// Destroy a capsule: 204 once the host confirmed, 202 while it retries.
#[utoipa::path(delete, path = "/v1/capsules/{id}", tag = "capsules", params(("id" = String, Path)),
    responses((status = 204), (status = 202), (status = 404, body = ErrorBody)))]
pub async fn destroy(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let row = capsules::get(&app.db, &p.team_id, &id).await?;
    let row = lifecycle::destroy(&app, row).await?;
    Ok(if row.status() == CapsuleStatus::Stopped {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    })
}

/// Pause a running capsule.
#[utoipa::path(post, path = "/v1/capsules/{id}/pause", tag = "capsules", params(("id" = String, Path)),
    responses((status = 202, body = CapsuleView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pause(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<CapsuleView>)> {
    let row = capsules::get(&app.db, &p.team_id, &id).await?;
    let row = lifecycle::pause(&app, row).await?;
    Ok((StatusCode::ACCEPTED, Json(row.view())))
}

/// Resume a paused capsule on the host that holds it.
#[utoipa::path(post, path = "/v1/capsules/{id}/resume", tag = "capsules", params(("id" = String, Path)),
    responses((status = 202, body = CapsuleView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn resume(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<CapsuleView>)> {
    let row = capsules::get(&app.db, &p.team_id, &id).await?;
    let row = lifecycle::resume(&app, row).await?;
    Ok((StatusCode::ACCEPTED, Json(row.view())))
}

/// Reset the idle timer.
#[utoipa::path(post, path = "/v1/capsules/{id}/ping", tag = "capsules", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn ping(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let row = capsules::get(&app.db, &p.team_id, &id).await?;
    lifecycle::ping(&app, &row).await?;
    Ok(StatusCode::NO_CONTENT)
}
