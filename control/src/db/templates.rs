//! Template rows: platform templates every team sees, and team snapshots.

use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgPool};
use utoipa::ToSchema;

use super::capsules::ts;
use crate::error::ApiError;

#[derive(Debug, Clone, FromRow)]
pub struct TemplateRow {
    pub id: String,
    pub team_id: Option<String>,
    pub name: String,
    pub agent_name: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub vcpus: Option<i32>,
    pub memory_mb: Option<i32>,
    pub size_bytes: i64,
    pub host_id: Option<String>,
    pub default_user: String,
    pub default_workdir: Option<String>,
    pub default_env: Value,
    pub shell: String,
    pub protected: bool,
    pub metadata: Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Wrenn's `Template` schema.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub vcpus: Option<i32>,
    pub memory_mb: Option<i32>,
    pub size_bytes: i64,
    pub created_at: String,
    pub platform: bool,
    pub protected: bool,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl TemplateRow {
    pub fn view(&self) -> TemplateView {
        TemplateView {
            name: self.name.clone(),
            kind: self.kind.clone(),
            vcpus: self.vcpus,
            memory_mb: self.memory_mb,
            size_bytes: self.size_bytes,
            created_at: ts(self.created_at),
            platform: self.team_id.is_none(),
            protected: self.protected,
            metadata: self.metadata.clone(),
        }
    }

    /// Snapshots exist only on the host they were taken on.
    pub fn pinned(&self) -> bool {
        self.kind == "snapshot"
    }

    /// The command prefix that runs a shell string in this template
    /// (`/bin/bash -l -c` on full images, `/bin/sh -c` on busybox ones).
    pub fn shell_argv(&self) -> Vec<String> {
        self.shell.split_whitespace().map(String::from).collect()
    }
}

/// The template `name` as `team_id` sees it: its own first, then the
/// platform's.
pub async fn resolve(db: &PgPool, team_id: &str, name: &str) -> Result<TemplateRow, ApiError> {
    sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates WHERE name = $1 AND (team_id = $2 OR team_id IS NULL)
          ORDER BY team_id NULLS LAST LIMIT 1",
    )
    .bind(name)
    .bind(team_id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("template '{name}' not found")))
}

pub async fn by_id(db: &PgPool, id: &str) -> sqlx::Result<Option<TemplateRow>> {
    sqlx::query_as::<_, TemplateRow>("SELECT * FROM templates WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Defaults for templates the agents build in (the busybox `tiny` has no
/// bash). Unknown templates get bash.
pub fn builtin_shell(agent_name: &str) -> &'static str {
    match agent_name {
        "tiny" => "/bin/sh -c",
        _ => "/bin/bash -l -c",
    }
}

/// Makes a platform template of every base template an agent reports that
/// is not known yet (agents create built-ins such as `tiny` on demand).
pub async fn register_reported(db: &PgPool, agent_name: &str, size: i64) -> sqlx::Result<()> {
    if agent_name.starts_with("snap-") {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO templates (id, team_id, name, agent_name, type, size_bytes, shell, protected)
         VALUES ($1, NULL, $2, $2, 'base', $3, $4, TRUE)
         ON CONFLICT DO NOTHING",
    )
    .bind(crate::ids::new_id("tpl-"))
    .bind(agent_name)
    .bind(size)
    .bind(builtin_shell(agent_name))
    .execute(db)
    .await?;
    Ok(())
}
