//! `GET /v1/audit-logs`: the team's audit trail, newest first, paged with
//! a `before_id` cursor.

use axum::Json;
use axum::extract::State;
use warren_api_types::audit::{AuditPage, AuditQuery};

use super::error::ApiResult;
use super::extract::ApiQuery;
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::audit;

#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit",
    params(("limit" = Option<i64>, Query), ("before_id" = Option<i64>, Query),
           ("resource_type" = Option<String>, Query), ("action" = Option<String>, Query)),
    responses((status = 200, body = AuditPage)))]
pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    Ok(Json(audit::list(&app, &p, &q).await?))
}
