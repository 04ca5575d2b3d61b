//! Usage history: `capsule_runs` (the intervals a capsule was running,
//! kept by [`super::capsules::transition`]) and `capsule_metrics` (samples
//! pulled from agents, kept 24 hours), so every replica answers alike.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::{FromRow, PgPool};
use warren_api_types::capsules::{MetricPoint, UsagePoint};
use warren_api_types::status::CapsuleStatus;

/// Running count, vCPUs and memory at one instant.
#[derive(Debug, Clone, FromRow)]
pub struct Sample {
    pub t: DateTime<Utc>,
    pub running: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

/// `team_id`'s capsules that hold resources now: running count, reserved
/// vCPUs and memory.
pub async fn current(db: &PgPool, team_id: &str) -> sqlx::Result<(i64, i64, i64)> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'running'),
                COALESCE(sum(vcpus), 0)::BIGINT, COALESCE(sum(memory_mb), 0)::BIGINT
           FROM capsules WHERE team_id = $1 AND status = ANY($2)",
    )
    .bind(team_id)
    .bind(CapsuleStatus::all_where(CapsuleStatus::holds_resources))
    .fetch_one(db)
    .await
}

fn secs(d: Duration) -> f64 {
    d.num_seconds() as f64
}

/// `team_id`'s running capsules at each `bucket` over the last `window`.
pub async fn series(
    db: &PgPool,
    team_id: &str,
    window: Duration,
    bucket: Duration,
) -> sqlx::Result<Vec<Sample>> {
    sqlx::query_as::<_, Sample>(
        "SELECT g.t,
                count(r.id) AS running,
                COALESCE(sum(r.vcpus), 0)::BIGINT AS vcpus,
                COALESCE(sum(r.memory_mb), 0)::BIGINT AS memory_mb
           FROM generate_series(now() - $2 * interval '1 second', now(), $3 * interval '1 second') AS g(t)
           LEFT JOIN capsule_runs r
                  ON r.team_id = $1 AND r.started_at <= g.t AND (r.ended_at IS NULL OR r.ended_at > g.t)
          GROUP BY g.t ORDER BY g.t",
    )
    .bind(team_id)
    .bind(secs(window))
    .bind(secs(bucket))
    .fetch_all(db)
    .await
}

/// Per-day CPU minutes (vCPUs × running minutes) and memory MiB-minutes.
pub async fn daily(
    db: &PgPool,
    team_id: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> sqlx::Result<Vec<UsagePoint>> {
    sqlx::query_as::<_, UsagePoint>(
        "SELECT to_char(d, 'YYYY-MM-DD') AS date,
                COALESCE(sum(r.vcpus * EXTRACT(EPOCH FROM
                    LEAST(COALESCE(r.ended_at, now()), d + interval '1 day') - GREATEST(r.started_at, d)) / 60), 0)::FLOAT8 AS cpu_minutes,
                COALESCE(sum(r.memory_mb * EXTRACT(EPOCH FROM
                    LEAST(COALESCE(r.ended_at, now()), d + interval '1 day') - GREATEST(r.started_at, d)) / 60), 0)::FLOAT8 AS ram_mb_minutes
           FROM generate_series($2::DATE::TIMESTAMPTZ, $3::DATE::TIMESTAMPTZ, interval '1 day') AS g(d)
           LEFT JOIN capsule_runs r ON r.team_id = $1 AND r.started_at < d + interval '1 day'
                 AND COALESCE(r.ended_at, now()) > d
          GROUP BY d ORDER BY d",
    )
    .bind(team_id)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}

/// Capsule `id`'s samples over the last `window`, averaged per `bucket`.
pub async fn metrics(
    db: &PgPool,
    id: &str,
    window: Duration,
    bucket: Duration,
) -> sqlx::Result<Vec<MetricPoint>> {
    sqlx::query_as::<_, MetricPoint>(
        "SELECT EXTRACT(EPOCH FROM date_bin($3 * interval '1 second', sampled_at, 'epoch'))::BIGINT AS timestamp_unix,
                avg(cpu_pct)::FLOAT8 AS cpu_pct, avg(mem_bytes)::BIGINT AS mem_bytes,
                avg(disk_bytes)::BIGINT AS disk_bytes
           FROM capsule_metrics
          WHERE capsule_id = $1 AND sampled_at > now() - $2 * interval '1 second'
          GROUP BY 1 ORDER BY 1",
    )
    .bind(id)
    .bind(secs(window))
    .bind(secs(bucket))
    .fetch_all(db)
    .await
}

/// One sample of a capsule's resource use.
#[derive(Debug, Clone)]
pub struct NewSample<'a> {
    pub capsule_id: &'a str,
    pub at: DateTime<Utc>,
    pub cpu_pct: f64,
    pub mem_bytes: i64,
    pub disk_bytes: i64,
}

/// Stores a sample of a known capsule (unknown ones are dropped).
pub async fn record(db: &PgPool, s: &NewSample<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO capsule_metrics (capsule_id, sampled_at, cpu_pct, mem_bytes, disk_bytes)
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM capsules WHERE id = $1)
         ON CONFLICT DO NOTHING",
    )
    .bind(s.capsule_id)
    .bind(s.at)
    .bind(s.cpu_pct)
    .bind(s.mem_bytes)
    .bind(s.disk_bytes)
    .execute(db)
    .await?;
    Ok(())
}

/// Drops samples older than a day.
pub async fn prune(db: &PgPool) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM capsule_metrics WHERE sampled_at < now() - interval '24 hours'")
        .execute(db)
        .await?;
    Ok(())
}
