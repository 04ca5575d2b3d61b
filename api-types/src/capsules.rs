//! Capsules (`/v1/capsules`): create, the capsule as shown, and the
//! team's usage (`stats`, `usage`, a capsule's `metrics`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::status::CapsuleStatus;

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCapsuleRequest {
    /// Template name; the server's default when omitted.
    pub template: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
    /// Idle seconds before auto-pause; 0 never pauses; 1-59 become 60.
    pub timeout_sec: Option<u32>,
    pub metadata: Option<HashMap<String, String>>,
}

/// A capsule as the REST API shows it (Wrenn's `Capsule` schema).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CapsuleView {
    pub id: String,
    pub status: CapsuleStatus,
    pub template: String,
    pub vcpus: i32,
    pub memory_mb: i32,
    pub timeout_sec: i32,
    pub disk_size_mb: i32,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
    pub last_updated: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `?range=` of `stats` and `metrics`.
#[derive(Debug, Default, Deserialize)]
pub struct RangeQuery {
    pub range: Option<String>,
}

/// `?from=&to=` (dates) of `usage`.
#[derive(Debug, Default, Deserialize)]
pub struct UsageQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Current {
    pub running_count: i64,
    pub vcpus_reserved: i64,
    pub memory_mb_reserved: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Peaks {
    pub running_count: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Series {
    pub labels: Vec<String>,
    pub running: Vec<i64>,
    pub vcpus: Vec<i64>,
    pub memory_mb: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CapsuleStats {
    pub range: String,
    pub current: Current,
    pub peaks: Peaks,
    pub series: Series,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct UsagePoint {
    pub date: String,
    pub cpu_minutes: f64,
    pub ram_mb_minutes: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    pub from: String,
    pub to: String,
    pub points: Vec<UsagePoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct MetricPoint {
    pub timestamp_unix: i64,
    pub cpu_pct: f64,
    pub mem_bytes: i64,
    pub disk_bytes: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CapsuleMetrics {
    pub sandbox_id: String,
    pub range: String,
    pub points: Vec<MetricPoint>,
}
