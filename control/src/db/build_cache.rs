//! The build layer cache's rows: which host holds which team's layer for
//! a step's cache key, and when it was last used.

use sqlx::{FromRow, PgPool};

/// One stored layer.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct Layer {
    pub cache_key: String,
    pub host_id: String,
    pub agent_name: String,
}

/// Stored layers of `team_id` for any of `keys`, on online hosts that
/// still hold them.
pub async fn find(db: &PgPool, team_id: &str, keys: &[String]) -> sqlx::Result<Vec<Layer>> {
    sqlx::query_as::<_, Layer>(
        "SELECT c.cache_key, c.host_id, c.agent_name FROM build_cache c
           JOIN hosts h ON h.id = c.host_id AND h.status = 'online' AND h.deleted_at IS NULL
           JOIN host_templates t ON t.host_id = c.host_id AND t.agent_name = c.agent_name
          WHERE c.team_id = $1 AND c.cache_key = ANY($2)",
    )
    .bind(team_id)
    .bind(keys)
    .fetch_all(db)
    .await
}

/// Records a layer made by `build_id` (or marks an existing one used).
pub async fn record(
    db: &PgPool,
    team_id: &str,
    layer: &Layer,
    build_id: &str,
    size_bytes: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO build_cache (team_id, cache_key, host_id, agent_name, build_id, size_bytes)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (team_id, cache_key, host_id) DO UPDATE SET last_used_at = now(),
             size_bytes = EXCLUDED.size_bytes",
    )
    .bind(team_id)
    .bind(&layer.cache_key)
    .bind(&layer.host_id)
    .bind(&layer.agent_name)
    .bind(build_id)
    .bind(size_bytes)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks `layer` used now (it survives eviction longest).
pub async fn touch(db: &PgPool, team_id: &str, layer: &Layer) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE build_cache SET last_used_at = now()
          WHERE team_id = $1 AND cache_key = $2 AND host_id = $3",
    )
    .bind(team_id)
    .bind(&layer.cache_key)
    .bind(&layer.host_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Drops the rows of layer `agent_name` (on `host_id` only, when given).
pub async fn forget(db: &PgPool, agent_name: &str, host_id: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM build_cache WHERE agent_name = $1 AND ($2::TEXT IS NULL OR host_id = $2)",
    )
    .bind(agent_name)
    .bind(host_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Agent names of `team_id`'s layers beyond the `keep` most recently used.
pub async fn beyond(db: &PgPool, team_id: &str, keep: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT agent_name FROM build_cache WHERE team_id = $1
          ORDER BY last_used_at DESC OFFSET $2",
    )
    .bind(team_id)
    .bind(keep)
    .fetch_all(db)
    .await
}
