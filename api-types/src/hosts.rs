//! Hosts (`/v1/hosts`): records, registration, heartbeats, tags.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::status::{HostKind, HostStatus};
use crate::time::{ser_opt_ts, ser_ts};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHostRequest {
    /// `regular` (shared, administrators only) or `byoc` (one team's).
    #[serde(rename = "type")]
    pub kind: String,
    pub team_id: Option<String>,
    pub provider: Option<String>,
    pub availability_zone: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateHostResponse {
    pub host: Host,
    /// One-time, valid for an hour.
    pub registration_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub token: String,
    /// `ip:port` (or URL) of the agent's lifecycle RPC.
    pub address: String,
    pub proxy_address: Option<String>,
    /// The bearer token the agent accepts; made by control when absent.
    pub agent_token: Option<String>,
    pub arch: Option<String>,
    pub cpu_cores: Option<u32>,
    pub memory_mb: Option<u64>,
    pub disk_gb: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    pub host: Host,
    /// Send as `X-Host-Token` on heartbeats.
    pub token: String,
    /// What control presents to the agent as `Authorization: Bearer`.
    pub agent_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagRequest {
    pub tag: String,
}

/// `?force=true` removes a host together with its capsules.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    pub force: bool,
}

/// A host as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Host {
    pub id: String,
    #[serde(rename = "type")]
    #[cfg_attr(feature = "sqlx", sqlx(rename = "type"))]
    pub kind: HostKind,
    pub team_id: Option<String>,
    pub provider: Option<String>,
    pub availability_zone: Option<String>,
    pub arch: Option<String>,
    pub cpu_cores: Option<i32>,
    pub memory_mb: Option<i64>,
    pub disk_gb: Option<i32>,
    pub address: Option<String>,
    pub proxy_address: Option<String>,
    pub backend: Option<String>,
    pub status: HostStatus,
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>)]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub updated_at: DateTime<Utc>,
    pub tags: Vec<String>,
}
