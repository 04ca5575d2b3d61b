//! Templates: the team's snapshots (`/v1/snapshots`) and the platform's
//! base templates (`/v1/admin/templates`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::status::TemplateKind;

/// Wrenn's `Template` schema.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TemplateKind,
    pub vcpus: Option<i32>,
    pub memory_mb: Option<i32>,
    pub size_bytes: i64,
    pub created_at: String,
    pub platform: bool,
    pub protected: bool,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// The capsule to snapshot (running or paused).
    pub sandbox_id: String,
    /// Template name; generated when omitted.
    pub name: Option<String>,
}

/// `?overwrite=true|false` of a snapshot.
#[derive(Debug, Default, Deserialize)]
pub struct OverwriteQuery {
    pub overwrite: Option<String>,
}

/// `?type=base|snapshot` of a template listing.
#[derive(Debug, Default, Deserialize)]
pub struct TypeQuery {
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A platform base template, registered or updated by an administrator.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    pub name: String,
    /// Name the agents store it under (defaults to `name`).
    pub agent_name: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
    pub default_user: Option<String>,
    pub default_workdir: Option<String>,
    pub default_env: Option<HashMap<String, String>>,
    /// How shell strings run, e.g. `/bin/bash -l -c` or `/bin/sh -c`.
    pub shell: Option<String>,
}
