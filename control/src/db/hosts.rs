//! Host rows: records, registration and heartbeat tokens, tags, the
//! templates each host holds, the loads the scheduler places by, and the
//! sweeps of the monitor and the host sync.

use std::time::Duration;

use sqlx::{FromRow, PgConnection, PgPool};
use warren_api_types::hosts::Host;
use warren_api_types::status::{CapsuleStatus, HostKind, HostStatus};

use crate::scheduler::HostLoad;

/// What it takes to reach a host's agent.
#[derive(Debug, Clone, FromRow)]
pub struct HostConn {
    pub id: String,
    pub status: HostStatus,
    pub address: Option<String>,
    pub agent_token: Option<String>,
    pub proxy_address: Option<String>,
}

/// A host that is not deleted.
pub async fn conn(db: &PgPool, host_id: &str) -> sqlx::Result<Option<HostConn>> {
    sqlx::query_as::<_, HostConn>(
        "SELECT id, status, address, agent_token, proxy_address FROM hosts
          WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(host_id)
    .fetch_optional(db)
    .await
}

const HOST_SELECT: &str = "SELECT h.id, h.type, h.team_id, h.provider, h.availability_zone, h.arch,
        h.cpu_cores, h.memory_mb, h.disk_gb, h.address, h.proxy_address, h.backend, h.status,
        h.last_heartbeat_at, h.created_by, h.created_at, h.updated_at,
        ARRAY(SELECT tag FROM host_tags t WHERE t.host_id = h.id ORDER BY tag) AS tags
   FROM hosts h WHERE h.deleted_at IS NULL";

/// Host `id` if it is visible: to everyone with `all`, else only to
/// `team_id` (its BYOC hosts).
pub async fn visible(
    db: &PgPool,
    id: &str,
    all: bool,
    team_id: &str,
) -> sqlx::Result<Option<Host>> {
    sqlx::query_as::<_, Host>(&format!(
        "{HOST_SELECT} AND h.id = $1 AND ($2 OR h.team_id = $3)"
    ))
    .bind(id)
    .bind(all)
    .bind(team_id)
    .fetch_optional(db)
    .await
}

/// Every visible host (see [`visible`]), oldest first.
pub async fn list_visible(db: &PgPool, all: bool, team_id: &str) -> sqlx::Result<Vec<Host>> {
    sqlx::query_as::<_, Host>(&format!(
        "{HOST_SELECT} AND ($1 OR h.team_id = $2) ORDER BY h.created_at"
    ))
    .bind(all)
    .bind(team_id)
    .fetch_all(db)
    .await
}

/// A new host record, waiting for its agent.
#[derive(Debug, Clone)]
pub struct NewHost<'a> {
    pub id: &'a str,
    pub kind: HostKind,
    pub team_id: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub availability_zone: Option<&'a str>,
    pub created_by: &'a str,
}

pub async fn insert(db: &PgPool, h: &NewHost<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO hosts (id, type, team_id, provider, availability_zone, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(h.id)
    .bind(h.kind)
    .bind(h.team_id)
    .bind(h.provider)
    .bind(h.availability_zone)
    .bind(h.created_by)
    .execute(db)
    .await?;
    Ok(())
}

/// Stores the digest of a registration token valid for `ttl`.
pub async fn set_registration(
    db: &PgPool,
    id: &str,
    token_hash: &[u8],
    ttl: Duration,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE hosts SET registration_token_hash = $2,
                registration_expires_at = now() + $3::BIGINT * interval '1 second', updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(token_hash)
    .bind(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
    .execute(db)
    .await?;
    Ok(())
}

/// What an agent reports when it registers.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    pub registration_hash: Vec<u8>,
    pub address: &'a str,
    pub proxy_address: Option<&'a str>,
    pub agent_token: &'a str,
    pub host_token_hash: Vec<u8>,
    pub arch: Option<&'a str>,
    pub cpu_cores: Option<i32>,
    pub memory_mb: Option<i64>,
    pub disk_gb: Option<i32>,
}

/// Brings the host whose unexpired registration token this is online;
/// `(id, team_id)`, or `None` for an unknown or expired token.
pub async fn register(
    db: &PgPool,
    r: &Registration<'_>,
) -> sqlx::Result<Option<(String, Option<String>)>> {
    sqlx::query_as(
        "UPDATE hosts SET status = 'online', address = $2, proxy_address = $3, agent_token = $4,
                host_token_hash = $5, arch = $6, cpu_cores = $7, memory_mb = $8, disk_gb = $9,
                registration_token_hash = NULL, registration_expires_at = NULL,
                last_heartbeat_at = now(), next_sync_at = now(), updated_at = now()
          WHERE registration_token_hash = $1 AND registration_expires_at > now() AND deleted_at IS NULL
          RETURNING id, team_id",
    )
    .bind(&r.registration_hash)
    .bind(r.address)
    .bind(r.proxy_address)
    .bind(r.agent_token)
    .bind(&r.host_token_hash)
    .bind(r.arch)
    .bind(r.cpu_cores)
    .bind(r.memory_mb)
    .bind(r.disk_gb)
    .fetch_optional(db)
    .await
}

/// A heartbeat that found its host.
#[derive(Debug, Clone, FromRow)]
pub struct Beat {
    pub id: String,
    /// The status before this heartbeat.
    pub previous: HostStatus,
    pub team_id: Option<String>,
}

/// Marks the host of this host token online; it is synced at once if it
/// was unreachable.
pub async fn heartbeat(db: &PgPool, token_hash: &[u8]) -> sqlx::Result<Option<Beat>> {
    sqlx::query_as::<_, Beat>(
        "WITH prev AS (SELECT id, status FROM hosts WHERE host_token_hash = $1 AND deleted_at IS NULL FOR UPDATE)
         UPDATE hosts h SET last_heartbeat_at = now(), status = 'online', updated_at = now(),
                next_sync_at = CASE WHEN prev.status = 'unreachable' THEN now() ELSE h.next_sync_at END
           FROM prev WHERE h.id = prev.id
         RETURNING h.id, prev.status AS previous, h.team_id",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

/// Marks a host deleted and forgets its tokens.
pub async fn delete(db: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE hosts SET deleted_at = now(), status = 'offline', host_token_hash = NULL,
                registration_token_hash = NULL, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn add_tag(db: &PgPool, id: &str, tag: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO host_tags (host_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(tag)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether the tag was there.
pub async fn remove_tag(db: &PgPool, id: &str, tag: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM host_tags WHERE host_id = $1 AND tag = $2")
        .bind(id)
        .bind(tag)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Online hosts silent for longer than `timeout` become unreachable;
/// `(id, team_id)` of each.
pub async fn mark_unreachable(
    conn: &mut PgConnection,
    timeout: Duration,
) -> sqlx::Result<Vec<(String, Option<String>)>> {
    sqlx::query_as(
        "UPDATE hosts SET status = 'unreachable', updated_at = now()
          WHERE status = 'online' AND deleted_at IS NULL
            AND last_heartbeat_at < now() - $1::BIGINT * interval '1 millisecond'
          RETURNING id, team_id",
    )
    .bind(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await
}

/// Claims up to five online hosts due for a sync; the next one is `every`
/// from now.
pub async fn claim_due(db: &PgPool, every: Duration) -> sqlx::Result<Vec<HostConn>> {
    sqlx::query_as::<_, HostConn>(
        "UPDATE hosts SET next_sync_at = now() + $1::BIGINT * interval '1 millisecond'
          WHERE id IN (SELECT id FROM hosts WHERE status = 'online' AND deleted_at IS NULL
                         AND next_sync_at <= now() ORDER BY next_sync_at LIMIT 5 FOR UPDATE SKIP LOCKED)
          RETURNING id, status, address, agent_token, proxy_address",
    )
    .bind(i64::try_from(every.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await
}

/// What an agent says about its host.
#[derive(Debug, Clone)]
pub struct Info<'a> {
    pub cpu_cores: i32,
    pub memory_mb: i64,
    pub disk_gb: i32,
    pub backend: &'a str,
    pub agent_version: &'a str,
    /// Empty: keep the one registered.
    pub proxy_address: &'a str,
}

pub async fn update_info(db: &PgPool, id: &str, i: &Info<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE hosts SET cpu_cores = $2, memory_mb = $3, disk_gb = $4, backend = $5, agent_version = $6,
                proxy_address = COALESCE(NULLIF($7, ''), proxy_address), updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(i.cpu_cores)
    .bind(i.memory_mb)
    .bind(i.disk_gb)
    .bind(i.backend)
    .bind(i.agent_version)
    .bind(i.proxy_address)
    .execute(db)
    .await?;
    Ok(())
}

/// The agent templates `host_id` holds are exactly `templates` (name,
/// size).
pub async fn replace_templates(
    db: &PgPool,
    host_id: &str,
    templates: &[(String, i64)],
) -> sqlx::Result<()> {
    let names: Vec<&str> = templates.iter().map(|(n, _)| n.as_str()).collect();
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM host_templates WHERE host_id = $1 AND NOT (agent_name = ANY($2))")
        .bind(host_id)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    for (name, size) in templates {
        record_template(&mut tx, host_id, name, Some(*size)).await?;
    }
    tx.commit().await
}

/// Records that `host_id` holds agent template `agent_name` (its size
/// updated when given).
pub async fn record_template(
    conn: &mut PgConnection,
    host_id: &str,
    agent_name: &str,
    size_bytes: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO host_templates (host_id, agent_name, size_bytes) VALUES ($1, $2, COALESCE($3, 0))
         ON CONFLICT (host_id, agent_name)
         DO UPDATE SET size_bytes = COALESCE($3, host_templates.size_bytes)",
    )
    .bind(host_id)
    .bind(agent_name)
    .bind(size_bytes)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Hosts that hold agent template `agent_name`.
pub async fn template_holders(db: &PgPool, agent_name: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT host_id FROM host_templates WHERE agent_name = $1")
        .bind(agent_name)
        .fetch_all(db)
        .await
}

pub async fn forget_template(db: &PgPool, host_id: &str, agent_name: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM host_templates WHERE host_id = $1 AND agent_name = $2")
        .bind(host_id)
        .bind(agent_name)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(Debug, FromRow)]
struct LoadRow {
    id: String,
    status: HostStatus,
    cpu_cores: Option<i32>,
    memory_mb: Option<i64>,
    vcpus_used: i64,
    memory_used: i64,
    has_template: bool,
}

/// Load of every host `team_id` may use, locking their rows until the
/// transaction ends (`only`: just that host, for resumes).
pub async fn lock_loads(
    conn: &mut PgConnection,
    team_id: &str,
    agent_template: &str,
    only: Option<&str>,
    cpu_overcommit: f64,
    memory_overcommit: f64,
) -> sqlx::Result<Vec<HostLoad>> {
    // Lock first, then read the load in a second statement: under READ
    // COMMITTED that statement's snapshot is taken after the locks are
    // held, so it sees every capsule a concurrent create committed.
    sqlx::query(
        "SELECT h.id FROM hosts h
          WHERE h.deleted_at IS NULL AND h.status <> 'pending'
            AND (h.type = 'regular' OR h.team_id = $1)
            AND ($2::TEXT IS NULL OR h.id = $2)
          ORDER BY h.id
          FOR UPDATE",
    )
    .bind(team_id)
    .bind(only)
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query_as::<_, LoadRow>(
        "SELECT h.id, h.status, h.cpu_cores, h.memory_mb,
                COALESCE((SELECT sum(c.vcpus) FROM capsules c
                           WHERE c.host_id = h.id AND c.status = ANY($3)), 0)::BIGINT AS vcpus_used,
                COALESCE((SELECT sum(c.memory_mb) FROM capsules c
                           WHERE c.host_id = h.id AND c.status = ANY($3)), 0)::BIGINT AS memory_used,
                EXISTS (SELECT 1 FROM host_templates t
                         WHERE t.host_id = h.id AND t.agent_name = $2) AS has_template
           FROM hosts h
          WHERE h.deleted_at IS NULL AND h.status <> 'pending'
            AND (h.type = 'regular' OR h.team_id = $1)
            AND ($4::TEXT IS NULL OR h.id = $4)
          ORDER BY h.id",
    )
    .bind(team_id)
    .bind(agent_template)
    .bind(CapsuleStatus::all_where(CapsuleStatus::holds_resources))
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| HostLoad {
            online: r.status == HostStatus::Online,
            vcpu_capacity: f64::from(r.cpu_cores.unwrap_or(0)) * cpu_overcommit,
            memory_capacity_mb: r.memory_mb.unwrap_or(0) as f64 * memory_overcommit,
            vcpus_used: r.vcpus_used as f64,
            memory_used_mb: r.memory_used as f64,
            has_template: r.has_template,
            id: r.id,
        })
        .collect())
}
