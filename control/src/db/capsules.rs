//! Capsule rows and their state transitions. Every status change goes
//! through [`transition`], which checks the current status in the same
//! statement (so two callers racing on one capsule cannot both win), keeps
//! the running intervals that usage is computed from, and queues the
//! `capsule.state.changed` event in the same transaction.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::events::{self, Notification};
use crate::status::CapsuleStatus;

#[derive(Debug, Clone, FromRow)]
pub struct CapsuleRow {
    pub id: String,
    pub team_id: String,
    pub host_id: Option<String>,
    pub template_id: Option<String>,
    pub template: String,
    pub agent_template: String,
    pub status: String,
    pub status_before_missing: Option<String>,
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

/// A capsule as the REST API shows it (Wrenn's `Capsule` schema).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CapsuleView {
    pub id: String,
    pub status: CapsuleStatus,
    pub template: String,
    pub vcpus: i32,
    pub memory_mb: i32,
    pub timeout_sec: i32,
    pub disk_size_mb: i32,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
    pub last_updated: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Timestamps as the API writes them: RFC 3339, seconds, `Z`.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn ser_ts<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts(*t))
}

pub fn ser_opt_ts<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_ts(t, s),
        None => s.serialize_none(),
    }
}

impl CapsuleRow {
    pub fn status(&self) -> CapsuleStatus {
        CapsuleStatus::parse(&self.status).unwrap_or(CapsuleStatus::Error)
    }

    pub fn view(&self) -> CapsuleView {
        CapsuleView {
            id: self.id.clone(),
            status: self.status(),
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

    /// The capsule's host, which every in-capsule operation needs.
    pub fn host(&self) -> Result<&str, ApiError> {
        self.host_id
            .as_deref()
            .ok_or_else(|| ApiError::InvalidState(format!("capsule {} has no host", self.id)))
    }

    pub fn require_running(&self) -> Result<(), ApiError> {
        if self.status() == CapsuleStatus::Running {
            Ok(())
        } else {
            Err(ApiError::InvalidState(format!(
                "capsule is not running (status: {})",
                self.status
            )))
        }
    }
}

/// The capsule `id` of `team_id` (others' capsules are not found).
pub async fn get(db: &PgPool, team_id: &str, id: &str) -> Result<CapsuleRow, ApiError> {
    sqlx::query_as::<_, CapsuleRow>("SELECT * FROM capsules WHERE id = $1 AND team_id = $2")
        .bind(id)
        .bind(team_id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::not_found("capsule"))
}

pub async fn get_any(db: &PgPool, id: &str) -> sqlx::Result<Option<CapsuleRow>> {
    sqlx::query_as::<_, CapsuleRow>("SELECT * FROM capsules WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
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

/// Moves capsule `id` from one of `from` to `to`; `None` if its status was
/// not one of `from` (someone else moved it first).
pub async fn transition(
    conn: &mut PgConnection,
    id: &str,
    from: &[CapsuleStatus],
    to: CapsuleStatus,
    change: Change,
) -> sqlx::Result<Option<CapsuleRow>> {
    debug_assert!(from.iter().all(|f| f.can_become(to)), "{from:?} -> {to:?}");
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let lease_ms = change
        .lease
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let row = sqlx::query_as::<_, CapsuleRow>(
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
          WHERE id = $1 AND status = ANY($2)
          RETURNING *",
    )
    .bind(id)
    .bind(&from)
    .bind(to.as_str())
    .bind(lease_ms)
    .bind(&change.error)
    .bind(change.bump_attempts)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
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
    Ok(Some(row))
}

/// [`transition`] in its own transaction.
pub async fn transition_now(
    db: &PgPool,
    id: &str,
    from: &[CapsuleStatus],
    to: CapsuleStatus,
    change: Change,
) -> sqlx::Result<Option<CapsuleRow>> {
    let mut tx = db.begin().await?;
    let row = transition(&mut tx, id, from, to, change).await?;
    tx.commit().await?;
    Ok(row)
}

/// Records activity (exec, files, ping) for idle accounting and display.
pub async fn touch(db: &PgPool, id: &str) {
    let _ = sqlx::query("UPDATE capsules SET last_active_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await;
}
