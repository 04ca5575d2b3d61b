//! Platform administration (`/v1/admin/*`, platform administrators only):
//! every team, user, template and capsule.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use warren_api_types::admin::{AdminCapsule, AdminTeam, AdminUser, UpdateUserRequest};
use warren_api_types::templates::{TemplateRequest, TemplateView};

use super::audit::{AuditNote, noted};
use super::error::{ApiResult, ErrorBody};
use super::extract::ApiJson;
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::{capsules, teams, templates, users};

#[utoipa::path(get, path = "/v1/admin/teams", tag = "admin", responses((status = 200, body = [AdminTeam]), (status = 403, body = ErrorBody)))]
pub async fn teams(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<AdminTeam>>> {
    Ok(Json(teams::list_all(&app, &p).await?))
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", responses((status = 200, body = [AdminUser]), (status = 403, body = ErrorBody)))]
pub async fn users(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<AdminUser>>> {
    Ok(Json(users::list_all(&app, &p).await?))
}

#[utoipa::path(patch, path = "/v1/admin/users/{id}", tag = "admin", params(("id" = String, Path)),
    request_body = UpdateUserRequest, responses((status = 200, body = AdminUser), (status = 404, body = ErrorBody)))]
pub async fn update_user(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<AdminUser>> {
    Ok(Json(users::update(&app, &p, &id, &req).await?))
}

#[utoipa::path(get, path = "/v1/admin/capsules", tag = "admin", responses((status = 200, body = [AdminCapsule]), (status = 403, body = ErrorBody)))]
pub async fn capsules(
    State(app): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<AdminCapsule>>> {
    Ok(Json(capsules::list_all(&app, &p).await?))
}

#[utoipa::path(delete, path = "/v1/admin/capsules/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn destroy_capsule(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    capsules::destroy_any(&app, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/admin/templates", tag = "admin", responses((status = 200, body = [TemplateView])))]
pub async fn templates(
    State(app): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<TemplateView>>> {
    Ok(Json(templates::list_all(&app, &p).await?))
}

/// Register (or update) a platform base template.
#[utoipa::path(post, path = "/v1/admin/templates", tag = "admin", request_body = TemplateRequest,
    responses((status = 201, body = TemplateView), (status = 400, body = ErrorBody)))]
pub async fn put_template(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<TemplateRequest>,
) -> ApiResult<Response> {
    let row = templates::put_platform(&app, &p, &req).await?;
    let note = AuditNote::resource(row.name.clone());
    Ok(noted(
        (StatusCode::CREATED, Json(row.view())).into_response(),
        note,
    ))
}

#[utoipa::path(delete, path = "/v1/admin/templates/{name}", tag = "admin", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_template(
    State(app): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    templates::delete_platform(&app, &p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
