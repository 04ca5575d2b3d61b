//! Wrenn's error shape: `{"error":{"code","message"}}`, with the `code`
//! strings the `wrenn` SDK maps to its exception classes. Some errors
//! carry more: `capsule_ids` (a host that still holds capsules) and
//! `errors` (every problem of a build recipe, with line and column).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}
