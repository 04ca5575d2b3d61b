//! The team's audit trail, newest first, paged with a `before_id` cursor.
//! (Rows are written by the REST layer's audit middleware.)

use warren_api_types::audit::{AuditPage, AuditQuery};

use crate::app::AppState;
use crate::auth::Principal;
use crate::db::{self, audit::Filter};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A page of the caller's team's trail.
pub async fn list(app: &AppState, p: &Principal, q: &AuditQuery) -> Result<AuditPage, AuditError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AuditError::Invalid(
            "limit must be between 1 and 200".into(),
        ));
    }
    let filter = Filter {
        before_id: q.before_id,
        resource_type: q.resource_type.as_deref(),
        action: q.action.as_deref(),
        limit,
    };
    let items = db::audit::list(&app.db, &p.team_id, &filter).await?;
    let next_before_id = (items.len() as i64 == limit)
        .then(|| items.last().map(|r| r.id))
        .flatten();
    Ok(AuditPage {
        items,
        next_before_id,
    })
}
