//! Accounts and sessions: signup, login, switching the active team, and
//! the caller's own profile (`/v1/me`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::app::AppState;
use crate::audit::{AuditNote, noted};
use crate::auth::{Actor, Principal, password};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ids;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SwitchTeamRequest {
    pub team_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthResponse {
    /// Session JWT.
    pub token: String,
    pub user_id: String,
    pub team_id: String,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
    pub team_id: String,
    pub role: String,
    pub has_password: bool,
    pub providers: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    pub name: String,
}

pub fn normalize_email(email: &str) -> ApiResult<String> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(e)
    } else {
        Err(ApiError::invalid("invalid email address"))
    }
}

pub fn validate_name(name: &str, what: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to 100 printable characters"
        )));
    }
    Ok(n.to_string())
}

fn validate_password(p: &str) -> ApiResult<()> {
    if p.len() < password::MIN_LEN || p.len() > password::MAX_LEN {
        return Err(ApiError::invalid(format!(
            "password must be {} to {} characters",
            password::MIN_LEN,
            password::MAX_LEN
        )));
    }
    Ok(())
}

/// Creates a user with their own team (owner), optionally a platform admin.
/// Used by signup and by `warren up`'s first-run setup.
pub async fn create_user(
    app: &AppState,
    email: &str,
    name: &str,
    pass: &str,
    is_admin: bool,
) -> ApiResult<(String, String)> {
    let email = normalize_email(email)?;
    let name = validate_name(name, "name")?;
    validate_password(pass)?;
    let hash = password::hash(pass.to_string()).await?;
    let user_id = ids::new_id("usr-");
    let team_id = ids::new_id("team-");
    let mut tx = app.db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, is_admin) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(&user_id)
    .bind(&email)
    .bind(&name)
    .bind(&hash)
    .bind(is_admin)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::Conflict(
            "an account with this email already exists".into(),
        ));
    }
    sqlx::query("INSERT INTO teams (id, name, slug) VALUES ($1, $2, $3)")
        .bind(&team_id)
        .bind(format!("{name}'s team"))
        .bind(ids::new_secret(12).to_lowercase())
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(&team_id)
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((user_id, team_id))
}

fn session(app: &AppState, user_id: &str, team_id: &str, email: &str, name: &str) -> AuthResponse {
    AuthResponse {
        token: app.jwt.issue(user_id, team_id, email, name),
        user_id: user_id.into(),
        team_id: team_id.into(),
        email: email.into(),
        name: name.into(),
    }
}

fn user_note(team_id: &str, user_id: &str, name: &str) -> AuditNote {
    AuditNote {
        team_id: Some(team_id.into()),
        resource_id: Some(user_id.into()),
        actor: Some(("user".into(), user_id.into(), name.into())),
        metadata: None,
    }
}

/// Create an account (and its team); returns a session.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, body = AuthResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn signup(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<SignupRequest>,
) -> ApiResult<Response> {
    let (user_id, team_id) = create_user(&app, &req.email, &req.name, &req.password, false).await?;
    let email = normalize_email(&req.email)?;
    let name = validate_name(&req.name, "name")?;
    let body = session(&app, &user_id, &team_id, &email, &name);
    Ok(noted(
        (StatusCode::CREATED, Json(body)).into_response(),
        user_note(&team_id, &user_id, &name),
    ))
}

/// Log in with email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody)))]
pub async fn login(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let bad = || ApiError::Unauthorized("invalid email or password".into());
    let email = normalize_email(&req.email).map_err(|_| bad())?;
    let row = sqlx::query(
        "SELECT u.id, u.name, u.password_hash, u.status,
                (SELECT m.team_id FROM team_members m JOIN teams t ON t.id = m.team_id
                  WHERE m.user_id = u.id AND t.deleted_at IS NULL
                  ORDER BY (m.role = 'owner') DESC, m.joined_at LIMIT 1) AS team_id
           FROM users u WHERE u.email = $1",
    )
    .bind(&email)
    .fetch_optional(&app.db)
    .await?;
    let Some(row) = row else { return Err(bad()) };
    if !password::verify(req.password, row.get("password_hash")).await {
        return Err(bad());
    }
    if row.get::<String, _>("status") != "active" {
        return Err(ApiError::Unauthorized("account disabled".into()));
    }
    let team_id: Option<String> = row.get("team_id");
    let team_id =
        team_id.ok_or_else(|| ApiError::Forbidden("account belongs to no team".into()))?;
    let user_id: String = row.get("id");
    let name: String = row.get("name");
    let body = session(&app, &user_id, &team_id, &email, &name);
    Ok(noted(
        Json(body).into_response(),
        user_note(&team_id, &user_id, &name),
    ))
}

/// Re-issue the session for another team the user belongs to.
#[utoipa::path(post, path = "/v1/auth/switch-team", tag = "auth", request_body = SwitchTeamRequest,
    responses((status = 200, body = AuthResponse), (status = 404, body = ErrorBody)))]
pub async fn switch_team(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<SwitchTeamRequest>,
) -> ApiResult<Json<AuthResponse>> {
    let user_id = p.require_user()?.to_string();
    let Actor::User { name, email, .. } = &p.actor else {
        return Err(ApiError::Forbidden("user session required".into()));
    };
    super::teams::member_role(&app, &req.team_id, &user_id).await?;
    Ok(Json(session(&app, &user_id, &req.team_id, email, name)))
}

/// A fresh session (a new expiry) for the caller's valid one; the console
/// renews its session this way before it expires.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn refresh(State(app): State<AppState>, p: Principal) -> ApiResult<Json<AuthResponse>> {
    let Actor::User { id, name, email } = &p.actor else {
        return Err(ApiError::Forbidden(
            "only a user session can be refreshed".into(),
        ));
    };
    Ok(Json(session(&app, id, &p.team_id, email, name)))
}

/// The caller's profile.
#[utoipa::path(get, path = "/v1/me", tag = "account",
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(p: Principal) -> ApiResult<Json<MeResponse>> {
    let (user_id, name, email) = match &p.actor {
        Actor::User { id, name, email } => (id.clone(), name.clone(), email.clone()),
        Actor::ApiKey { id, name } => (id.clone(), name.clone(), String::new()),
    };
    Ok(Json(MeResponse {
        user_id,
        name,
        email,
        is_admin: p.is_admin,
        team_id: p.team_id.clone(),
        role: p.role.as_str().into(),
        has_password: matches!(p.actor, Actor::User { .. }),
        providers: vec![],
    }))
}

/// Change the display name; returns a fresh session.
#[utoipa::path(patch, path = "/v1/me", tag = "account", request_body = UpdateMeRequest,
    responses((status = 200, body = AuthResponse), (status = 400, body = ErrorBody)))]
pub async fn update_me(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<UpdateMeRequest>,
) -> ApiResult<Json<AuthResponse>> {
    let user_id = p.require_user()?.to_string();
    let name = validate_name(&req.name, "name")?;
    let email: String =
        sqlx::query_scalar("UPDATE users SET name = $2 WHERE id = $1 RETURNING email")
            .bind(&user_id)
            .bind(&name)
            .fetch_one(&app.db)
            .await?;
    Ok(Json(session(&app, &user_id, &p.team_id, &email, &name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email(" A@Example.COM ").unwrap(), "a@example.com");
        for bad in ["", "a", "a@b", "@b.c", "a@.c", "a b@c.d", "a@b.c."] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("", "name").is_err());
        assert!(validate_name(&"x".repeat(101), "name").is_err());
        assert_eq!(validate_name(" Ann ", "name").unwrap(), "Ann");
    }
}
