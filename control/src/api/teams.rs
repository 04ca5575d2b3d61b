//! Teams, members and roles. Owners and admins manage members; only the
//! owner deletes the team; nobody changes or removes the owner.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::app::AppState;
use crate::audit::{AuditNote, noted};
use crate::auth::{Principal, Role};
use crate::db::capsules::{CapsuleRow, ts};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::{ids, lifecycle};

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamWithRole {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub created_at: String,
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamMember {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub joined_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamDetail {
    pub team: TeamWithRole,
    pub members: Vec<TeamMember>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamNameRequest {
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub email: String,
    /// `member` (default) or `admin`.
    pub role: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub role: String,
}

#[derive(Debug, FromRow)]
struct TeamRow {
    id: String,
    name: String,
    slug: String,
    created_at: DateTime<Utc>,
    role: String,
}

impl TeamRow {
    fn view(self) -> TeamWithRole {
        TeamWithRole {
            id: self.id,
            name: self.name,
            slug: self.slug,
            created_at: ts(self.created_at),
            role: self.role,
        }
    }
}

#[derive(Debug, FromRow)]
struct MemberRow {
    user_id: String,
    email: String,
    name: String,
    role: String,
    joined_at: DateTime<Utc>,
}

fn validate_team_name(name: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty()
        || n.chars().count() > 128
        || !n
            .chars()
            .all(|c| c.is_alphanumeric() || " _-'.".contains(c))
    {
        return Err(ApiError::invalid(
            "team name must be 1 to 128 letters, digits, spaces, _ - ' or .",
        ));
    }
    Ok(n.to_string())
}

fn assignable_role(s: &str) -> ApiResult<Role> {
    match Role::parse(s) {
        Some(r @ (Role::Admin | Role::Member)) => Ok(r),
        _ => Err(ApiError::invalid("role must be 'admin' or 'member'")),
    }
}

/// The caller's role in `team_id`; teams they are not in are not found.
pub async fn member_role(app: &AppState, team_id: &str, user_id: &str) -> ApiResult<Role> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT m.role FROM team_members m JOIN teams t ON t.id = m.team_id
          WHERE m.team_id = $1 AND m.user_id = $2 AND t.deleted_at IS NULL",
    )
    .bind(team_id)
    .bind(user_id)
    .fetch_optional(&app.db)
    .await?;
    role.and_then(|r| Role::parse(&r))
        .ok_or_else(|| ApiError::not_found("team"))
}

async fn team_of(app: &AppState, team_id: &str, user_id: &str) -> ApiResult<TeamWithRole> {
    sqlx::query_as::<_, TeamRow>(
        "SELECT t.id, t.name, t.slug, t.created_at, m.role
           FROM teams t JOIN team_members m ON m.team_id = t.id AND m.user_id = $2
          WHERE t.id = $1 AND t.deleted_at IS NULL",
    )
    .bind(team_id)
    .bind(user_id)
    .fetch_optional(&app.db)
    .await?
    .map(TeamRow::view)
    .ok_or_else(|| ApiError::not_found("team"))
}

async fn members(app: &AppState, team_id: &str) -> ApiResult<Vec<TeamMember>> {
    let rows = sqlx::query_as::<_, MemberRow>(
        "SELECT m.user_id, u.email, u.name, m.role, m.joined_at
           FROM team_members m JOIN users u ON u.id = m.user_id
          WHERE m.team_id = $1 ORDER BY m.joined_at",
    )
    .bind(team_id)
    .fetch_all(&app.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TeamMember {
            user_id: r.user_id,
            email: r.email,
            name: r.name,
            role: r.role,
            joined_at: ts(r.joined_at),
        })
        .collect())
}

/// Teams the caller belongs to, with their role.
#[utoipa::path(get, path = "/v1/teams", tag = "teams", responses((status = 200, body = [TeamWithRole])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<TeamWithRole>>> {
    let user_id = p.require_user()?;
    let rows = sqlx::query_as::<_, TeamRow>(
        "SELECT t.id, t.name, t.slug, t.created_at, m.role
           FROM teams t JOIN team_members m ON m.team_id = t.id
          WHERE m.user_id = $1 AND t.deleted_at IS NULL ORDER BY t.created_at",
    )
    .bind(user_id)
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows.into_iter().map(TeamRow::view).collect()))
}

/// Create a team; the caller owns it.
#[utoipa::path(post, path = "/v1/teams", tag = "teams", request_body = TeamNameRequest,
    responses((status = 201, body = TeamWithRole), (status = 400, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<TeamNameRequest>,
) -> ApiResult<Response> {
    let user_id = p.require_user()?.to_string();
    let name = validate_team_name(&req.name)?;
    let id = ids::new_id("team-");
    let mut tx = app.db.begin().await?;
    sqlx::query("INSERT INTO teams (id, name, slug) VALUES ($1, $2, $3)")
        .bind(&id)
        .bind(&name)
        .bind(ids::new_secret(12).to_lowercase())
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(&id)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let team = team_of(&app, &id, &user_id).await?;
    Ok(noted(
        (StatusCode::CREATED, Json(team)).into_response(),
        AuditNote {
            team_id: Some(id.clone()),
            resource_id: Some(id),
            ..AuditNote::default()
        },
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
    let user_id = p.require_user()?;
    let team = team_of(&app, &id, user_id).await?;
    Ok(Json(TeamDetail {
        team,
        members: members(&app, &id).await?,
    }))
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
    let user_id = p.require_user()?;
    let role = member_role(&app, &id, user_id).await?;
    if role < Role::Admin {
        return Err(ApiError::Forbidden(
            "renaming needs the admin or owner role".into(),
        ));
    }
    let name = validate_team_name(&req.name)?;
    sqlx::query("UPDATE teams SET name = $2 WHERE id = $1")
        .bind(&id)
        .bind(&name)
        .execute(&app.db)
        .await?;
    Ok(team_note(StatusCode::NO_CONTENT, &id))
}

fn team_note(status: StatusCode, team_id: &str) -> Response {
    noted(
        status.into_response(),
        AuditNote {
            team_id: Some(team_id.into()),
            resource_id: Some(team_id.into()),
            ..AuditNote::default()
        },
    )
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
    let user_id = p.require_user()?;
    if member_role(&app, &id, user_id).await? != Role::Owner {
        return Err(ApiError::Forbidden("only the owner deletes a team".into()));
    }
    sqlx::query("UPDATE teams SET deleted_at = now() WHERE id = $1")
        .bind(&id)
        .execute(&app.db)
        .await?;
    let live = sqlx::query_as::<_, CapsuleRow>(
        "SELECT * FROM capsules WHERE team_id = $1 AND status NOT IN ('stopped', 'error')",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await?;
    for row in live {
        let cid = row.id.clone();
        if let Err(e) = lifecycle::destroy(&app, row).await {
            tracing::warn!(capsule = %cid, error = %e, "destroying capsule of deleted team");
        }
    }
    Ok(team_note(StatusCode::NO_CONTENT, &id))
}

/// Members and their roles.
#[utoipa::path(get, path = "/v1/teams/{id}/members", tag = "teams", params(("id" = String, Path)),
    responses((status = 200, body = [TeamMember])))]
pub async fn list_members(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<TeamMember>>> {
    member_role(&app, &id, p.require_user()?).await?;
    Ok(Json(members(&app, &id).await?))
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
    let caller = p.require_user()?;
    if member_role(&app, &id, caller).await? < Role::Admin {
        return Err(ApiError::Forbidden(
            "adding members needs the admin or owner role".into(),
        ));
    }
    let role = assignable_role(req.role.as_deref().unwrap_or("member"))?;
    let email = super::auth::normalize_email(&req.email)?;
    let user_id: String = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&app.db)
        .await?
        .ok_or_else(|| ApiError::NotFound("no account with that email".into()))?;
    let added = sqlx::query(
        "INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(&id)
    .bind(&user_id)
    .bind(role.as_str())
    .execute(&app.db)
    .await?;
    if added.rows_affected() == 0 {
        return Err(ApiError::Conflict("user is already a member".into()));
    }
    let member = members(&app, &id)
        .await?
        .into_iter()
        .find(|m| m.user_id == user_id)
        .ok_or_else(|| ApiError::internal("member vanished"))?;
    Ok(noted(
        (StatusCode::CREATED, Json(member)).into_response(),
        AuditNote {
            team_id: Some(id),
            resource_id: Some(user_id),
            ..AuditNote::default()
        },
    ))
}

async fn target_role(app: &AppState, team_id: &str, uid: &str) -> ApiResult<Role> {
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2")
            .bind(team_id)
            .bind(uid)
            .fetch_optional(&app.db)
            .await?;
    role.and_then(|r| Role::parse(&r))
        .ok_or_else(|| ApiError::NotFound("user is not a member".into()))
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
    let caller = p.require_user()?;
    if member_role(&app, &id, caller).await? < Role::Admin {
        return Err(ApiError::Forbidden(
            "changing roles needs the admin or owner role".into(),
        ));
    }
    let role = assignable_role(&req.role)?;
    if target_role(&app, &id, &uid).await? == Role::Owner {
        return Err(ApiError::Forbidden(
            "the owner's role cannot be changed".into(),
        ));
    }
    sqlx::query("UPDATE team_members SET role = $3 WHERE team_id = $1 AND user_id = $2")
        .bind(&id)
        .bind(&uid)
        .bind(role.as_str())
        .execute(&app.db)
        .await?;
    Ok(team_note(StatusCode::NO_CONTENT, &id))
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
    let caller = p.require_user()?;
    if member_role(&app, &id, caller).await? < Role::Admin {
        return Err(ApiError::Forbidden(
            "removing members needs the admin or owner role".into(),
        ));
    }
    if target_role(&app, &id, &uid).await? == Role::Owner {
        return Err(ApiError::Forbidden("the owner cannot be removed".into()));
    }
    sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
        .bind(&id)
        .bind(&uid)
        .execute(&app.db)
        .await?;
    Ok(team_note(StatusCode::NO_CONTENT, &id))
}

/// Leave a team (the owner cannot).
#[utoipa::path(post, path = "/v1/teams/{id}/leave", tag = "teams", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn leave(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let caller = p.require_user()?;
    if member_role(&app, &id, caller).await? == Role::Owner {
        return Err(ApiError::Forbidden(
            "the owner cannot leave; delete the team instead".into(),
        ));
    }
    sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
        .bind(&id)
        .bind(caller)
        .execute(&app.db)
        .await?;
    Ok(team_note(StatusCode::NO_CONTENT, &id))
}
