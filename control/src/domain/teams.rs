//! Teams, members and roles. Owners and admins manage members; only the
//! owner deletes the team; nobody changes or removes the owner. Team
//! management needs a user session, never an API key.

use warren_api_types::admin::AdminTeam;
use warren_api_types::status::Role;
use warren_api_types::teams::{TeamDetail, TeamMember, TeamWithRole};

use crate::app::AppState;
use crate::auth::{Denied, Principal};
use crate::{db, ids, lifecycle};

#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error("{0}")]
    Invalid(String),
    #[error("team not found")]
    NotFound,
    #[error("user is not a member")]
    NotMember,
    #[error("no account with that email")]
    NoAccount,
    #[error("user is already a member")]
    AlreadyMember,
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, TeamError>;

fn valid_team_name(name: &str) -> Result<String> {
    let n = name.trim();
    if n.is_empty()
        || n.chars().count() > 128
        || !n
            .chars()
            .all(|c| c.is_alphanumeric() || " _-'.".contains(c))
    {
        return Err(TeamError::Invalid(
            "team name must be 1 to 128 letters, digits, spaces, _ - ' or .".into(),
        ));
    }
    Ok(n.to_string())
}

fn assignable_role(s: &str) -> Result<Role> {
    match Role::parse(s) {
        Some(r @ (Role::Admin | Role::Member)) => Ok(r),
        _ => Err(TeamError::Invalid(
            "role must be 'admin' or 'member'".into(),
        )),
    }
}

/// `user_id`'s role in `team_id`; teams they are not in are not found.
pub async fn member_role(app: &AppState, team_id: &str, user_id: &str) -> Result<Role> {
    db::teams::member_role(&app.db, team_id, user_id)
        .await?
        .ok_or(TeamError::NotFound)
}

/// The caller (a user) and their role in `team_id`, which must be at
/// least `min` (`what` says what needs it).
async fn caller<'p>(
    app: &AppState,
    p: &'p Principal,
    team_id: &str,
    min: Role,
    what: &str,
) -> Result<(&'p str, Role)> {
    let user_id = p.require_user()?;
    let role = member_role(app, team_id, user_id).await?;
    if role < min {
        return Err(Denied::rule(format!("{what} needs the admin or owner role")).into());
    }
    Ok((user_id, role))
}

/// Teams the caller belongs to, with their role.
pub async fn list(app: &AppState, p: &Principal) -> Result<Vec<TeamWithRole>> {
    Ok(db::teams::of_user(&app.db, p.require_user()?).await?)
}

/// Creates a team the caller owns.
pub async fn create(app: &AppState, p: &Principal, name: &str) -> Result<TeamWithRole> {
    let user_id = p.require_user()?;
    let name = valid_team_name(name)?;
    let id = ids::new_id("team-");
    let mut tx = app.db.begin().await?;
    db::teams::create(&mut tx, &id, &name, user_id).await?;
    tx.commit().await?;
    db::teams::of_member(&app.db, &id, user_id)
        .await?
        .ok_or(TeamError::NotFound)
}

/// A team the caller belongs to, with its members.
pub async fn get(app: &AppState, p: &Principal, id: &str) -> Result<TeamDetail> {
    let user_id = p.require_user()?;
    let team = db::teams::of_member(&app.db, id, user_id)
        .await?
        .ok_or(TeamError::NotFound)?;
    Ok(TeamDetail {
        team,
        members: db::teams::members(&app.db, id).await?,
    })
}

/// Renames a team (admin or owner).
pub async fn rename(app: &AppState, p: &Principal, id: &str, name: &str) -> Result<()> {
    caller(app, p, id, Role::Admin, "renaming").await?;
    let name = valid_team_name(name)?;
    Ok(db::teams::rename(&app.db, id, &name).await?)
}

/// Deletes a team (owner only): its capsules are destroyed, its keys stop
/// working, its records stay.
pub async fn delete(app: &AppState, p: &Principal, id: &str) -> Result<()> {
    let user_id = p.require_user()?;
    if member_role(app, id, user_id).await? != Role::Owner {
        return Err(Denied::rule("only the owner deletes a team").into());
    }
    db::teams::mark_deleted(&app.db, id).await?;
    for row in db::capsules::live(&app.db, Some(id), None).await? {
        let cid = row.id.clone();
        if let Err(e) = lifecycle::destroy(app, row).await {
            tracing::warn!(capsule = %cid, error = %e, "destroying capsule of deleted team");
        }
    }
    Ok(())
}

/// Members and their roles (members only).
pub async fn members(app: &AppState, p: &Principal, id: &str) -> Result<Vec<TeamMember>> {
    member_role(app, id, p.require_user()?).await?;
    Ok(db::teams::members(&app.db, id).await?)
}

/// Adds an existing user by email (admin or owner).
pub async fn add_member(
    app: &AppState,
    p: &Principal,
    id: &str,
    email: &str,
    role: Option<&str>,
) -> Result<TeamMember> {
    caller(app, p, id, Role::Admin, "adding members").await?;
    let role = assignable_role(role.unwrap_or("member"))?;
    let email =
        super::users::normalize_email(email).map_err(|e| TeamError::Invalid(e.to_string()))?;
    let user_id = db::users::id_by_email(&app.db, &email)
        .await?
        .ok_or(TeamError::NoAccount)?;
    if !db::teams::add_member(&app.db, id, &user_id, role).await? {
        return Err(TeamError::AlreadyMember);
    }
    db::teams::members(&app.db, id)
        .await?
        .into_iter()
        .find(|m| m.user_id == user_id)
        .ok_or(TeamError::NotMember)
}

async fn target_role(app: &AppState, team_id: &str, uid: &str) -> Result<Role> {
    db::teams::role_of(&app.db, team_id, uid)
        .await?
        .ok_or(TeamError::NotMember)
}

/// Changes a member's role (admin or owner; the owner's role is fixed).
pub async fn set_role(
    app: &AppState,
    p: &Principal,
    id: &str,
    uid: &str,
    role: &str,
) -> Result<()> {
    caller(app, p, id, Role::Admin, "changing roles").await?;
    let role = assignable_role(role)?;
    if target_role(app, id, uid).await? == Role::Owner {
        return Err(Denied::rule("the owner's role cannot be changed").into());
    }
    Ok(db::teams::set_role(&app.db, id, uid, role).await?)
}

/// Removes a member (admin or owner; not the owner).
pub async fn remove_member(app: &AppState, p: &Principal, id: &str, uid: &str) -> Result<()> {
    caller(app, p, id, Role::Admin, "removing members").await?;
    if target_role(app, id, uid).await? == Role::Owner {
        return Err(Denied::rule("the owner cannot be removed").into());
    }
    Ok(db::teams::remove_member(&app.db, id, uid).await?)
}

/// Leaves a team (the owner cannot).
pub async fn leave(app: &AppState, p: &Principal, id: &str) -> Result<()> {
    let (user_id, role) = caller(app, p, id, Role::Member, "leaving").await?;
    if role == Role::Owner {
        return Err(Denied::rule("the owner cannot leave; delete the team instead").into());
    }
    Ok(db::teams::remove_member(&app.db, id, user_id).await?)
}

/// Every live team (platform administrators only).
pub async fn list_all(app: &AppState, p: &Principal) -> Result<Vec<AdminTeam>> {
    p.require_admin()?;
    Ok(db::teams::list_all(&app.db).await?)
}
