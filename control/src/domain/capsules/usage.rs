//! The team's usage: capsule counts now and over time (`stats`), per-day
//! CPU and memory minutes (`usage`), and one capsule's sampled metrics.

use chrono::{Duration, NaiveDate, Utc};
use warren_api_types::capsules::{
    CapsuleMetrics, CapsuleStats, Current, Peaks, Series, UsageResponse,
};
use warren_api_types::time::ts;

use super::{CapsuleError, Result, get};
use crate::app::AppState;
use crate::auth::Principal;
use crate::db::usage::{self, Sample};

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

/// Capsule counts now, their peaks over 30 days, and a chart series over
/// `range` (default `1h`).
pub async fn stats(app: &AppState, p: &Principal, range: Option<String>) -> Result<CapsuleStats> {
    let range = range.unwrap_or_else(|| "1h".into());
    let (window, bucket) = stats_range(&range)
        .ok_or_else(|| CapsuleError::Invalid("range must be one of 5m, 1h, 6h, 24h, 30d".into()))?;
    let (running, vcpus, memory_mb) = usage::current(&app.db, &p.team_id).await?;
    let points = usage::series(&app.db, &p.team_id, window, bucket).await?;
    let month = usage::series(&app.db, &p.team_id, Duration::days(30), Duration::hours(1)).await?;
    let max = |f: fn(&Sample) -> i64| month.iter().chain(points.iter()).map(f).max().unwrap_or(0);
    let col = |f: fn(&Sample) -> i64| points.iter().map(f).collect();
    Ok(CapsuleStats {
        range,
        current: Current {
            running_count: running,
            vcpus_reserved: vcpus,
            memory_mb_reserved: memory_mb,
        },
        peaks: Peaks {
            running_count: max(|s| s.running),
            vcpus: max(|s| s.vcpus),
            memory_mb: max(|s| s.memory_mb),
        },
        series: Series {
            labels: points.iter().map(|s| ts(s.t)).collect(),
            running: col(|s| s.running),
            vcpus: col(|s| s.vcpus),
            memory_mb: col(|s| s.memory_mb),
        },
    })
}

fn date(s: Option<&str>, default: NaiveDate, what: &str) -> Result<NaiveDate> {
    match s {
        None => Ok(default),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| CapsuleError::Invalid(format!("{what} must be a date (YYYY-MM-DD)"))),
    }
}

/// Per-day CPU minutes (vCPUs × running minutes) and memory MiB-minutes,
/// `from`..=`to` (default: the last 30 days).
pub async fn daily(
    app: &AppState,
    p: &Principal,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<UsageResponse> {
    let to = date(to, Utc::now().date_naive(), "to")?;
    let from = date(from, to - Duration::days(30), "from")?;
    if from > to || (to - from).num_days() > 366 {
        return Err(CapsuleError::Invalid(
            "from must be before to, at most 366 days apart".into(),
        ));
    }
    Ok(UsageResponse {
        from: from.to_string(),
        to: to.to_string(),
        points: usage::daily(&app.db, &p.team_id, from, to).await?,
    })
}

/// A live capsule's sampled CPU, memory and disk use over `range`
/// (default `10m`).
pub async fn metrics(
    app: &AppState,
    p: &Principal,
    id: &str,
    range: Option<String>,
) -> Result<CapsuleMetrics> {
    let range = range.unwrap_or_else(|| "10m".into());
    let (window, bucket) = metrics_range(&range).ok_or_else(|| {
        CapsuleError::Invalid("range must be one of 5m, 10m, 1h, 2h, 6h, 12h, 24h".into())
    })?;
    if get(app, p, id).await?.status.is_terminal() {
        return Err(CapsuleError::NotFound);
    }
    Ok(CapsuleMetrics {
        sandbox_id: id.to_string(),
        range,
        points: usage::metrics(&app.db, id, window, bucket).await?,
    })
}
