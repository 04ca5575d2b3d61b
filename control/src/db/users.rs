//! User accounts.

use sqlx::{FromRow, PgPool};
use warren_api_types::admin::AdminUser;
use warren_api_types::status::{Role, UserStatus};

/// A new account and the team it owns.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub is_admin: bool,
    pub team_id: &'a str,
    pub team_name: &'a str,
}

/// Creates the account and its team in one transaction; `false` (nothing
/// written) when the email is taken.
pub async fn create(db: &PgPool, u: &NewUser<'_>) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, is_admin) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(u.id)
    .bind(u.email)
    .bind(u.name)
    .bind(u.password_hash)
    .bind(u.is_admin)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    super::teams::create(&mut tx, u.team_id, u.team_name, u.id).await?;
    tx.commit().await?;
    Ok(true)
}

/// What a login checks.
#[derive(Debug, FromRow)]
pub struct Login {
    pub id: String,
    pub name: String,
    pub password_hash: String,
    pub status: UserStatus,
    /// The team a login acts for: the one it owns, else the oldest.
    pub team_id: Option<String>,
}

pub async fn login(db: &PgPool, email: &str) -> sqlx::Result<Option<Login>> {
    sqlx::query_as::<_, Login>(
        "SELECT u.id, u.name, u.password_hash, u.status,
                (SELECT m.team_id FROM team_members m JOIN teams t ON t.id = m.team_id
                  WHERE m.user_id = u.id AND t.deleted_at IS NULL
                  ORDER BY (m.role = 'owner') DESC, m.joined_at LIMIT 1) AS team_id
           FROM users u WHERE u.email = $1",
    )
    .bind(email)
    .fetch_optional(db)
    .await
}

/// A session's user as a member of its live team.
#[derive(Debug, FromRow)]
pub struct Member {
    pub name: String,
    pub email: String,
    pub is_admin: bool,
    pub status: UserStatus,
    pub role: Role,
}

pub async fn member(db: &PgPool, user_id: &str, team_id: &str) -> sqlx::Result<Option<Member>> {
    sqlx::query_as::<_, Member>(
        "SELECT u.name, u.email, u.is_admin, u.status, m.role
           FROM users u
           JOIN team_members m ON m.user_id = u.id AND m.team_id = $2
           JOIN teams t ON t.id = m.team_id AND t.deleted_at IS NULL
          WHERE u.id = $1",
    )
    .bind(user_id)
    .bind(team_id)
    .fetch_optional(db)
    .await
}

pub async fn id_by_email(db: &PgPool, email: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(db)
        .await
}

/// Renames `id`; its email.
pub async fn rename(db: &PgPool, id: &str, name: &str) -> sqlx::Result<String> {
    sqlx::query_scalar("UPDATE users SET name = $2 WHERE id = $1 RETURNING email")
        .bind(id)
        .bind(name)
        .fetch_one(db)
        .await
}

pub async fn list_all(db: &PgPool) -> sqlx::Result<Vec<AdminUser>> {
    sqlx::query_as::<_, AdminUser>(
        "SELECT id, email, name, is_admin, status, created_at FROM users ORDER BY created_at",
    )
    .fetch_all(db)
    .await
}

/// Sets what is given of `is_admin` and `status`.
pub async fn update(
    db: &PgPool,
    id: &str,
    is_admin: Option<bool>,
    status: Option<UserStatus>,
) -> sqlx::Result<Option<AdminUser>> {
    sqlx::query_as::<_, AdminUser>(
        "UPDATE users SET is_admin = COALESCE($2, is_admin), status = COALESCE($3, status)
          WHERE id = $1 RETURNING id, email, name, is_admin, status, created_at",
    )
    .bind(id)
    .bind(is_admin)
    .bind(status)
    .fetch_optional(db)
    .await
}
