//! Template rows: platform templates every team sees, and team snapshots.

use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};
use warren_api_types::status::TemplateKind;
use warren_api_types::templates::TemplateView;
use warren_api_types::time::ts;

#[derive(Debug, Clone, FromRow)]
pub struct TemplateRow {
    pub id: String,
    pub team_id: Option<String>,
    pub name: String,
    pub agent_name: String,
    #[sqlx(rename = "type")]
    pub kind: TemplateKind,
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

impl TemplateRow {
    pub fn view(&self) -> TemplateView {
        TemplateView {
            name: self.name.clone(),
            kind: self.kind,
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
        self.kind == TemplateKind::Snapshot
    }

    /// The command prefix that runs a shell string in this template
    /// (`/bin/bash -l -c` on full images, `/bin/sh -c` on busybox ones).
    pub fn shell_argv(&self) -> Vec<String> {
        self.shell.split_whitespace().map(String::from).collect()
    }

    /// The template's default environment, as strings.
    pub fn env<C: FromIterator<(String, String)>>(&self) -> C {
        self.default_env
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect()
    }
}

/// The template `name` as `team_id` sees it: its own first, then the
/// platform's.
pub async fn resolve(db: &PgPool, team_id: &str, name: &str) -> sqlx::Result<Option<TemplateRow>> {
    sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates WHERE name = $1 AND (team_id = $2 OR team_id IS NULL)
          ORDER BY team_id NULLS LAST LIMIT 1",
    )
    .bind(name)
    .bind(team_id)
    .fetch_optional(db)
    .await
}

/// Every template named `name` that `team_id` sees (its own and the
/// platform's).
pub async fn named(db: &PgPool, team_id: &str, name: &str) -> sqlx::Result<Vec<TemplateRow>> {
    sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates WHERE name = $1 AND (team_id = $2 OR team_id IS NULL)",
    )
    .bind(name)
    .bind(team_id)
    .fetch_all(db)
    .await
}

pub async fn by_id(db: &PgPool, id: &str) -> sqlx::Result<Option<TemplateRow>> {
    sqlx::query_as::<_, TemplateRow>("SELECT * FROM templates WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The templates `team_id` can use (every template with `None`), platform
/// ones first, optionally of one kind.
pub async fn list(
    db: &PgPool,
    team_id: Option<&str>,
    kind: Option<TemplateKind>,
) -> sqlx::Result<Vec<TemplateRow>> {
    sqlx::query_as::<_, TemplateRow>(
        "SELECT * FROM templates WHERE ($1::TEXT IS NULL OR team_id = $1 OR team_id IS NULL)
            AND ($2::TEXT IS NULL OR type = $2) ORDER BY team_id NULLS FIRST, name",
    )
    .bind(team_id)
    .bind(kind)
    .fetch_all(db)
    .await
}

/// The platform template `name`.
pub async fn platform(db: &PgPool, name: &str) -> sqlx::Result<Option<TemplateRow>> {
    sqlx::query_as::<_, TemplateRow>("SELECT * FROM templates WHERE team_id IS NULL AND name = $1")
        .bind(name)
        .fetch_optional(db)
        .await
}

pub async fn delete(db: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM templates WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Defaults for templates the agents build in (the busybox `tiny` has no
/// bash). Unknown templates get bash.
pub fn builtin_shell(agent_name: &str) -> &'static str {
    match agent_name {
        "tiny" => "/bin/sh -c",
        _ => "/bin/bash -l -c",
    }
}

/// Agent names of team templates and build layers start with this; agents
/// report them like any template, and they are never taken for platform
/// templates.
pub const SNAPSHOT_PREFIX: &str = "snap-";

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

/// A platform base template as an administrator registers it.
#[derive(Debug, Clone)]
pub struct PlatformTemplate<'a> {
    pub name: &'a str,
    pub agent_name: &'a str,
    pub vcpus: Option<i32>,
    pub memory_mb: Option<i32>,
    pub default_user: Option<&'a str>,
    pub default_workdir: Option<&'a str>,
    pub default_env: Value,
    pub shell: Option<&'a str>,
}

/// Registers `t`, or updates the one stored under its agent name. A name
/// clash is a unique violation.
pub async fn put_platform(db: &PgPool, t: &PlatformTemplate<'_>) -> sqlx::Result<TemplateRow> {
    sqlx::query_as::<_, TemplateRow>(
        "INSERT INTO templates (id, team_id, name, agent_name, type, vcpus, memory_mb, default_user,
                                default_workdir, default_env, shell, protected)
         VALUES ($1, NULL, $2, $3, 'base', $4, $5, COALESCE($6, 'user'), $7, $8, COALESCE($9, '/bin/bash -l -c'), TRUE)
         ON CONFLICT (agent_name) DO UPDATE SET vcpus = EXCLUDED.vcpus, memory_mb = EXCLUDED.memory_mb,
             default_user = EXCLUDED.default_user, default_workdir = EXCLUDED.default_workdir,
             default_env = EXCLUDED.default_env, shell = EXCLUDED.shell
         RETURNING *",
    )
    .bind(crate::ids::new_id("tpl-"))
    .bind(t.name)
    .bind(t.agent_name)
    .bind(t.vcpus)
    .bind(t.memory_mb)
    .bind(t.default_user)
    .bind(t.default_workdir)
    .bind(&t.default_env)
    .bind(t.shell)
    .fetch_one(db)
    .await
}

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
/// unique violation.
pub async fn put_team_template(
    conn: &mut PgConnection,
    t: &TeamTemplate,
    previous: Option<&TemplateRow>,
) -> sqlx::Result<TemplateRow> {
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
}
