//! API keys of the caller's team: create (the key is in this response
//! only), list, revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;

use super::extract::OptionalJson;
use crate::app::AppState;
use crate::audit::{AuditNote, noted};
use crate::auth::{Principal, Role, apikey};
use crate::db::capsules::ts;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ids;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Defaults to "Unnamed API Key".
    pub name: Option<String>,
    /// The key stops working after this many days (unset: never).
    pub expires_in_days: Option<u32>,
    /// Or at this instant (RFC 3339).
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at: String,
    pub last_used: Option<String>,
    pub expires_at: Option<String>,
    pub revoked: bool,
    /// The key itself: only in the response that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, FromRow)]
struct KeyRow {
    id: String,
    team_id: String,
    name: String,
    key_prefix: String,
    created_at: DateTime<Utc>,
    last_used: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl KeyRow {
    fn view(self, key: Option<String>) -> KeyResponse {
        KeyResponse {
            id: self.id,
            team_id: self.team_id,
            name: self.name,
            key_prefix: self.key_prefix,
            created_at: ts(self.created_at),
            last_used: self.last_used.map(ts),
            expires_at: self.expires_at.map(ts),
            revoked: self.revoked_at.is_some(),
            key,
        }
    }
}

/// Makes a key for `team_id`; returns (id, key).
pub async fn create_key(
    app: &AppState,
    team_id: &str,
    user_id: Option<&str>,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> ApiResult<(String, String)> {
    let (key, hash) = apikey::generate();
    let id = ids::new_id("key-");
    sqlx::query(
        "INSERT INTO api_keys (id, team_id, created_by, name, key_prefix, key_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(team_id)
    .bind(user_id)
    .bind(name)
    .bind(apikey::display_prefix(&key))
    .bind(hash)
    .bind(expires_at)
    .execute(&app.db)
    .await?;
    Ok((id, key))
}

/// Create an API key for the team (user sessions only).
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateKeyRequest,
    responses((status = 201, body = KeyResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    OptionalJson(req): OptionalJson<CreateKeyRequest>,
) -> ApiResult<Response> {
    let user_id = p.require_user()?.to_string();
    let name = match req.name.as_deref() {
        Some(n) => super::auth::validate_name(n, "name")?,
        None => "Unnamed API Key".into(),
    };
    let expires_at = match (req.expires_in_days, req.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give expires_in_days or expires_at, not both",
            ));
        }
        (Some(0), None) => return Err(ApiError::invalid("expires_in_days must be positive")),
        (Some(d), None) if d > 3650 => {
            return Err(ApiError::invalid("expires_in_days must be at most 3650"));
        }
        (Some(d), None) => Some(Utc::now() + chrono::Duration::days(i64::from(d))),
        (None, Some(t)) if t <= Utc::now() => {
            return Err(ApiError::invalid("expires_at is in the past"));
        }
        (None, t) => t,
    };
    let (id, key) = create_key(&app, &p.team_id, Some(&user_id), &name, expires_at).await?;
    let row = sqlx::query_as::<_, KeyRow>("SELECT * FROM api_keys WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.db)
        .await?;
    Ok(noted(
        (StatusCode::CREATED, Json(row.view(Some(key)))).into_response(),
        AuditNote::resource(id),
    ))
}

/// The team's keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = [KeyResponse])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<KeyResponse>>> {
    let rows = sqlx::query_as::<_, KeyRow>(
        "SELECT * FROM api_keys WHERE team_id = $1 ORDER BY created_at DESC",
    )
    .bind(&p.team_id)
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows.into_iter().map(|r| r.view(None)).collect()))
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
    let user_id = p.require_user()?.to_string();
    let created_by: Option<Option<String>> = sqlx::query_scalar(
        "SELECT created_by FROM api_keys WHERE id = $1 AND team_id = $2 AND revoked_at IS NULL",
    )
    .bind(&id)
    .bind(&p.team_id)
    .fetch_optional(&app.db)
    .await?;
    let created_by = created_by.ok_or_else(|| ApiError::not_found("API key"))?;
    if created_by.as_deref() != Some(user_id.as_str()) {
        p.require_role(Role::Admin)?;
    }
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND team_id = $2")
        .bind(&id)
        .bind(&p.team_id)
        .execute(&app.db)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
