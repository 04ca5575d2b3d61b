//! The audit trail.

use serde_json::Value;
use sqlx::PgPool;
use warren_api_types::audit::AuditEntry;

/// One audit row as written.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub team_id: String,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub action: String,
    pub success: bool,
    pub http_status: i32,
    pub metadata: Value,
}

pub async fn insert(db: &PgPool, e: &NewEntry) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_logs (team_id, actor_type, actor_id, actor_name, resource_type,
                                 resource_id, action, status, http_status, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&e.team_id)
    .bind(&e.actor_type)
    .bind(&e.actor_id)
    .bind(&e.actor_name)
    .bind(&e.resource_type)
    .bind(&e.resource_id)
    .bind(&e.action)
    .bind(if e.success { "success" } else { "error" })
    .bind(e.http_status)
    .bind(&e.metadata)
    .execute(db)
    .await?;
    Ok(())
}

/// Which rows of a team's trail to read.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    pub before_id: Option<i64>,
    pub resource_type: Option<&'a str>,
    pub action: Option<&'a str>,
    pub limit: i64,
}

/// `team_id`'s rows, newest first.
pub async fn list(db: &PgPool, team_id: &str, f: &Filter<'_>) -> sqlx::Result<Vec<AuditEntry>> {
    sqlx::query_as::<_, AuditEntry>(
        "SELECT id, actor_type, actor_id, actor_name, resource_type, resource_id, action, status,
                http_status, metadata, created_at
           FROM audit_logs
          WHERE team_id = $1 AND ($2::BIGINT IS NULL OR id < $2)
            AND ($3::TEXT IS NULL OR resource_type = $3) AND ($4::TEXT IS NULL OR action = $4)
          ORDER BY id DESC LIMIT $5",
    )
    .bind(team_id)
    .bind(f.before_id)
    .bind(f.resource_type)
    .bind(f.action)
    .bind(f.limit)
    .fetch_all(db)
    .await
}
