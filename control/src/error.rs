//! The one error type every handler returns. It renders as Wrenn's error
//! shape, `{"error":{"code","message"}}`, with the status code and `code`
//! string the `wrenn` SDK maps to its exception classes (`invalid_request`,
//! `unauthorized`, `forbidden`, `not_found`, `invalid_state`, `conflict`,
//! `host_unavailable`, `agent_error`, `internal_error`, ...).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A typed API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The resource exists but its state forbids the operation (409).
    #[error("{0}")]
    InvalidState(String),
    /// A name or resource clash (409).
    #[error("{0}")]
    Conflict(String),
    /// mkdir on an existing path: the SDK's `make_dir` treats it as success.
    #[error("{0}")]
    AlreadyExists(String),
    /// A host still holds capsules (409, with their ids).
    #[error("{message}")]
    HostHasCapsules {
        message: String,
        capsule_ids: Vec<String>,
    },
    #[error("{0}")]
    TooLarge(String),
    /// No host can take the capsule, or its host is unreachable (503).
    #[error("{0}")]
    HostUnavailable(String),
    /// The agent or envd answered with an error we cannot map (502).
    #[error("{0}")]
    Agent(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

/// `{"error":{"code","message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::InvalidState(_)
            | Self::Conflict(_)
            | Self::AlreadyExists(_)
            | Self::HostHasCapsules { .. } => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HostUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Agent(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::InvalidState(_) => "invalid_state",
            Self::Conflict(_) => "conflict",
            Self::AlreadyExists(_) => "already_exists",
            Self::HostHasCapsules { .. } => "host_has_capsules",
            Self::TooLarge(_) => "too_large",
            Self::HostUnavailable(_) => "host_unavailable",
            Self::Agent(_) => "agent_error",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal_error",
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidRequest(msg.into())
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    /// Logs an unexpected failure and hides its details from the caller.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::Internal("internal error".into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::internal(format!("database: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let message = self.to_string();
        let mut body = serde_json::json!({ "error": { "code": code, "message": message } });
        if let Self::HostHasCapsules { capsule_ids, .. } = &self {
            // The SDK reads the ids from the top level; Wrenn's own console
            // reads them inside `error`.
            body["capsule_ids"] = serde_json::json!(capsule_ids);
            body["error"]["capsule_ids"] = serde_json::json!(capsule_ids);
        }
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
