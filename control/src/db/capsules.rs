//! Capsule rows and their state transitions. Every status change goes
//! through [`transition`], which checks the current status in the same
//! statement (so two callers racing on one capsule cannot both win), keeps
//! the running intervals that usage is computed from, and queues the
//! `capsule.state.changed` event in the same transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};
use warren_api_types::capsules::CapsuleView;
use warren_api_types::status::CapsuleStatus;
use warren_api_types::time::ts;

use crate::events::{self, Notification};

#[derive(Debug, Clone, FromRow)]
pub struct CapsuleRow {
    pub id: String,
    pub team_id: String,
    pub host_id: Option<String>,
    pub template_id: Option<String>,
    pub template: String,
    pub agent_template: String,
    pub status: CapsuleStatus,
    pub status_before_missing: Option<CapsuleStatus>,
    pub vcpus: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub timeout_sec: i32,
    pub metadata: Value,
    pub envd_token: String,
    pub error: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub last_active_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
}

impl CapsuleRow {
    /// The capsule as the REST API shows it.
    pub fn view(&self) -> CapsuleView {
        CapsuleView {
            id: self.id.clone(),
            status: self.status,
            template: self.template.clone(),
            vcpus: self.vcpus,
            memory_mb: self.memory_mb,
            timeout_sec: self.timeout_sec,
            disk_size_mb: self.disk_mb,
            created_at: ts(self.created_at),
            started_at: self.started_at.map(ts),
            last_active_at: self.last_active_at.map(ts),
            last_updated: ts(self.updated_at),
            metadata: self.metadata.clone(),
            error: self.error.clone(),
        }
    }
}

/// The capsule `id` of `team_id` (others' capsules are not found).
pub async fn get(db: &PgPool, team_id: &str, id: &str) -> sqlx::Result<Option<CapsuleRow>> {
    sqlx::query_as::<_, CapsuleRow>("SELECT * FROM capsules WHERE id = $1 AND team_id = $2")
        .bind(id)
        .bind(team_id)
        .fetch_optional(db)
        .await
}

pub async fn get_any(db: &PgPool, id: &str) -> sqlx::Result<Option<CapsuleRow>> {
    sqlx::query_as::<_, CapsuleRow>("SELECT * FROM capsules WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// `team_id`'s capsules (all teams' with `None`), newest first; those that
/// ended more than an hour ago are left out.
pub async fn list_recent(db: &PgPool, team_id: Option<&str>) -> sqlx::Result<Vec<CapsuleRow>> {
    sqlx::query_as::<_, CapsuleRow>(
        "SELECT * FROM capsules WHERE ($1::TEXT IS NULL OR team_id = $1)
            AND (status NOT IN ('stopped', 'error') OR updated_at > now() - interval '1 hour')
          ORDER BY created_at DESC",
    )
    .bind(team_id)
    .fetch_all(db)
    .await
}

/// Capsules not yet ended, of a team or on a host.
pub async fn live(
    db: &PgPool,
    team_id: Option<&str>,
    host_id: Option<&str>,
) -> sqlx::Result<Vec<CapsuleRow>> {
    sqlx::query_as::<_, CapsuleRow>(
        "SELECT * FROM capsules WHERE status NOT IN ('stopped', 'error')
            AND ($1::TEXT IS NULL OR team_id = $1) AND ($2::TEXT IS NULL OR host_id = $2)",
    )
    .bind(team_id)
    .bind(host_id)
    .fetch_all(db)
    .await
}

/// Live build capsules of `build_id` made by attempt `attempt` or earlier.
pub async fn live_of_build(
    db: &PgPool,
    build_id: &str,
    attempt: i32,
) -> sqlx::Result<Vec<CapsuleRow>> {
    sqlx::query_as::<_, CapsuleRow>(
        "SELECT * FROM capsules WHERE metadata->>'build_id' = $1
            AND COALESCE((metadata->>'build_attempt')::INT, 0) <= $2
            AND status NOT IN ('stopped', 'error')",
    )
    .bind(build_id)
    .bind(attempt)
    .fetch_all(db)
    .await
}

/// How many live capsules were made from template `template_id`.
pub async fn count_live_of_template(db: &PgPool, template_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM capsules WHERE template_id = $1 AND status NOT IN ('stopped', 'error')",
    )
    .bind(template_id)
    .fetch_one(db)
    .await
}

/// The host of capsule `id` while it may take traffic (not stopping or
/// stopped); `None` for unknown capsules.
pub async fn traffic_host(db: &PgPool, id: &str) -> sqlx::Result<Option<String>> {
    let host: Option<Option<String>> = sqlx::query_scalar(
        "SELECT host_id FROM capsules WHERE id = $1 AND status NOT IN ('stopped', 'stopping')",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(host.flatten())
}

/// A capsule placed on a host, about to be made there.
#[derive(Debug, Clone)]
pub struct NewCapsule {
    pub id: String,
    pub team_id: String,
    pub host_id: String,
    pub template_id: String,
    pub template: String,
    pub agent_template: String,
    pub vcpus: i32,
    pub memory_mb: i32,
    pub timeout_sec: i32,
    pub metadata: Value,
    pub envd_token: String,
    /// The `starting` row is held this long.
    pub lease: Duration,
}

/// Writes `c` as `starting` under its lease.
pub async fn insert(conn: &mut PgConnection, c: &NewCapsule) -> sqlx::Result<CapsuleRow> {
    sqlx::query_as::<_, CapsuleRow>(
        "INSERT INTO capsules (id, team_id, host_id, template_id, template, agent_template, status,
                               vcpus, memory_mb, timeout_sec, metadata, envd_token, lease_until)
         VALUES ($1, $2, $3, $4, $5, $6, 'starting', $7, $8, $9, $10, $11,
                 now() + $12::BIGINT * interval '1 millisecond')
         RETURNING *",
    )
    .bind(&c.id)
    .bind(&c.team_id)
    .bind(&c.host_id)
    .bind(&c.template_id)
    .bind(&c.template)
    .bind(&c.agent_template)
    .bind(c.vcpus)
    .bind(c.memory_mb)
    .bind(c.timeout_sec)
    .bind(&c.metadata)
    .bind(&c.envd_token)
    .bind(millis(c.lease))
    .fetch_one(&mut *conn)
    .await
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Optional parts of a transition.
#[derive(Debug, Default, Clone)]
pub struct Change {
    /// Hold the row for this long (a transitional state being worked on).
    pub lease: Option<Duration>,
    pub error: Option<String>,
    /// Count this as another attempt (the reconciler retrying).
    pub bump_attempts: bool,
}

/// A transition that happened: the row after it, and the status before.
#[derive(Debug, Clone, FromRow)]
pub struct Transitioned {
    #[sqlx(flatten)]
    pub row: CapsuleRow,
    pub from: CapsuleStatus,
}

/// Moves capsule `id` from one of `from` to `to`; `None` if its status was
/// not one of `from` (someone else moved it first).
pub async fn transition(
    conn: &mut PgConnection,
    id: &str,
    from: &[CapsuleStatus],
    to: CapsuleStatus,
    change: Change,
) -> sqlx::Result<Option<Transitioned>> {
    debug_assert!(from.iter().all(|f| f.can_become(to)), "{from:?} -> {to:?}");
    let moved = sqlx::query_as::<_, Transitioned>(
        "UPDATE capsules SET
            status = $3,
            status_before_missing = CASE WHEN $3 = 'missing' THEN status ELSE NULL END,
            lease_until = CASE WHEN $4::BIGINT IS NULL THEN NULL
                               ELSE now() + $4::BIGINT * interval '1 millisecond' END,
            error = COALESCE($5, CASE WHEN $3 IN ('error') THEN error ELSE NULL END),
            attempts = CASE WHEN $6 THEN attempts + 1 WHEN $4::BIGINT IS NULL THEN 0 ELSE attempts END,
            started_at = CASE WHEN $3 = 'running' AND started_at IS NULL THEN now() ELSE started_at END,
            last_active_at = CASE WHEN $3 = 'running' THEN now() ELSE last_active_at END,
            stopped_at = CASE WHEN $3 IN ('stopped', 'error') THEN now() ELSE stopped_at END,
            updated_at = now()
          FROM (SELECT id AS locked_id, status AS \"from\" FROM capsules WHERE id = $1 FOR UPDATE) old
          WHERE capsules.id = old.locked_id AND old.\"from\" = ANY($2)
          RETURNING capsules.*, old.\"from\"",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(change.lease.map(millis))
    .bind(&change.error)
    .bind(change.bump_attempts)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(moved) = moved else { return Ok(None) };
    let row = &moved.row;
    if to == CapsuleStatus::Running {
        sqlx::query(
            "INSERT INTO capsule_runs (capsule_id, team_id, vcpus, memory_mb, started_at)
             VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (capsule_id) WHERE ended_at IS NULL DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.team_id)
        .bind(row.vcpus)
        .bind(row.memory_mb)
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query(
            "UPDATE capsule_runs SET ended_at = now() WHERE capsule_id = $1 AND ended_at IS NULL",
        )
        .bind(&row.id)
        .execute(&mut *conn)
        .await?;
    }
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let data = events::frame(
        "capsule.state.changed",
        None,
        ("capsule", &row.id),
        serde_json::json!({ "from": from.join(","), "to": to.as_str() }),
        serde_json::to_value(row.view()).ok(),
    );
    events::publish(
        &mut *conn,
        &Notification {
            team_id: Some(row.team_id.clone()),
            event: "capsule.state.changed".into(),
            data,
        },
    )
    .await?;
    Ok(Some(moved))
}

/// [`transition`] in its own transaction.
pub async fn transition_now(
    db: &PgPool,
    id: &str,
    from: &[CapsuleStatus],
    to: CapsuleStatus,
    change: Change,
) -> sqlx::Result<Option<Transitioned>> {
    let mut tx = db.begin().await?;
    let moved = transition(&mut tx, id, from, to, change).await?;
    tx.commit().await?;
    Ok(moved)
}

/// Records activity (exec, files, ping) for idle accounting and display.
pub async fn touch(db: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE capsules SET last_active_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends every capsule still recorded on deleted host `host_id` (their
/// destroy was not confirmed; they went with the host).
pub async fn stop_all_on_host(db: &PgPool, host_id: &str) -> sqlx::Result<Vec<CapsuleRow>> {
    sqlx::query_as::<_, CapsuleRow>(
        "UPDATE capsules SET status = 'stopped', stopped_at = now(), lease_until = NULL,
                updated_at = now(), error = 'host deleted'
          WHERE host_id = $1 AND status NOT IN ('stopped', 'error')
          RETURNING *",
    )
    .bind(host_id)
    .fetch_all(db)
    .await
}

/// Ids of `host_id`'s capsules in one of `statuses`.
pub async fn ids_on_host(
    conn: &mut PgConnection,
    host_id: &str,
    statuses: &[CapsuleStatus],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT id FROM capsules WHERE host_id = $1 AND status = ANY($2)")
        .bind(host_id)
        .bind(statuses)
        .fetch_all(&mut *conn)
        .await
}

/// Claims up to `limit` capsules in a transitional state whose lease ran
/// out on an online host, leasing them again for `lease`.
pub async fn claim_expired(
    db: &PgPool,
    limit: i64,
    lease: Duration,
) -> sqlx::Result<Vec<CapsuleRow>> {
    sqlx::query_as::<_, CapsuleRow>(
        "UPDATE capsules SET lease_until = now() + $3::BIGINT * interval '1 millisecond',
                attempts = attempts + 1
          WHERE id IN (SELECT c.id FROM capsules c JOIN hosts h ON h.id = c.host_id
                        WHERE c.lease_until < now() AND c.status = ANY($1) AND h.status = 'online'
                        ORDER BY c.lease_until LIMIT $2 FOR UPDATE OF c SKIP LOCKED)
          RETURNING *",
    )
    .bind(CapsuleStatus::all_where(CapsuleStatus::is_transitional))
    .bind(limit)
    .bind(millis(lease))
    .fetch_all(db)
    .await
}

/// `host_id`'s settled capsules (running, paused or missing, not leased),
/// to compare with what its agent reports.
pub async fn settled_on_host(db: &PgPool, host_id: &str) -> sqlx::Result<Vec<CapsuleRow>> {
    sqlx::query_as::<_, CapsuleRow>(
        "SELECT * FROM capsules WHERE host_id = $1 AND status IN ('running', 'paused', 'missing')
            AND (lease_until IS NULL OR lease_until < now())",
    )
    .bind(host_id)
    .fetch_all(db)
    .await
}
