//! Hosts (`/v1/hosts`): records, registration, heartbeats, tags. The
//! agent's side of registration and heartbeats is described in
//! [`crate::domain::hosts`].

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use warren_api_types::hosts::{
    CreateHostRequest, CreateHostResponse, DeleteQuery, Host, RegisterRequest, RegisterResponse,
    TagRequest,
};

use super::audit::{AuditNote, noted};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, read_limited};
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::hosts;

/// Create a host record and its one-time registration token.
#[utoipa::path(post, path = "/v1/hosts", tag = "hosts", request_body = CreateHostRequest,
    responses((status = 201, body = CreateHostResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<CreateHostRequest>,
) -> ApiResult<Response> {
    let created = hosts::create(&app, &p, &req).await?;
    let note = AuditNote::resource(created.host.id.clone());
    Ok(noted(
        (StatusCode::CREATED, Json(created)).into_response(),
        note,
    ))
}

/// Hosts the caller may see.
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", responses((status = 200, body = [Host])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<Host>>> {
    Ok(Json(hosts::list(&app, &p).await?))
}

#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Host>> {
    Ok(Json(hosts::get(&app, &p, &id).await?))
}

/// Remove a host. With capsules on it: 409 listing them, unless `force=true`
/// (they are destroyed first).
#[utoipa::path(delete, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path), ("force" = Option<bool>, Query)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    hosts::delete(&app, &p, &id, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new registration token for a host that has not registered yet.
#[utoipa::path(post, path = "/v1/hosts/{id}/token", tag = "hosts", params(("id" = String, Path)),
    responses((status = 201, body = CreateHostResponse), (status = 409, body = ErrorBody)))]
pub async fn regenerate_token(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<CreateHostResponse>)> {
    let created = hosts::regenerate_token(&app, &p, &id).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Called by the agent on first start, with its one-time token.
#[utoipa::path(post, path = "/v1/hosts/register", tag = "hosts", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn register(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<Response> {
    let (body, team) = hosts::register(&app, &req).await?;
    // Regular hosts have no team to file the audit row under.
    let id = body.host.id.clone();
    let note = AuditNote {
        team_id: team,
        resource_id: Some(id.clone()),
        actor: Some(("host".into(), id, "agent".into())),
        metadata: None,
    };
    Ok(noted(
        (StatusCode::CREATED, Json(body)).into_response(),
        note,
    ))
}

/// The agent's liveness signal.
#[utoipa::path(post, path = "/v1/hosts/{id}/heartbeat", tag = "hosts", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn heartbeat(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<StatusCode> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let token = header("x-host-token")
        .or_else(|| header("authorization")?.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Unauthorized("X-Host-Token required".into()))?
        .to_string();
    let _ = read_limited(body, 64 << 10).await?;
    hosts::heartbeat(&app, &id, &token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/hosts/{id}/tags", tag = "hosts", params(("id" = String, Path)),
    responses((status = 200, body = [String])))]
pub async fn list_tags(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(hosts::tags(&app, &p, &id).await?))
}

#[utoipa::path(post, path = "/v1/hosts/{id}/tags", tag = "hosts", params(("id" = String, Path)),
    request_body = TagRequest, responses((status = 204), (status = 400, body = ErrorBody)))]
pub async fn add_tag(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TagRequest>,
) -> ApiResult<StatusCode> {
    hosts::add_tag(&app, &p, &id, &req.tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/hosts/{id}/tags/{tag}", tag = "hosts",
    params(("id" = String, Path), ("tag" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_tag(
    State(app): State<AppState>,
    p: Principal,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    hosts::remove_tag(&app, &p, &id, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}
