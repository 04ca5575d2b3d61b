//! Hosts: records made by administrators (regular) or team owners (BYOC),
//! one-time registration tokens, the agent's register and heartbeat calls,
//! tags, and removal.
//!
//! The agent's side, exactly:
//! 1. `POST /v1/hosts/register` with `{"token": <registration token>,
//!    "address": "<ip:port of its agent.v1 RPC>", "agent_token": "<the
//!    bearer token it accepts>"?, "proxy_address": "<ip:port of its data
//!    plane>"?, "arch", "cpu_cores", "memory_mb", "disk_gb"}` (no other
//!    auth). Answer 201 `{"host": {...}, "token": <host token>,
//!    "agent_token": <token control will present>}`. Without `agent_token`
//!    in the request, control makes one and the agent must accept it.
//! 2. Every few seconds (well under the heartbeat timeout, 30 s by
//!    default): `POST /v1/hosts/{id}/heartbeat` with `X-Host-Token: <host
//!    token>` (or `Authorization: Bearer`), any JSON body or none. 204.
//!
//! Control pulls everything else (capacity, templates, proxy address,
//! capsules, metrics) with GetHostInfo / ListCapsules / GetMetrics.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery, read_limited};
use crate::app::AppState;
use crate::audit::{AuditNote, noted};
use crate::auth::{Principal, Role};
use crate::db::capsules::{CapsuleRow, ser_opt_ts, ser_ts};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::events::{self, Notification};
use crate::{ids, lifecycle};

/// Registration tokens are valid this long.
const REGISTRATION_TTL_HOURS: i64 = 1;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHostRequest {
    /// `regular` (shared, administrators only) or `byoc` (one team's).
    #[serde(rename = "type")]
    pub kind: String,
    pub team_id: Option<String>,
    pub provider: Option<String>,
    pub availability_zone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreateHostResponse {
    pub host: Host,
    /// One-time, valid for an hour.
    pub registration_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub token: String,
    /// `ip:port` (or URL) of the agent's lifecycle RPC.
    pub address: String,
    pub proxy_address: Option<String>,
    /// The bearer token the agent accepts; made by control when absent.
    pub agent_token: Option<String>,
    pub arch: Option<String>,
    pub cpu_cores: Option<u32>,
    pub memory_mb: Option<u64>,
    pub disk_gb: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    pub host: Host,
    /// Send as `X-Host-Token` on heartbeats.
    pub token: String,
    /// What control presents to the agent as `Authorization: Bearer`.
    pub agent_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagRequest {
    pub tag: String,
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    pub force: bool,
}

/// A host as the API shows it (and as it is read from the database).
#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct Host {
    pub id: String,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    pub team_id: Option<String>,
    pub provider: Option<String>,
    pub availability_zone: Option<String>,
    pub arch: Option<String>,
    pub cpu_cores: Option<i32>,
    pub memory_mb: Option<i64>,
    pub disk_gb: Option<i32>,
    pub address: Option<String>,
    pub proxy_address: Option<String>,
    pub backend: Option<String>,
    pub status: String,
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>)]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub updated_at: DateTime<Utc>,
    pub tags: Vec<String>,
}

const HOST_SELECT: &str = "SELECT h.id, h.type, h.team_id, h.provider, h.availability_zone, h.arch,
        h.cpu_cores, h.memory_mb, h.disk_gb, h.address, h.proxy_address, h.backend, h.status,
        h.last_heartbeat_at, h.created_by, h.created_at, h.updated_at,
        ARRAY(SELECT tag FROM host_tags t WHERE t.host_id = h.id ORDER BY tag) AS tags
   FROM hosts h WHERE h.deleted_at IS NULL";

/// A host the caller may see: any for platform admins, else their team's.
async fn visible_host(app: &AppState, p: &Principal, id: &str) -> ApiResult<Host> {
    sqlx::query_as::<_, Host>(&format!(
        "{HOST_SELECT} AND h.id = $1 AND ($2 OR h.team_id = $3)"
    ))
    .bind(id)
    .bind(p.is_admin)
    .bind(&p.team_id)
    .fetch_optional(&app.db)
    .await?
    .ok_or_else(|| ApiError::not_found("host"))
}

/// Administrators manage every host; team owners and admins their BYOC ones.
fn require_manage(p: &Principal, host_team: Option<&str>) -> ApiResult<()> {
    if p.is_admin {
        return Ok(());
    }
    match host_team {
        Some(t) if t == p.team_id => p.require_role(Role::Admin),
        _ => Err(ApiError::Forbidden("platform administrators only".into())),
    }
}

fn check_short(field: &str, v: &Option<String>) -> ApiResult<()> {
    match v {
        Some(s) if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) => Err(
            ApiError::invalid(format!("{field} must be 1 to 64 printable characters")),
        ),
        _ => Ok(()),
    }
}

async fn issue_registration(app: &AppState, id: &str) -> ApiResult<String> {
    let token = format!("wrt_{}", ids::new_secret(40));
    sqlx::query(
        "UPDATE hosts SET registration_token_hash = $2,
                registration_expires_at = now() + make_interval(hours => $3::INT), updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(ids::token_hash(&token))
    .bind(REGISTRATION_TTL_HOURS as i32)
    .execute(&app.db)
    .await?;
    Ok(token)
}

/// Create a host record and its one-time registration token.
#[utoipa::path(post, path = "/v1/hosts", tag = "hosts", request_body = CreateHostRequest,
    responses((status = 201, body = CreateHostResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<CreateHostRequest>,
) -> ApiResult<Response> {
    check_short("provider", &req.provider)?;
    check_short("availability_zone", &req.availability_zone)?;
    let team = match req.kind.as_str() {
        "regular" => {
            p.require_admin()?;
            if req.team_id.is_some() {
                return Err(ApiError::invalid("regular hosts belong to no team"));
            }
            None
        }
        "byoc" => {
            let team = req.team_id.clone().unwrap_or_else(|| p.team_id.clone());
            if team != p.team_id && !p.is_admin {
                return Err(ApiError::Forbidden(
                    "BYOC hosts can only be added to your own team".into(),
                ));
            }
            require_manage(&p, Some(&team))?;
            Some(team)
        }
        _ => return Err(ApiError::invalid("type must be 'regular' or 'byoc'")),
    };
    let id = ids::new_id("host-");
    sqlx::query(
        "INSERT INTO hosts (id, type, team_id, provider, availability_zone, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&req.kind)
    .bind(&team)
    .bind(&req.provider)
    .bind(&req.availability_zone)
    .bind(p.actor_id())
    .execute(&app.db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => ApiError::not_found("team"),
        _ => e.into(),
    })?;
    let token = issue_registration(&app, &id).await?;
    let host = visible_host(&app, &p, &id).await?;
    Ok(noted(
        (
            StatusCode::CREATED,
            Json(CreateHostResponse {
                host,
                registration_token: token,
            }),
        )
            .into_response(),
        AuditNote::resource(id),
    ))
}

/// Hosts the caller may see.
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", responses((status = 200, body = [Host])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<Host>>> {
    let rows = sqlx::query_as::<_, Host>(&format!(
        "{HOST_SELECT} AND ($1 OR h.team_id = $2) ORDER BY h.created_at"
    ))
    .bind(p.is_admin)
    .bind(&p.team_id)
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows))
}

#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path)),
    responses((status = 200, body = Host), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Host>> {
    Ok(Json(visible_host(&app, &p, &id).await?))
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
    let host = visible_host(&app, &p, &id).await?;
    require_manage(&p, host.team_id.as_deref())?;
    let live = sqlx::query_as::<_, CapsuleRow>(
        "SELECT * FROM capsules WHERE host_id = $1 AND status NOT IN ('stopped', 'error')",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await?;
    if !live.is_empty() && !q.force {
        return Err(ApiError::HostHasCapsules {
            message: "host has capsules; use ?force=true to destroy them and delete the host"
                .into(),
            capsule_ids: live.iter().map(|c| c.id.clone()).collect(),
        });
    }
    for row in live {
        let cid = row.id.clone();
        if let Err(e) = lifecycle::destroy(&app, row).await {
            tracing::warn!(capsule = %cid, error = %e, "destroying capsule of deleted host");
        }
    }
    sqlx::query(
        "UPDATE hosts SET deleted_at = now(), status = 'offline', host_token_hash = NULL,
                registration_token_hash = NULL, updated_at = now() WHERE id = $1",
    )
    .bind(&id)
    .execute(&app.db)
    .await?;
    // Capsules still recorded on it (their destroy was not confirmed) went
    // with it.
    sqlx::query(
        "UPDATE capsules SET status = 'stopped', stopped_at = now(), lease_until = NULL, updated_at = now(),
                error = 'host deleted'
          WHERE host_id = $1 AND status NOT IN ('stopped', 'error')",
    )
    .bind(&id)
    .execute(&app.db)
    .await?;
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
    let host = visible_host(&app, &p, &id).await?;
    require_manage(&p, host.team_id.as_deref())?;
    if host.status != "pending" {
        return Err(ApiError::InvalidState("host has already registered".into()));
    }
    let token = issue_registration(&app, &id).await?;
    let host = visible_host(&app, &p, &id).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateHostResponse {
            host,
            registration_token: token,
        }),
    ))
}

/// Called by the agent on first start, with its one-time token.
#[utoipa::path(post, path = "/v1/hosts/register", tag = "hosts", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn register(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<Response> {
    if req.address.trim().is_empty() || req.address.len() > 256 {
        return Err(ApiError::invalid(
            "address is required (ip:port of the agent RPC)",
        ));
    }
    if let Some(t) = &req.agent_token {
        if t.len() < 16 || t.len() > 256 {
            return Err(ApiError::invalid(
                "agent_token must be 16 to 256 characters",
            ));
        }
    }
    let host_token = format!("wht_{}", ids::new_secret(40));
    let agent_token = req
        .agent_token
        .clone()
        .unwrap_or_else(|| ids::new_secret(40));
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE hosts SET status = 'online', address = $2, proxy_address = $3, agent_token = $4,
                host_token_hash = $5, arch = $6, cpu_cores = $7, memory_mb = $8, disk_gb = $9,
                registration_token_hash = NULL, registration_expires_at = NULL,
                last_heartbeat_at = now(), next_sync_at = now(), updated_at = now()
          WHERE registration_token_hash = $1 AND registration_expires_at > now() AND deleted_at IS NULL
          RETURNING id, team_id",
    )
    .bind(ids::token_hash(&req.token))
    .bind(req.address.trim())
    .bind(&req.proxy_address)
    .bind(&agent_token)
    .bind(ids::token_hash(&host_token))
    .bind(&req.arch)
    .bind(req.cpu_cores.map(|c| c as i32))
    .bind(req.memory_mb.map(|m| m as i64))
    .bind(req.disk_gb.map(|d| d as i32))
    .fetch_optional(&app.db)
    .await?;
    let (id, team) =
        row.ok_or_else(|| ApiError::Unauthorized("invalid or expired registration token".into()))?;
    host_event(&app, &id, team.clone(), "host.up").await;
    let host = sqlx::query_as::<_, Host>(&format!("{HOST_SELECT} AND h.id = $1"))
        .bind(&id)
        .fetch_one(&app.db)
        .await?;
    let body = RegisterResponse {
        host,
        token: host_token,
        agent_token,
    };
    // Regular hosts have no team to file the audit row under.
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

pub async fn host_event(app: &AppState, host_id: &str, team_id: Option<String>, event: &str) {
    let n = Notification {
        team_id,
        event: event.into(),
        data: events::frame(event, None, ("host", host_id), serde_json::json!({}), None),
    };
    if let Err(e) = events::publish(&app.db, &n).await {
        tracing::warn!(error = %e, "publishing host event");
    }
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
    let token = headers
        .get("x-host-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
        })
        .ok_or_else(|| ApiError::Unauthorized("X-Host-Token required".into()))?;
    let _ = read_limited(body, 64 << 10).await?;
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
        "WITH prev AS (SELECT id, status FROM hosts WHERE host_token_hash = $1 AND deleted_at IS NULL FOR UPDATE)
         UPDATE hosts h SET last_heartbeat_at = now(), status = 'online', updated_at = now(),
                next_sync_at = CASE WHEN prev.status = 'unreachable' THEN now() ELSE h.next_sync_at END
           FROM prev WHERE h.id = prev.id
         RETURNING h.id, prev.status, h.team_id",
    )
    .bind(ids::token_hash(&token))
    .fetch_optional(&app.db)
    .await?;
    let (host_id, prev, team) =
        row.ok_or_else(|| ApiError::Unauthorized("invalid host token".into()))?;
    if host_id != id {
        return Err(ApiError::Forbidden(
            "host id does not match the token".into(),
        ));
    }
    if prev == "unreachable" {
        tracing::info!(host = %host_id, "host is back");
        host_event(&app, &host_id, team, "host.up").await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/hosts/{id}/tags", tag = "hosts", params(("id" = String, Path)),
    responses((status = 200, body = [String])))]
pub async fn list_tags(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(visible_host(&app, &p, &id).await?.tags))
}

#[utoipa::path(post, path = "/v1/hosts/{id}/tags", tag = "hosts", params(("id" = String, Path)),
    request_body = TagRequest, responses((status = 204), (status = 400, body = ErrorBody)))]
pub async fn add_tag(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TagRequest>,
) -> ApiResult<StatusCode> {
    let host = visible_host(&app, &p, &id).await?;
    require_manage(&p, host.team_id.as_deref())?;
    let tag = req.tag.trim();
    if tag.is_empty()
        || tag.len() > 64
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-=".contains(c))
    {
        return Err(ApiError::invalid("tag must be 1 to 64 of [A-Za-z0-9._:=-]"));
    }
    sqlx::query("INSERT INTO host_tags (host_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(&id)
        .bind(tag)
        .execute(&app.db)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/hosts/{id}/tags/{tag}", tag = "hosts",
    params(("id" = String, Path), ("tag" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_tag(
    State(app): State<AppState>,
    p: Principal,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let host = visible_host(&app, &p, &id).await?;
    require_manage(&p, host.team_id.as_deref())?;
    let done = sqlx::query("DELETE FROM host_tags WHERE host_id = $1 AND tag = $2")
        .bind(&id)
        .bind(&tag)
        .execute(&app.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("tag"));
    }
    Ok(StatusCode::NO_CONTENT)
}
