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
    if agent_name.starts_with(SNAPSHOT_PREFIX) {
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

/// Checks that `team_id` may give a template `name`: platform names are
/// never free; a team template of that name is returned to be replaced
/// when `overwrite`, else it is a conflict.
pub async fn claim_name(
    db: &PgPool,
    team_id: &str,
    name: &str,
    overwrite: bool,
) -> Result<Option<TemplateRow>, ApiError> {
    let existing = sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates WHERE name = $1 AND (team_id = $2 OR team_id IS NULL)",
    )
    .bind(name)
    .bind(team_id)
    .fetch_all(db)
    .await?;
    if existing.iter().any(|t| t.team_id.is_none()) {
        return Err(ApiError::Conflict(format!(
            "'{name}' is a platform template name"
        )));
    }
    let previous = existing.into_iter().next();
    if previous.is_some() && !overwrite {
        return Err(ApiError::Conflict(format!(
            "a template named '{name}' already exists (use overwrite=true)"
        )));
    }
    Ok(previous)
}

/// The agent name a new version of a team template is stored under on
/// `host_id`, and whether that replaces one there: the previous version's
/// name when it lives on the same host (the agent swaps it atomically and
/// capsules running on it keep theirs), else a fresh one.
pub fn agent_name_for(previous: Option<&TemplateRow>, host_id: &str) -> (String, bool) {
    match previous {
        Some(p) if p.host_id.as_deref() == Some(host_id) => (p.agent_name.clone(), true),
        _ => (crate::ids::new_id(SNAPSHOT_PREFIX), false),
    }
}

/// Agent names of team templates and build layers start with this; agents
/// report them like any template, and they are never taken for platform
/// templates.
pub const SNAPSHOT_PREFIX: &str = "snap-";

/// A team template as a snapshot or a build makes it.
#[derive(Debug, Clone)]
pub struct TeamTemplate {
    pub team_id: String,
    pub name: String,
    pub agent_name: String,
    pub host_id: String,
    pub size_bytes: i64,
    pub vcpus: Option<i32>,
    pub memory_mb: Option<i32>,
    pub default_user: String,
    pub default_workdir: Option<String>,
    pub default_env: Value,
    pub shell: String,
    pub metadata: Value,
}

/// Writes `t`: a new row, or `previous` replaced in place (same id, so
/// capsules made from it still point at it). A name taken meanwhile is a
/// conflict.
pub async fn put_team_template(
    conn: &mut sqlx::PgConnection,
    t: &TeamTemplate,
    previous: Option<&TemplateRow>,
) -> Result<TemplateRow, ApiError> {
    sqlx::query_as::<_, TemplateRow>(
        "INSERT INTO templates (id, team_id, name, agent_name, type, vcpus, memory_mb, size_bytes,
                                host_id, default_user, default_workdir, default_env, shell, metadata)
         VALUES ($1, $2, $3, $4, 'snapshot', $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (id) DO UPDATE SET agent_name = EXCLUDED.agent_name,
             vcpus = EXCLUDED.vcpus, memory_mb = EXCLUDED.memory_mb,
             size_bytes = EXCLUDED.size_bytes, host_id = EXCLUDED.host_id,
             default_user = EXCLUDED.default_user, default_workdir = EXCLUDED.default_workdir,
             default_env = EXCLUDED.default_env, shell = EXCLUDED.shell,
             metadata = EXCLUDED.metadata, created_at = now()
         RETURNING *",
    )
    .bind(previous.map_or_else(|| crate::ids::new_id("tpl-"), |p| p.id.clone()))
    .bind(&t.team_id)
    .bind(&t.name)
    .bind(&t.agent_name)
    .bind(t.vcpus)
    .bind(t.memory_mb)
    .bind(t.size_bytes)
    .bind(&t.host_id)
    .bind(&t.default_user)
    .bind(&t.default_workdir)
    .bind(&t.default_env)
    .bind(&t.shell)
    .bind(&t.metadata)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            ApiError::Conflict(format!("a template named '{}' already exists", t.name))
        }
        _ => e.into(),
    })
}
