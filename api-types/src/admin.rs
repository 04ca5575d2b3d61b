//! Platform administration (`/v1/admin/*`): every team, user and capsule.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::capsules::CapsuleView;
use crate::status::UserStatus;
use crate::time::ser_ts;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AdminTeam {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub members: i64,
    pub active_capsules: i64,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AdminUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub is_admin: bool,
    pub status: UserStatus,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub is_admin: Option<bool>,
    /// `active` or `disabled`.
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminCapsule {
    pub team_id: String,
    pub host_id: Option<String>,
    #[serde(flatten)]
    pub capsule: CapsuleView,
}
