//! Teams, members and roles (`/v1/teams`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use warren_api_types::teams::{
    AddMemberRequest, RoleRequest, TeamDetail, TeamMember, TeamNameRequest, TeamWithRole,
};

use super::audit::{AuditNote, noted};
use super::error::{ApiResult, ErrorBody};
use super::extract::ApiJson;
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::teams;

/// The audit note of a call about team `team_id` (and `resource`).
fn note(team_id: &str, resource: &str) -> AuditNote {
    AuditNote {
        team_id: Some(team_id.into()),
        resource_id: Some(resource.into()),
        ..AuditNote::default()
    }
}

fn done(team_id: &str) -> Response {
    noted(
        StatusCode::NO_CONTENT.into_response(),
        note(team_id, team_id),
    )
}

/// Teams the caller belongs to, with their role.
#[utoipa::path(get, path = "/v1/teams", tag = "teams", responses((status = 200, body = [TeamWithRole])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<TeamWithRole>>> {
    Ok(Json(teams::list(&app, &p).await?))
}

/// Create a team; the caller owns it.
#[utoipa::path(post, path = "/v1/teams", tag = "teams", request_body = TeamNameRequest,
    responses((status = 201, body = TeamWithRole), (status = 400, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<TeamNameRequest>,
) -> ApiResult<Response> {
    let team = teams::create(&app, &p, &req.name).await?;
    let note = note(&team.id, &team.id);
    Ok(noted(
        (StatusCode::CREATED, Json(team)).into_response(),
        note,
    ))
}

/// A team the caller belongs to, with its members.
#[utoipa::path(get, path = "/v1/teams/{id}", tag = "teams", params(("id" = String, Path)),
    responses((status = 200, body = TeamDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<TeamDetail>> {
    Ok(Json(teams::get(&app, &p, &id).await?))
}

/// Rename (admin or owner).
#[utoipa::path(patch, path = "/v1/teams/{id}", tag = "teams", params(("id" = String, Path)),
    request_body = TeamNameRequest, responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn rename(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TeamNameRequest>,
) -> ApiResult<Response> {
    teams::rename(&app, &p, &id, &req.name).await?;
    Ok(done(&id))
}

/// Delete the team (owner only): its capsules are destroyed, its keys stop
/// working, its records stay.
#[utoipa::path(delete, path = "/v1/teams/{id}", tag = "teams", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    teams::delete(&app, &p, &id).await?;
    Ok(done(&id))
}

/// Members and their roles.
#[utoipa::path(get, path = "/v1/teams/{id}/members", tag = "teams", params(("id" = String, Path)),
    responses((status = 200, body = [TeamMember])))]
pub async fn list_members(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<TeamMember>>> {
    Ok(Json(teams::members(&app, &p, &id).await?))
}

/// Add an existing user by email (admin or owner).
#[utoipa::path(post, path = "/v1/teams/{id}/members", tag = "teams", params(("id" = String, Path)),
    request_body = AddMemberRequest,
    responses((status = 201, body = TeamMember), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_member(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AddMemberRequest>,
) -> ApiResult<Response> {
    let member = teams::add_member(&app, &p, &id, &req.email, req.role.as_deref()).await?;
    let note = note(&id, &member.user_id);
    Ok(noted(
        (StatusCode::CREATED, Json(member)).into_response(),
        note,
    ))
}

/// Change a member's role (admin or owner; the owner's role is fixed).
#[utoipa::path(patch, path = "/v1/teams/{id}/members/{uid}", tag = "teams",
    params(("id" = String, Path), ("uid" = String, Path)), request_body = RoleRequest,
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_member(
    State(app): State<AppState>,
    p: Principal,
    Path((id, uid)): Path<(String, String)>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> ApiResult<Response> {
    teams::set_role(&app, &p, &id, &uid, &req.role).await?;
    Ok(done(&id))
}

/// Remove a member (admin or owner; not the owner).
#[utoipa::path(delete, path = "/v1/teams/{id}/members/{uid}", tag = "teams",
    params(("id" = String, Path), ("uid" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_member(
    State(app): State<AppState>,
    p: Principal,
    Path((id, uid)): Path<(String, String)>,
) -> ApiResult<Response> {
    teams::remove_member(&app, &p, &id, &uid).await?;
    Ok(done(&id))
}

/// Leave a team (the owner cannot).
#[utoipa::path(post, path = "/v1/teams/{id}/leave", tag = "teams", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn leave(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    teams::leave(&app, &p, &id).await?;
    Ok(done(&id))
}
