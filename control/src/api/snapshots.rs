//! Snapshot templates (`/v1/snapshots`): make one from a capsule, list the
//! templates the team can use, delete the team's own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use warren_api_types::templates::{CreateSnapshotRequest, OverwriteQuery, TemplateView, TypeQuery};

use super::audit::{AuditNote, noted};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::templates;

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
    let tpl = templates::create_snapshot(&app, &p, &req.sandbox_id, req.name, overwrite).await?;
    let note = AuditNote::resource(tpl.name.clone());
    Ok(noted(
        (StatusCode::CREATED, Json(tpl.view())).into_response(),
        note,
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
    Ok(Json(templates::list(&app, &p, q.kind.as_deref()).await?))
}

/// Delete one of the team's snapshot templates from its host and here.
#[utoipa::path(delete, path = "/v1/snapshots/{name}", tag = "snapshots", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    templates::delete_snapshot(&app, &p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
