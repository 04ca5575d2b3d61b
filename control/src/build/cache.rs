//! The layer cache: the filesystem after a step, kept on the host that
//! built it as an agent template (a snapshot of the build capsule), found
//! by the step's cache key. Per team: a team's layers are built only from
//! what that team uploaded and are never offered to another.
//!
//! A layer counts only while its host reports holding it (`host_templates`,
//! kept by the host sync); beyond the configured number per team the least
//! recently used go (from the agents first, then here).

use sha2::{Digest, Sha256};
use warren_recipe::cache::CacheKey;

use crate::app::AppState;
use crate::db::build_cache;
use crate::db::templates::SNAPSHOT_PREFIX;
use crate::domain::templates::{self, TemplateError};

pub use crate::db::build_cache::Layer;

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

/// Removes layer `agent_name` from the hosts holding it and from the cache.
pub async fn remove(app: &AppState, agent_name: &str) -> Result<(), TemplateError> {
    templates::delete_agent_template(app, agent_name).await?;
    build_cache::forget(&app.db, agent_name, None).await?;
    Ok(())
}

/// Keeps `team_id`'s `keep` most recently used layers and removes the
/// rest (a layer a capsule still runs on stays until a later pass).
pub async fn evict(app: &AppState, team_id: &str, keep: i64) -> Result<usize, TemplateError> {
    let mut removed = 0;
    for name in build_cache::beyond(&app.db, team_id, keep).await? {
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
