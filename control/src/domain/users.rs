//! Accounts and sessions: signup, login, switching the active team, the
//! caller's own profile, and (platform administrators) every account.

use warren_api_types::accounts::{AuthResponse, MeResponse, SignupRequest};
use warren_api_types::admin::{AdminUser, UpdateUserRequest};
use warren_api_types::status::UserStatus;

use super::teams::{self, TeamError};
use crate::app::AppState;
use crate::auth::{Actor, Denied, Principal, password};
use crate::{db, ids};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("invalid email or password")]
    BadCredentials,
    #[error("account disabled")]
    Disabled,
    #[error("user not found")]
    NotFound,
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, UserError>;

pub fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(e)
    } else {
        Err(UserError::Invalid("invalid email address".into()))
    }
}

fn valid_name(name: &str) -> Result<String> {
    super::valid_name(name, "name").map_err(UserError::Invalid)
}

fn validate_password(p: &str) -> Result<()> {
    if p.len() < password::MIN_LEN || p.len() > password::MAX_LEN {
        return Err(UserError::Invalid(format!(
            "password must be {} to {} characters",
            password::MIN_LEN,
            password::MAX_LEN
        )));
    }
    Ok(())
}

/// An account made by [`create_user`].
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub user_id: String,
    pub team_id: String,
    pub email: String,
    pub name: String,
}

/// Creates a user with their own team (owner), optionally a platform
/// administrator. Used by signup and by `warren up`'s first-run setup.
pub async fn create_user(
    app: &AppState,
    email: &str,
    name: &str,
    pass: &str,
    is_admin: bool,
) -> Result<NewAccount> {
    let email = normalize_email(email)?;
    let name = valid_name(name)?;
    validate_password(pass)?;
    let hash = password::hash(pass.to_string()).await?;
    let account = NewAccount {
        user_id: ids::new_id("usr-"),
        team_id: ids::new_id("team-"),
        email,
        name,
    };
    let new = db::users::NewUser {
        id: &account.user_id,
        email: &account.email,
        name: &account.name,
        password_hash: &hash,
        is_admin,
        team_id: &account.team_id,
        team_name: &format!("{}'s team", account.name),
    };
    if !db::users::create(&app.db, &new).await? {
        return Err(UserError::EmailTaken);
    }
    Ok(account)
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

/// A fresh session (a new expiry) for a valid user session; API keys have
/// none to renew.
pub fn refresh(app: &AppState, p: &Principal) -> Result<AuthResponse> {
    let Actor::User { id, name, email } = &p.actor else {
        return Err(UserError::Denied(Denied::NeedsUser));
    };
    Ok(session(app, id, &p.team_id, email, name))
}

/// Creates an account (and its team); a session for it.
pub async fn signup(app: &AppState, req: &SignupRequest) -> Result<AuthResponse> {
    let a = create_user(app, &req.email, &req.name, &req.password, false).await?;
    Ok(session(app, &a.user_id, &a.team_id, &a.email, &a.name))
}

/// A session for the account with this email and password.
pub async fn login(app: &AppState, email: &str, pass: String) -> Result<AuthResponse> {
    let email = normalize_email(email).map_err(|_| UserError::BadCredentials)?;
    let row = db::users::login(&app.db, &email)
        .await?
        .ok_or(UserError::BadCredentials)?;
    if !password::verify(pass, row.password_hash).await {
        return Err(UserError::BadCredentials);
    }
    if row.status != UserStatus::Active {
        return Err(UserError::Disabled);
    }
    let team_id = row
        .team_id
        .ok_or_else(|| Denied::rule("account belongs to no team"))?;
    Ok(session(app, &row.id, &team_id, &email, &row.name))
}

/// The caller's session re-issued for another team they belong to.
pub async fn switch_team(app: &AppState, p: &Principal, team_id: &str) -> Result<AuthResponse> {
    let user_id = p.require_user()?;
    let Actor::User { name, email, .. } = &p.actor else {
        return Err(Denied::NeedsUser.into());
    };
    teams::member_role(app, team_id, user_id).await?;
    Ok(session(app, user_id, team_id, email, name))
}

/// The caller's profile.
pub fn me(p: &Principal) -> MeResponse {
    let (user_id, name, email) = match &p.actor {
        Actor::User { id, name, email } => (id.clone(), name.clone(), email.clone()),
        Actor::ApiKey { id, name } => (id.clone(), name.clone(), String::new()),
    };
    MeResponse {
        user_id,
        name,
        email,
        is_admin: p.is_admin,
        team_id: p.team_id.clone(),
        role: p.role,
        has_password: matches!(p.actor, Actor::User { .. }),
        providers: vec![],
    }
}

/// Changes the caller's display name; a fresh session.
pub async fn rename_me(app: &AppState, p: &Principal, name: &str) -> Result<AuthResponse> {
    let user_id = p.require_user()?;
    let name = valid_name(name)?;
    let email = db::users::rename(&app.db, user_id, &name).await?;
    Ok(session(app, user_id, &p.team_id, &email, &name))
}

/// Every account (platform administrators only).
pub async fn list_all(app: &AppState, p: &Principal) -> Result<Vec<AdminUser>> {
    p.require_admin()?;
    Ok(db::users::list_all(&app.db).await?)
}

/// Makes an account an administrator (or not) and enables or disables it
/// (platform administrators only, never on themselves).
pub async fn update(
    app: &AppState,
    p: &Principal,
    id: &str,
    req: &UpdateUserRequest,
) -> Result<AdminUser> {
    p.require_admin()?;
    let status =
        match req.status.as_deref() {
            None => None,
            Some(s) => Some(UserStatus::parse(s).ok_or_else(|| {
                UserError::Invalid("status must be 'active' or 'disabled'".into())
            })?),
        };
    if p.actor_id() == id && (req.is_admin == Some(false) || status == Some(UserStatus::Disabled)) {
        return Err(UserError::Invalid(
            "administrators cannot demote or disable themselves".into(),
        ));
    }
    db::users::update(&app.db, id, req.is_admin, status)
        .await?
        .ok_or(UserError::NotFound)
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
}
