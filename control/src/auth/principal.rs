//! Resolving credentials into a [`Principal`].

use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::apikey;
use crate::app::AppState;
use crate::error::ApiError;
use crate::ids;

/// A member's role in a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Actor {
    User {
        id: String,
        name: String,
        email: String,
    },
    ApiKey {
        id: String,
        name: String,
    },
}

/// An authenticated caller acting for one team.
#[derive(Debug, Clone)]
pub struct Principal {
    pub team_id: String,
    pub role: Role,
    pub actor: Actor,
    /// Platform administrator (users only; API keys never are).
    pub is_admin: bool,
}

impl Principal {
    pub fn actor_type(&self) -> &'static str {
        match self.actor {
            Actor::User { .. } => "user",
            Actor::ApiKey { .. } => "api_key",
        }
    }

    pub fn actor_id(&self) -> &str {
        match &self.actor {
            Actor::User { id, .. } | Actor::ApiKey { id, .. } => id,
        }
    }

    pub fn actor_name(&self) -> &str {
        match &self.actor {
            Actor::User { name, .. } | Actor::ApiKey { name, .. } => name,
        }
    }

    /// The user behind a session; API keys are refused (team and account
    /// management need a login, as in Wrenn).
    pub fn require_user(&self) -> Result<&str, ApiError> {
        match &self.actor {
            Actor::User { id, .. } => Ok(id),
            Actor::ApiKey { .. } => Err(ApiError::Forbidden(
                "this endpoint needs a user session (JWT), not an API key".into(),
            )),
        }
    }

    pub fn require_role(&self, min: Role) -> Result<(), ApiError> {
        if self.role >= min {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "requires the {} role in this team",
                min.as_str()
            )))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("platform administrators only".into()))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::Unauthorized("missing credentials: send X-API-Key or a Bearer token".into())
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

/// The credential a request carries, if any.
fn credential(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key") {
        return Some(v.to_str().unwrap_or_default().trim().to_string());
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Middleware: resolves the request's credential (if it has one) into a
/// [`Principal`] extension. A credential that is present but invalid is
/// refused here with 401; requests without one pass through, for public
/// routes and for WebSocket routes that authenticate in-band.
pub async fn middleware(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    if let Some(token) = credential(req.headers()) {
        match authenticate_token(&app, &token).await {
            Ok(p) => {
                req.extensions_mut().insert(p);
            }
            Err(err) => return err.into_response(),
        }
    }
    next.run(req).await
}

/// Resolves an API key or a session JWT.
pub async fn authenticate_token(app: &AppState, token: &str) -> Result<Principal, ApiError> {
    if token.is_empty() {
        return Err(ApiError::Unauthorized("empty credential".into()));
    }
    if apikey::looks_like_key(token) {
        api_key_principal(app, token).await
    } else {
        jwt_principal(app, token).await
    }
}

async fn api_key_principal(app: &AppState, key: &str) -> Result<Principal, ApiError> {
    let row = sqlx::query(
        "SELECT k.id, k.team_id, k.name, k.expires_at, k.revoked_at
           FROM api_keys k JOIN teams t ON t.id = k.team_id
          WHERE k.key_hash = $1 AND t.deleted_at IS NULL",
    )
    .bind(ids::token_hash(key))
    .fetch_optional(&app.db)
    .await?
    .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))?;
    let revoked: Option<DateTime<Utc>> = row.get("revoked_at");
    if revoked.is_some() {
        return Err(ApiError::Unauthorized("API key revoked".into()));
    }
    let expires: Option<DateTime<Utc>> = row.get("expires_at");
    if expires.is_some_and(|e| e <= Utc::now()) {
        return Err(ApiError::Unauthorized("API key expired".into()));
    }
    let id: String = row.get("id");
    // Recorded at most once a minute per key, off the request path.
    let db = app.db.clone();
    let key_id = id.clone();
    tokio::spawn(async move {
        let _ = sqlx::query(
            "UPDATE api_keys SET last_used = now()
              WHERE id = $1 AND (last_used IS NULL OR last_used < now() - interval '1 minute')",
        )
        .bind(key_id)
        .execute(&db)
        .await;
    });
    Ok(Principal {
        team_id: row.get("team_id"),
        role: Role::Member,
        actor: Actor::ApiKey {
            id,
            name: row.get("name"),
        },
        is_admin: false,
    })
}

async fn jwt_principal(app: &AppState, token: &str) -> Result<Principal, ApiError> {
    let claims = app
        .jwt
        .verify(token)
        .ok_or_else(|| ApiError::Unauthorized("invalid or expired token".into()))?;
    let row = sqlx::query(
        "SELECT u.name, u.email, u.is_admin, u.status, m.role
           FROM users u
           JOIN team_members m ON m.user_id = u.id AND m.team_id = $2
           JOIN teams t ON t.id = m.team_id AND t.deleted_at IS NULL
          WHERE u.id = $1",
    )
    .bind(&claims.sub)
    .bind(&claims.team_id)
    .fetch_optional(&app.db)
    .await?
    .ok_or_else(|| ApiError::Unauthorized("session no longer valid for this team".into()))?;
    if row.get::<String, _>("status") != "active" {
        return Err(ApiError::Unauthorized("account disabled".into()));
    }
    let role: String = row.get("role");
    Ok(Principal {
        team_id: claims.team_id,
        role: Role::parse(&role).unwrap_or(Role::Member),
        actor: Actor::User {
            id: claims.sub,
            name: row.get("name"),
            email: row.get("email"),
        },
        is_admin: row.get("is_admin"),
    })
}
