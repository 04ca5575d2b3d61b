//! `GET /v1/audit-logs`: the team's audit trail, newest first, paged with
//! a `before_id` cursor.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::FromRow;
use utoipa::ToSchema;

use super::extract::ApiQuery;
use crate::app::AppState;
use crate::auth::Principal;
use crate::db::capsules::ts;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub limit: Option<i64>,
    pub before_id: Option<i64>,
    pub resource_type: Option<String>,
    pub action: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub action: String,
    pub status: String,
    pub http_status: Option<i32>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    #[serde(skip)]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditItem {
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditItem>,
    pub next_before_id: Option<i64>,
}

#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit",
    params(("limit" = Option<i64>, Query), ("before_id" = Option<i64>, Query),
           ("resource_type" = Option<String>, Query), ("action" = Option<String>, Query)),
    responses((status = 200, body = AuditPage)))]
pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 200"));
    }
    let rows = sqlx::query_as::<_, AuditEntry>(
        "SELECT id, actor_type, actor_id, actor_name, resource_type, resource_id, action, status,
                http_status, metadata, created_at
           FROM audit_logs
          WHERE team_id = $1 AND ($2::BIGINT IS NULL OR id < $2)
            AND ($3::TEXT IS NULL OR resource_type = $3) AND ($4::TEXT IS NULL OR action = $4)
          ORDER BY id DESC LIMIT $5",
    )
    .bind(&p.team_id)
    .bind(q.before_id)
    .bind(&q.resource_type)
    .bind(&q.action)
    .bind(limit)
    .fetch_all(&app.db)
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(AuditPage {
        items: rows
            .into_iter()
            .map(|entry| AuditItem {
                created_at: ts(entry.created_at),
                entry,
            })
            .collect(),
        next_before_id: next,
    }))
}
