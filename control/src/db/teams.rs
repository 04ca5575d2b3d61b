//! Teams and their members.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use warren_api_types::admin::AdminTeam;
use warren_api_types::status::Role;
use warren_api_types::teams::{TeamMember, TeamWithRole};
use warren_api_types::time::ts;

#[derive(Debug, FromRow)]
struct TeamRow {
    id: String,
    name: String,
    slug: String,
    created_at: DateTime<Utc>,
    role: Role,
}

impl From<TeamRow> for TeamWithRole {
    fn from(r: TeamRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            slug: r.slug,
            created_at: ts(r.created_at),
            role: r.role,
        }
    }
}

#[derive(Debug, FromRow)]
struct MemberRow {
    user_id: String,
    email: String,
    name: String,
    role: Role,
    joined_at: DateTime<Utc>,
}

/// `user_id`'s role in live team `team_id`.
pub async fn member_role(db: &PgPool, team_id: &str, user_id: &str) -> sqlx::Result<Option<Role>> {
    sqlx::query_scalar(
        "SELECT m.role FROM team_members m JOIN teams t ON t.id = m.team_id
          WHERE m.team_id = $1 AND m.user_id = $2 AND t.deleted_at IS NULL",
    )
    .bind(team_id)
    .bind(user_id)
    .fetch_optional(db)
    .await
}

/// Live team `team_id` with `user_id`'s role in it.
pub async fn of_member(
    db: &PgPool,
    team_id: &str,
    user_id: &str,
) -> sqlx::Result<Option<TeamWithRole>> {
    let row = sqlx::query_as::<_, TeamRow>(
        "SELECT t.id, t.name, t.slug, t.created_at, m.role
           FROM teams t JOIN team_members m ON m.team_id = t.id AND m.user_id = $2
          WHERE t.id = $1 AND t.deleted_at IS NULL",
    )
    .bind(team_id)
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// The live teams `user_id` belongs to, oldest first.
pub async fn of_user(db: &PgPool, user_id: &str) -> sqlx::Result<Vec<TeamWithRole>> {
    let rows = sqlx::query_as::<_, TeamRow>(
        "SELECT t.id, t.name, t.slug, t.created_at, m.role
           FROM teams t JOIN team_members m ON m.team_id = t.id
          WHERE m.user_id = $1 AND t.deleted_at IS NULL ORDER BY t.created_at",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn members(db: &PgPool, team_id: &str) -> sqlx::Result<Vec<TeamMember>> {
    let rows = sqlx::query_as::<_, MemberRow>(
        "SELECT m.user_id, u.email, u.name, m.role, m.joined_at
           FROM team_members m JOIN users u ON u.id = m.user_id
          WHERE m.team_id = $1 ORDER BY m.joined_at",
    )
    .bind(team_id)
    .fetch_all(db)
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

/// Creates team `id` owned by `owner` (inside the caller's transaction).
pub async fn create(
    conn: &mut PgConnection,
    id: &str,
    name: &str,
    owner: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO teams (id, name, slug) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(crate::ids::new_secret(12).to_lowercase())
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(id)
        .bind(owner)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn rename(db: &PgPool, id: &str, name: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE teams SET name = $2 WHERE id = $1")
        .bind(id)
        .bind(name)
        .execute(db)
        .await?;
    Ok(())
}

/// Marks the team deleted (its records stay).
pub async fn mark_deleted(db: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE teams SET deleted_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether `user_id` was added (false: already a member).
pub async fn add_member(
    db: &PgPool,
    team_id: &str,
    user_id: &str,
    role: Role,
) -> sqlx::Result<bool> {
    let added = sqlx::query(
        "INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(team_id)
    .bind(user_id)
    .bind(role)
    .execute(db)
    .await?;
    Ok(added.rows_affected() > 0)
}

/// `user_id`'s role in `team_id`, whatever the team's state.
pub async fn role_of(db: &PgPool, team_id: &str, user_id: &str) -> sqlx::Result<Option<Role>> {
    sqlx::query_scalar("SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2")
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(db)
        .await
}

pub async fn set_role(db: &PgPool, team_id: &str, user_id: &str, role: Role) -> sqlx::Result<()> {
    sqlx::query("UPDATE team_members SET role = $3 WHERE team_id = $1 AND user_id = $2")
        .bind(team_id)
        .bind(user_id)
        .bind(role)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn remove_member(db: &PgPool, team_id: &str, user_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
        .bind(team_id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Every live team with its member and live capsule counts.
pub async fn list_all(db: &PgPool) -> sqlx::Result<Vec<AdminTeam>> {
    sqlx::query_as::<_, AdminTeam>(
        "SELECT t.id, t.name, t.slug, t.created_at,
                (SELECT count(*) FROM team_members m WHERE m.team_id = t.id) AS members,
                (SELECT count(*) FROM capsules c WHERE c.team_id = t.id
                   AND c.status NOT IN ('stopped', 'error')) AS active_capsules
           FROM teams t WHERE t.deleted_at IS NULL ORDER BY t.created_at",
    )
    .fetch_all(db)
    .await
}
