//! API keys (stored as SHA-256 digests).

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};
use warren_api_types::accounts::KeyResponse;
use warren_api_types::time::ts;

#[derive(Debug, FromRow)]
pub struct KeyRow {
    pub id: String,
    pub team_id: String,
    pub created_by: Option<String>,
    pub name: String,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyRow {
    /// The key as listed; `key` only in the response that created it.
    pub fn view(self, key: Option<String>) -> KeyResponse {
        KeyResponse {
            id: self.id,
            team_id: self.team_id,
            name: self.name,
            key_prefix: self.key_prefix,
            created_at: ts(self.created_at),
            last_used: self.last_used.map(ts),
            expires_at: self.expires_at.map(ts),
            revoked: self.revoked_at.is_some(),
            key,
        }
    }
}

/// A key to store.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub id: &'a str,
    pub team_id: &'a str,
    pub created_by: Option<&'a str>,
    pub name: &'a str,
    pub prefix: &'a str,
    pub hash: &'a [u8],
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn insert(db: &PgPool, k: &NewKey<'_>) -> sqlx::Result<KeyRow> {
    sqlx::query_as::<_, KeyRow>(
        "INSERT INTO api_keys (id, team_id, created_by, name, key_prefix, key_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
    )
    .bind(k.id)
    .bind(k.team_id)
    .bind(k.created_by)
    .bind(k.name)
    .bind(k.prefix)
    .bind(k.hash)
    .bind(k.expires_at)
    .fetch_one(db)
    .await
}

/// `team_id`'s keys, newest first.
pub async fn list(db: &PgPool, team_id: &str) -> sqlx::Result<Vec<KeyRow>> {
    sqlx::query_as::<_, KeyRow>(
        "SELECT * FROM api_keys WHERE team_id = $1 ORDER BY created_at DESC",
    )
    .bind(team_id)
    .fetch_all(db)
    .await
}

/// `team_id`'s unrevoked key `id`.
pub async fn active(db: &PgPool, team_id: &str, id: &str) -> sqlx::Result<Option<KeyRow>> {
    sqlx::query_as::<_, KeyRow>(
        "SELECT * FROM api_keys WHERE id = $1 AND team_id = $2 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(team_id)
    .fetch_optional(db)
    .await
}

pub async fn revoke(db: &PgPool, team_id: &str, id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND team_id = $2")
        .bind(id)
        .bind(team_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The key stored under `hash`, if its team is live.
pub async fn by_hash(db: &PgPool, hash: &[u8]) -> sqlx::Result<Option<KeyRow>> {
    sqlx::query_as::<_, KeyRow>(
        "SELECT k.* FROM api_keys k JOIN teams t ON t.id = k.team_id
          WHERE k.key_hash = $1 AND t.deleted_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(db)
    .await
}

/// Records a use of key `id`, at most once a minute.
pub async fn touch(db: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE api_keys SET last_used = now()
          WHERE id = $1 AND (last_used IS NULL OR last_used < now() - interval '1 minute')",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}
