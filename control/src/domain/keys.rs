//! API keys of the caller's team: create (the key is in that response
//! only), list, revoke. Keys are made by users, never by other keys; a
//! member revokes their own, admins and owners any.

use chrono::{DateTime, Utc};
use warren_api_types::accounts::{CreateKeyRequest, KeyResponse};
use warren_api_types::status::Role;

use crate::app::AppState;
use crate::auth::{Denied, Principal, apikey};
use crate::{db, ids};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("API key not found")]
    NotFound,
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, KeyError>;

/// Makes a key for `team_id` (by `user_id`, if a user); the row and the
/// key itself.
pub async fn create_key(
    app: &AppState,
    team_id: &str,
    user_id: Option<&str>,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<KeyResponse> {
    let (key, hash) = apikey::generate();
    let new = db::keys::NewKey {
        id: &ids::new_id("key-"),
        team_id,
        created_by: user_id,
        name,
        prefix: &apikey::display_prefix(&key),
        hash: &hash,
        expires_at,
    };
    Ok(db::keys::insert(&app.db, &new).await?.view(Some(key)))
}

fn expiry(req: &CreateKeyRequest) -> Result<Option<DateTime<Utc>>> {
    let invalid = |m: &str| Err(KeyError::Invalid(m.into()));
    match (req.expires_in_days, req.expires_at) {
        (Some(_), Some(_)) => invalid("give expires_in_days or expires_at, not both"),
        (Some(0), None) => invalid("expires_in_days must be positive"),
        (Some(d), None) if d > 3650 => invalid("expires_in_days must be at most 3650"),
        (Some(d), None) => Ok(Some(Utc::now() + chrono::Duration::days(i64::from(d)))),
        (None, Some(t)) if t <= Utc::now() => invalid("expires_at is in the past"),
        (None, t) => Ok(t),
    }
}

/// Creates a key for the caller's team (user sessions only).
pub async fn create(app: &AppState, p: &Principal, req: &CreateKeyRequest) -> Result<KeyResponse> {
    let user_id = p.require_user()?;
    let name = match req.name.as_deref() {
        Some(n) => super::valid_name(n, "name").map_err(KeyError::Invalid)?,
        None => "Unnamed API Key".into(),
    };
    let expires_at = expiry(req)?;
    create_key(app, &p.team_id, Some(user_id), &name, expires_at).await
}

/// The team's keys (never the keys themselves), newest first.
pub async fn list(app: &AppState, p: &Principal) -> Result<Vec<KeyResponse>> {
    let rows = db::keys::list(&app.db, &p.team_id).await?;
    Ok(rows.into_iter().map(|r| r.view(None)).collect())
}

/// Revokes a key: it stops working at once.
pub async fn revoke(app: &AppState, p: &Principal, id: &str) -> Result<()> {
    let user_id = p.require_user()?;
    let key = db::keys::active(&app.db, &p.team_id, id)
        .await?
        .ok_or(KeyError::NotFound)?;
    if key.created_by.as_deref() != Some(user_id) {
        p.require_role(Role::Admin)?;
    }
    Ok(db::keys::revoke(&app.db, &p.team_id, id).await?)
}
