//! Accounts and sessions: signup, login, switching the active team, and
//! the caller's own profile (`/v1/me`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use warren_api_types::accounts::{
    AuthResponse, LoginRequest, MeResponse, SignupRequest, SwitchTeamRequest, UpdateMeRequest,
};

use super::audit::{AuditNote, noted};
use super::error::{ApiResult, ErrorBody};
use super::extract::ApiJson;
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::users;

/// The audit note of a call that made a session (the caller had none).
fn user_note(s: &AuthResponse) -> AuditNote {
    AuditNote {
        team_id: Some(s.team_id.clone()),
        resource_id: Some(s.user_id.clone()),
        actor: Some(("user".into(), s.user_id.clone(), s.name.clone())),
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
    let s = users::signup(&app, &req).await?;
    let note = user_note(&s);
    Ok(noted((StatusCode::CREATED, Json(s)).into_response(), note))
}

/// Log in with email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody)))]
pub async fn login(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let s = users::login(&app, &req.email, req.password).await?;
    let note = user_note(&s);
    Ok(noted(Json(s).into_response(), note))
}

/// Re-issue the session for another team the user belongs to.
#[utoipa::path(post, path = "/v1/auth/switch-team", tag = "auth", request_body = SwitchTeamRequest,
    responses((status = 200, body = AuthResponse), (status = 404, body = ErrorBody)))]
pub async fn switch_team(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<SwitchTeamRequest>,
) -> ApiResult<Json<AuthResponse>> {
    Ok(Json(users::switch_team(&app, &p, &req.team_id).await?))
}

/// A fresh session (a new expiry) for the caller's valid one; the console
/// renews its session this way before it expires.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn refresh(State(app): State<AppState>, p: Principal) -> ApiResult<Json<AuthResponse>> {
    Ok(Json(users::refresh(&app, &p)?))
}

/// The caller's profile.
#[utoipa::path(get, path = "/v1/me", tag = "account",
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(p: Principal) -> Json<MeResponse> {
    Json(users::me(&p))
}

/// Change the display name; returns a fresh session.
#[utoipa::path(patch, path = "/v1/me", tag = "account", request_body = UpdateMeRequest,
    responses((status = 200, body = AuthResponse), (status = 400, body = ErrorBody)))]
pub async fn update_me(
    State(app): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<UpdateMeRequest>,
) -> ApiResult<Json<AuthResponse>> {
    Ok(Json(users::rename_me(&app, &p, &req.name).await?))
}
