//! Accounts and sessions (`/v1/auth/*`, `/v1/me`) and API keys
//! (`/v1/api-keys`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::status::Role;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SwitchTeamRequest {
    pub team_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthResponse {
    /// Session JWT.
    pub token: String,
    pub user_id: String,
    pub team_id: String,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
    pub team_id: String,
    pub role: Role,
    pub has_password: bool,
    pub providers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Defaults to "Unnamed API Key".
    pub name: Option<String>,
    /// The key stops working after this many days (unset: never).
    pub expires_in_days: Option<u32>,
    /// Or at this instant (RFC 3339).
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyResponse {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at: String,
    pub last_used: Option<String>,
    pub expires_at: Option<String>,
    pub revoked: bool,
    /// The key itself: only in the response that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}
