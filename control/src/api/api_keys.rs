//! API keys of the caller's team: create (the key is in this response
//! only), list, revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use warren_api_types::accounts::{CreateKeyRequest, KeyResponse};

use super::audit::{AuditNote, noted};
use super::error::{ApiResult, ErrorBody};
use super::extract::OptionalJson;
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::keys;

/// Create an API key for the team (user sessions only).
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateKeyRequest,
    responses((status = 201, body = KeyResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    OptionalJson(req): OptionalJson<CreateKeyRequest>,
) -> ApiResult<Response> {
    let key = keys::create(&app, &p, &req).await?;
    let note = AuditNote::resource(key.id.clone());
    Ok(noted(
        (StatusCode::CREATED, Json(key)).into_response(),
        note,
    ))
}

/// The team's keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = [KeyResponse])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<KeyResponse>>> {
    Ok(Json(keys::list(&app, &p).await?))
}

/// Revoke a key: it stops working at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    keys::revoke(&app, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
