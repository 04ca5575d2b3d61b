//! Team usage: current and historical capsule counts (`stats`), per-day
//! CPU and memory minutes (`usage`), and one capsule's sampled metrics.
//! History comes from `capsule_runs` (intervals a capsule was running) and
//! `capsule_metrics` (samples pulled from agents), so every replica
//! answers alike.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::extract::ApiQuery;
use crate::app::AppState;
use crate::auth::Principal;
use crate::db::capsules;
use crate::db::hosts::holding_statuses;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Default, Deserialize)]
pub struct RangeQuery {
    pub range: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct UsageQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Current {
    pub running_count: i64,
    pub vcpus_reserved: i64,
    pub memory_mb_reserved: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Peaks {
    pub running_count: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    pub labels: Vec<String>,
    pub running: Vec<i64>,
    pub vcpus: Vec<i64>,
    pub memory_mb: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CapsuleStats {
    pub range: String,
    pub current: Current,
    pub peaks: Peaks,
    pub series: Series,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsagePoint {
    pub date: String,
    pub cpu_minutes: f64,
    pub ram_mb_minutes: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResponse {
    pub from: String,
    pub to: String,
    pub points: Vec<UsagePoint>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricPoint {
    pub timestamp_unix: i64,
    pub cpu_pct: f64,
    pub mem_bytes: i64,
    pub disk_bytes: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CapsuleMetrics {
    pub sandbox_id: String,
    pub range: String,
    pub points: Vec<MetricPoint>,
}

/// (window, bucket) of a stats range.
fn stats_range(r: &str) -> Option<(Duration, Duration)> {
    Some(match r {
        "5m" => (Duration::minutes(5), Duration::seconds(10)),
        "1h" => (Duration::hours(1), Duration::minutes(1)),
        "6h" => (Duration::hours(6), Duration::minutes(5)),
        "24h" => (Duration::hours(24), Duration::minutes(15)),
        "30d" => (Duration::days(30), Duration::hours(6)),
        _ => return None,
    })
}

/// (window, bucket) of a metrics range.
fn metrics_range(r: &str) -> Option<(Duration, Duration)> {
    Some(match r {
        "5m" => (Duration::minutes(5), Duration::seconds(1)),
        "10m" => (Duration::minutes(10), Duration::seconds(1)),
        "1h" => (Duration::hours(1), Duration::seconds(30)),
        "2h" => (Duration::hours(2), Duration::seconds(30)),
        "6h" => (Duration::hours(6), Duration::minutes(5)),
        "12h" => (Duration::hours(12), Duration::minutes(5)),
        "24h" => (Duration::hours(24), Duration::minutes(5)),
        _ => return None,
    })
}

/// Running count, vCPUs and memory at each bucket start of the window.
type Sample = (DateTime<Utc>, i64, i64, i64);

async fn series(
    app: &AppState,
    team: &str,
    window: Duration,
    bucket: Duration,
) -> ApiResult<Vec<Sample>> {
    let rows = sqlx::query(
        "SELECT g.t,
                count(r.id) AS running,
                COALESCE(sum(r.vcpus), 0)::BIGINT AS vcpus,
                COALESCE(sum(r.memory_mb), 0)::BIGINT AS memory_mb
           FROM generate_series(now() - $2 * interval '1 second', now(), $3 * interval '1 second') AS g(t)
           LEFT JOIN capsule_runs r
                  ON r.team_id = $1 AND r.started_at <= g.t AND (r.ended_at IS NULL OR r.ended_at > g.t)
          GROUP BY g.t ORDER BY g.t",
    )
    .bind(team)
    .bind(window.num_seconds() as f64)
    .bind(bucket.num_seconds() as f64)
    .fetch_all(&app.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get("t"),
                r.get("running"),
                r.get("vcpus"),
                r.get("memory_mb"),
            )
        })
        .collect())
}

/// Capsule counts now, their peaks over 30 days, and a chart series.
#[utoipa::path(get, path = "/v1/capsules/stats", tag = "capsules", params(("range" = Option<String>, Query)),
    responses((status = 200, body = CapsuleStats)))]
pub async fn stats(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<CapsuleStats>> {
    let range = q.range.unwrap_or_else(|| "1h".into());
    let (window, bucket) = stats_range(&range)
        .ok_or_else(|| ApiError::invalid("range must be one of 5m, 1h, 6h, 24h, 30d"))?;
    let cur = sqlx::query(
        "SELECT count(*) FILTER (WHERE status = 'running') AS running,
                COALESCE(sum(vcpus), 0)::BIGINT AS vcpus, COALESCE(sum(memory_mb), 0)::BIGINT AS memory_mb
           FROM capsules WHERE team_id = $1 AND status = ANY($2)",
    )
    .bind(&p.team_id)
    .bind(holding_statuses())
    .fetch_one(&app.db)
    .await?;
    let points = series(&app, &p.team_id, window, bucket).await?;
    let month = series(&app, &p.team_id, Duration::days(30), Duration::hours(1)).await?;
    let max = |f: fn(&Sample) -> i64| month.iter().chain(points.iter()).map(f).max().unwrap_or(0);
    Ok(Json(CapsuleStats {
        range,
        current: Current {
            running_count: cur.get("running"),
            vcpus_reserved: cur.get("vcpus"),
            memory_mb_reserved: cur.get("memory_mb"),
        },
        peaks: Peaks {
            running_count: max(|p| p.1),
            vcpus: max(|p| p.2),
            memory_mb: max(|p| p.3),
        },
        series: Series {
            labels: points.iter().map(|p| capsules::ts(p.0)).collect(),
            running: points.iter().map(|p| p.1).collect(),
            vcpus: points.iter().map(|p| p.2).collect(),
            memory_mb: points.iter().map(|p| p.3).collect(),
        },
    }))
}

fn date(s: Option<&str>, default: NaiveDate, what: &str) -> ApiResult<NaiveDate> {
    match s {
        None => Ok(default),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| ApiError::invalid(format!("{what} must be a date (YYYY-MM-DD)"))),
    }
}

/// Per-day CPU minutes (vCPUs × running minutes) and memory MiB-minutes.
#[utoipa::path(get, path = "/v1/capsules/usage", tag = "capsules",
    params(("from" = Option<String>, Query), ("to" = Option<String>, Query)),
    responses((status = 200, body = UsageResponse)))]
pub async fn usage(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<UsageResponse>> {
    let today = Utc::now().date_naive();
    let to = date(q.to.as_deref(), today, "to")?;
    let from = date(q.from.as_deref(), to - Duration::days(30), "from")?;
    if from > to || (to - from).num_days() > 366 {
        return Err(ApiError::invalid(
            "from must be before to, at most 366 days apart",
        ));
    }
    let rows = sqlx::query(
        "SELECT d::DATE AS day,
                COALESCE(sum(r.vcpus * EXTRACT(EPOCH FROM
                    LEAST(COALESCE(r.ended_at, now()), d + interval '1 day') - GREATEST(r.started_at, d)) / 60), 0)::FLOAT8 AS cpu,
                COALESCE(sum(r.memory_mb * EXTRACT(EPOCH FROM
                    LEAST(COALESCE(r.ended_at, now()), d + interval '1 day') - GREATEST(r.started_at, d)) / 60), 0)::FLOAT8 AS ram
           FROM generate_series($2::DATE::TIMESTAMPTZ, $3::DATE::TIMESTAMPTZ, interval '1 day') AS g(d)
           LEFT JOIN capsule_runs r ON r.team_id = $1 AND r.started_at < d + interval '1 day'
                 AND COALESCE(r.ended_at, now()) > d
          GROUP BY d ORDER BY d",
    )
    .bind(&p.team_id)
    .bind(from)
    .bind(to)
    .fetch_all(&app.db)
    .await?;
    Ok(Json(UsageResponse {
        from: from.to_string(),
        to: to.to_string(),
        points: rows
            .into_iter()
            .map(|r| UsagePoint {
                date: r.get::<NaiveDate, _>("day").to_string(),
                cpu_minutes: r.get("cpu"),
                ram_mb_minutes: r.get("ram"),
            })
            .collect(),
    }))
}

/// A capsule's sampled CPU, memory and disk use.
#[utoipa::path(get, path = "/v1/capsules/{id}/metrics", tag = "capsules",
    params(("id" = String, Path), ("range" = Option<String>, Query)),
    responses((status = 200, body = CapsuleMetrics)))]
pub async fn metrics(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<CapsuleMetrics>> {
    let range = q.range.unwrap_or_else(|| "10m".into());
    let (window, bucket) = metrics_range(&range)
        .ok_or_else(|| ApiError::invalid("range must be one of 5m, 10m, 1h, 2h, 6h, 12h, 24h"))?;
    let row = capsules::get(&app.db, &p.team_id, &id).await?;
    if row.status().is_terminal() {
        return Err(ApiError::not_found("capsule"));
    }
    let rows = sqlx::query(
        "SELECT EXTRACT(EPOCH FROM date_bin($3 * interval '1 second', sampled_at, 'epoch'))::BIGINT AS t,
                avg(cpu_pct)::FLOAT8 AS cpu, avg(mem_bytes)::BIGINT AS mem, avg(disk_bytes)::BIGINT AS disk
           FROM capsule_metrics
          WHERE capsule_id = $1 AND sampled_at > now() - $2 * interval '1 second'
          GROUP BY 1 ORDER BY 1",
    )
    .bind(&id)
    .bind(window.num_seconds() as f64)
    .bind(bucket.num_seconds() as f64)
    .fetch_all(&app.db)
    .await?;
    Ok(Json(CapsuleMetrics {
        sandbox_id: id,
        range,
        points: rows
            .into_iter()
            .map(|r| MetricPoint {
                timestamp_unix: r.get("t"),
                cpu_pct: r.get("cpu"),
                mem_bytes: r.get("mem"),
                disk_bytes: r.get("disk"),
            })
            .collect(),
    }))
}
