//! Host queries that the scheduler, the monitor and the reconciler share.

use sqlx::{FromRow, PgConnection, PgPool};

use crate::error::ApiError;
use crate::scheduler::HostLoad;
use crate::status::CapsuleStatus;

/// What it takes to reach a host's agent.
#[derive(Debug, Clone, FromRow)]
pub struct HostConn {
    pub id: String,
    pub status: String,
    pub address: Option<String>,
    pub agent_token: Option<String>,
    pub proxy_address: Option<String>,
}

impl HostConn {
    pub fn rpc(&self) -> Result<(&str, &str), ApiError> {
        match (&self.address, &self.agent_token) {
            (Some(a), Some(t)) if self.status != "pending" => Ok((a, t)),
            _ => Err(ApiError::HostUnavailable(format!(
                "host {} has not registered",
                self.id
            ))),
        }
    }

    pub fn require_online(&self) -> Result<(), ApiError> {
        if self.status == "online" {
            Ok(())
        } else {
            Err(ApiError::HostUnavailable(format!(
                "capsule host {} is {}",
                self.id, self.status
            )))
        }
    }
}

pub async fn conn(db: &PgPool, host_id: &str) -> Result<HostConn, ApiError> {
    sqlx::query_as::<_, HostConn>(
        "SELECT id, status, address, agent_token, proxy_address FROM hosts
          WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(host_id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::HostUnavailable(format!("host {host_id} no longer exists")))
}

/// Statuses whose capsules occupy host resources, for SQL.
pub fn holding_statuses() -> Vec<String> {
    CapsuleStatus::ALL
        .into_iter()
        .filter(|s| s.holds_resources())
        .map(|s| s.as_str().to_string())
        .collect()
}

#[derive(Debug, FromRow)]
struct LoadRow {
    id: String,
    status: String,
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
    .bind(holding_statuses())
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| HostLoad {
            online: r.status == "online",
            vcpu_capacity: f64::from(r.cpu_cores.unwrap_or(0)) * cpu_overcommit,
            memory_capacity_mb: r.memory_mb.unwrap_or(0) as f64 * memory_overcommit,
            vcpus_used: r.vcpus_used as f64,
            memory_used_mb: r.memory_used as f64,
            has_template: r.has_template,
            id: r.id,
        })
        .collect())
}
