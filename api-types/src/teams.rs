//! Teams, members and roles (`/v1/teams`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::status::Role;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamWithRole {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub created_at: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamMember {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub joined_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamDetail {
    pub team: TeamWithRole,
    pub members: Vec<TeamMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamNameRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub email: String,
    /// `member` (default) or `admin`.
    pub role: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub role: String,
}
