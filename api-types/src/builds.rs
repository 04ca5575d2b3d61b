//! Template builds (`/v1/admin/builds`): the request, a build with its
//! steps, and the events of its log stream (`log`, `step`, `end`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::status::{BuildStatus, LogStream, StepStatus};
use crate::time::{ser_opt_ts, ser_ts};

/// `POST /v1/admin/builds` as JSON (multipart takes the same fields as
/// form fields, the recipe as a field or a file, plus `archive`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBuildRequest {
    /// The template to make (unique in the team).
    pub name: String,
    /// The template to build on (default: the platform's default template).
    pub base: Option<String>,
    /// The recipe text.
    pub recipe: String,
    /// Replace the team's template of this name.
    #[serde(default)]
    pub overwrite: bool,
    /// Size of the build capsule and default of the template.
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
}

/// `?after=` of a log stream: only log rows after this id (as
/// `Last-Event-ID` does).
#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    pub after: Option<i64>,
}

/// One step of a build (also the `step` event of its log stream).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct BuildStep {
    #[serde(rename = "index")]
    pub idx: i32,
    pub line: i32,
    pub instruction: String,
    pub text: String,
    pub cache_key: String,
    pub status: StepStatus,
    /// Times the step was executed (0 when its result came from the cache).
    pub runs: i32,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// One stored log chunk (the `log` event of a log stream).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct BuildLog {
    pub id: i64,
    pub step: Option<i32>,
    pub stream: LogStream,
    pub text: String,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub at: DateTime<Utc>,
}

/// The `end` event of a log stream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BuildEnd {
    pub status: BuildStatus,
    pub error: Option<String>,
    pub template: Option<String>,
}

/// A build as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BuildView {
    pub id: String,
    pub name: String,
    pub base: String,
    /// The recipe it ran (a rebuild starts from it); only on a single build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    pub status: BuildStatus,
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Steps whose result came from the layer cache.
    pub cached_steps: usize,
    pub steps: Vec<BuildStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub attempts: i32,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ser_opt_ts")]
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// The `error` event of a log stream: following the log failed (the
/// stream ends).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogStreamError {
    pub message: String,
}
