//! The layer cache: the filesystem after a step, kept on the host that
//! built it as an agent template (a snapshot of the build capsule), found
//! by the step's cache key. Per team: a team's layers are built only from
//! what that team uploaded and are never offered to another.
//!
//! A layer counts only while its host reports holding it (`host_templates`,
//! kept by the host sync); beyond the configured number per team the least
//! recently used go (from the agents first, then here).

use sha2::{Digest, Sha256};
use sqlx::{FromRow, PgPool};

use crate::api::snapshots;
use crate::app::AppState;
use crate::db::templates::SNAPSHOT_PREFIX;
use crate::recipe::cache::CacheKey;

/// One stored layer.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct Layer {
    pub cache_key: String,
    pub host_id: String,
    pub agent_name: String,
}

/// The agent template name of `team_id`'s layer for `key` (the same on
/// every host; a valid agent template name: 55 of `[a-z0-9-]`).
pub fn layer_name(team_id: &str, key: &CacheKey) -> String {
    let mut h = Sha256::new();
    h.update(team_id.as_bytes());
    h.update([0]);
    h.update(key.0);
    let digest = hex::encode(h.finalize());
    format!("{SNAPSHOT_PREFIX}l-{}", &digest[..48])
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

/// Removes layer `agent_name` from the hosts holding it and from the cache.
pub async fn remove(app: &AppState, agent_name: &str) -> anyhow::Result<()> {
    snapshots::delete_agent_template(app, agent_name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    sqlx::query("DELETE FROM build_cache WHERE agent_name = $1")
        .bind(agent_name)
        .execute(&app.db)
        .await?;
    Ok(())
}

/// Drops a layer the cache still lists but its host no longer holds.
pub async fn forget(db: &PgPool, layer: &Layer) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM build_cache WHERE host_id = $1 AND agent_name = $2")
        .bind(&layer.host_id)
        .bind(&layer.agent_name)
        .execute(db)
        .await?;
    Ok(())
}

/// Keeps `team_id`'s `keep` most recently used layers and removes the
/// rest (a layer a capsule still runs on stays until a later pass).
pub async fn evict(app: &AppState, team_id: &str, keep: i64) -> anyhow::Result<usize> {
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT agent_name FROM build_cache WHERE team_id = $1
          ORDER BY last_used_at DESC OFFSET $2",
    )
    .bind(team_id)
    .bind(keep)
    .fetch_all(&app.db)
    .await?;
    let mut removed = 0;
    for name in old {
        match remove(app, &name).await {
            Ok(()) => removed += 1,
            Err(e) => tracing::info!(layer = %name, error = %e, "layer kept for now"),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_are_valid_agent_names_and_team_scoped() {
        let key = CacheKey([7; 32]);
        let a = layer_name("team-a", &key);
        assert_eq!(a.len(), 55);
        assert!(a.starts_with("snap-l-"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(a, layer_name("team-a", &key));
        assert_ne!(a, layer_name("team-b", &key));
        assert_ne!(a, layer_name("team-a", &CacheKey([8; 32])));
    }
}
