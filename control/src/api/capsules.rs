//! Capsule routes (`/v1/capsules`), scoped to the caller's team: lifecycle
//! and usage.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use warren_api_types::capsules::{
    CapsuleMetrics, CapsuleStats, CapsuleView, CreateCapsuleRequest, RangeQuery, UsageQuery,
    UsageResponse,
};
use warren_api_types::status::CapsuleStatus;

use super::audit::{AuditNote, noted};
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiQuery, OptionalJson};
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::capsules::{self, usage};

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
    let row = capsules::create(&app, &p, req).await?;
    Ok(noted(
        (StatusCode::ACCEPTED, Json(row.view())).into_response(),
        AuditNote::resource(row.id),
    ))
}

/// The team's capsules (destroyed ones from the last hour included).
#[utoipa::path(get, path = "/v1/capsules", tag = "capsules", responses((status = 200, body = [CapsuleView])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<CapsuleView>>> {
    let rows = capsules::list(&app, &p).await?;
    Ok(Json(rows.iter().map(|r| r.view()).collect()))
}

/// One capsule.
#[utoipa::path(get, path = "/v1/capsules/{id}", tag = "capsules", params(("id" = String, Path)),
    responses((status = 200, body = CapsuleView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CapsuleView>> {
    Ok(Json(capsules::get(&app, &p, &id).await?.view()))
}

/// Destroy a capsule: 204 once the host confirmed, 202 while it retries.
#[utoipa::path(delete, path = "/v1/capsules/{id}", tag = "capsules", params(("id" = String, Path)),
    responses((status = 204), (status = 202), (status = 404, body = ErrorBody)))]
pub async fn destroy(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let row = capsules::destroy(&app, &p, &id).await?;
    Ok(if row.status == CapsuleStatus::Stopped {
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
    let row = capsules::pause(&app, &p, &id).await?;
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
    let row = capsules::resume(&app, &p, &id).await?;
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
    capsules::ping(&app, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Capsule counts now, their peaks over 30 days, and a chart series.
#[utoipa::path(get, path = "/v1/capsules/stats", tag = "capsules", params(("range" = Option<String>, Query)),
    responses((status = 200, body = CapsuleStats)))]
pub async fn stats(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<CapsuleStats>> {
    Ok(Json(usage::stats(&app, &p, q.range).await?))
}

/// Per-day CPU minutes (vCPUs × running minutes) and memory MiB-minutes.
#[utoipa::path(get, path = "/v1/capsules/usage", tag = "capsules",
    params(("from" = Option<String>, Query), ("to" = Option<String>, Query)),
    responses((status = 200, body = UsageResponse)))]
pub async fn usage(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<UsageResponse>> {
    let r = usage::daily(&app, &p, q.from.as_deref(), q.to.as_deref()).await?;
    Ok(Json(r))
}

/// A capsule's sampled CPU, memory and disk use.
#[utoipa::path(get, path = "/v1/capsules/{id}/metrics", tag = "capsules",
    params(("id" = String, Path), ("range" = Option<String>, Query)),
    responses((status = 200, body = CapsuleMetrics)))]
pub async fn metrics(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<CapsuleMetrics>> {
    Ok(Json(usage::metrics(&app, &p, &id, q.range).await?))
}
