//! Who is calling ([`Principal`]), resolved from a credential
//! ([`authenticate`]), and the permission checks every domain module
//! builds on ([`Denied`]).

use chrono::Utc;
use warren_api_types::status::{Role, UserStatus};

use super::apikey;
use crate::app::AppState;
use crate::db;
use crate::ids;

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

/// A permission check failed (403); the message says what was missing.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("this endpoint needs a user session (JWT), not an API key")]
    NeedsUser,
    #[error("requires the {0} role in this team")]
    NeedsRole(Role),
    #[error("platform administrators only")]
    AdminsOnly,
    /// A rule of the domain (who may do what to whom).
    #[error("{0}")]
    Rule(String),
}

impl Denied {
    pub fn rule(msg: impl Into<String>) -> Self {
        Self::Rule(msg.into())
    }
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
    pub fn require_user(&self) -> Result<&str, Denied> {
        match &self.actor {
            Actor::User { id, .. } => Ok(id),
            Actor::ApiKey { .. } => Err(Denied::NeedsUser),
        }
    }

    pub fn require_role(&self, min: Role) -> Result<(), Denied> {
        if self.role >= min {
            Ok(())
        } else {
            Err(Denied::NeedsRole(min))
        }
    }

    pub fn require_admin(&self) -> Result<(), Denied> {
        if self.is_admin {
            Ok(())
        } else {
            Err(Denied::AdminsOnly)
        }
    }
}

/// A credential that does not authenticate anyone (401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("empty credential")]
    Empty,
    #[error("invalid API key")]
    UnknownKey,
    #[error("API key revoked")]
    Revoked,
    #[error("API key expired")]
    Expired,
    #[error("invalid or expired token")]
    BadToken,
    #[error("session no longer valid for this team")]
    StaleSession,
    #[error("account disabled")]
    Disabled,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Resolves an API key or a session JWT.
pub async fn authenticate(app: &AppState, token: &str) -> Result<Principal, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Empty);
    }
    if apikey::looks_like_key(token) {
        api_key_principal(app, token).await
    } else {
        jwt_principal(app, token).await
    }
}

async fn api_key_principal(app: &AppState, key: &str) -> Result<Principal, AuthError> {
    let row = db::keys::by_hash(&app.db, &ids::token_hash(key))
        .await?
        .ok_or(AuthError::UnknownKey)?;
    if row.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if row.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(AuthError::Expired);
    }
    // Recorded at most once a minute per key, off the request path.
    let (db, key_id) = (app.db.clone(), row.id.clone());
    tokio::spawn(async move {
        let _ = db::keys::touch(&db, &key_id).await;
    });
    Ok(Principal {
        team_id: row.team_id,
        role: Role::Member,
        actor: Actor::ApiKey {
            id: row.id,
            name: row.name,
        },
        is_admin: false,
    })
}

async fn jwt_principal(app: &AppState, token: &str) -> Result<Principal, AuthError> {
    let claims = app.jwt.verify(token).ok_or(AuthError::BadToken)?;
    let m = db::users::member(&app.db, &claims.sub, &claims.team_id)
        .await?
        .ok_or(AuthError::StaleSession)?;
    if m.status != UserStatus::Active {
        return Err(AuthError::Disabled);
    }
    Ok(Principal {
        team_id: claims.team_id,
        role: m.role,
        actor: Actor::User {
            id: claims.sub,
            name: m.name,
            email: m.email,
        },
        is_admin: m.is_admin,
    })
}
