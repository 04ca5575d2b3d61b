//! The one error type every handler returns, and the only place errors
//! become HTTP: each domain error converts here (one `From` each), into
//! Wrenn's error shape, `{"error":{"code","message"}}`, with the status
//! code and `code` string the `wrenn` SDK maps to its exception classes
//! (`invalid_request`, `unauthorized`, `forbidden`, `not_found`,
//! `invalid_state`, `conflict`, `host_unavailable`, `agent_error`,
//! `internal_error`, ...).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use warren_proto::connect::{Code, ConnectError};

use crate::agent_client::Unreachable;
use crate::auth::{AuthError, Denied};
use crate::domain::audit::AuditError;
use crate::domain::builds::BuildError;
use crate::domain::capsules::CapsuleError;
use crate::domain::hosts::HostError;
use crate::domain::keys::KeyError;
use crate::domain::teams::TeamError;
use crate::domain::templates::TemplateError;
use crate::domain::users::UserError;
use crate::envd_client::EnvdError;
use crate::lifecycle::LifecycleError;

pub use warren_api_types::error::ErrorBody;

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
    /// A build recipe that does not parse (400, with every error's line and
    /// column).
    #[error("{message}")]
    InvalidRecipe {
        message: String,
        errors: Vec<warren_recipe::ParseError>,
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

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) | Self::InvalidRecipe { .. } => StatusCode::BAD_REQUEST,
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
            Self::InvalidRequest(_) | Self::InvalidRecipe { .. } => "invalid_request",
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

    /// Logs an unexpected failure and hides its details from the caller.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::Internal("internal error".into())
    }

    fn db(err: sqlx::Error) -> Self {
        Self::internal(format!("database: {err}"))
    }

    /// An agent's or envd's Connect error as users see it.
    fn rpc(err: ConnectError) -> Self {
        let msg = err.message;
        match err.code {
            Code::NotFound => Self::NotFound(msg),
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidRequest(msg),
            Code::FailedPrecondition | Code::Aborted => Self::InvalidState(msg),
            Code::AlreadyExists => Self::AlreadyExists(msg),
            Code::ResourceExhausted => Self::HostUnavailable(msg),
            Code::Unavailable => {
                Self::HostUnavailable(format!("capsule host is unreachable: {msg}"))
            }
            Code::DeadlineExceeded => Self::Timeout(msg),
            _ => Self::Agent(msg),
        }
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
        if let Self::InvalidRecipe { errors, .. } = &self {
            body["error"]["errors"] = serde_json::json!(errors);
        }
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Denied> for ApiError {
    fn from(e: Denied) -> Self {
        Self::Forbidden(e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Db(e) => Self::db(e),
            other => Self::Unauthorized(other.to_string()),
        }
    }
}

impl From<Unreachable> for ApiError {
    fn from(e: Unreachable) -> Self {
        Self::HostUnavailable(e.0)
    }
}

impl From<EnvdError> for ApiError {
    fn from(e: EnvdError) -> Self {
        match e {
            EnvdError::Files { status, message } => match status {
                StatusCode::NOT_FOUND => Self::NotFound(message),
                StatusCode::BAD_REQUEST => Self::InvalidRequest(message),
                StatusCode::CONFLICT => Self::Conflict(message),
                StatusCode::PAYLOAD_TOO_LARGE | StatusCode::INSUFFICIENT_STORAGE => {
                    Self::TooLarge(message)
                }
                StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => Self::HostUnavailable(message),
                _ => Self::Agent(format!("envd answered {status}: {message}")),
            },
            EnvdError::Timeout => Self::Timeout(e.to_string()),
            EnvdError::Unreachable(_) => Self::HostUnavailable(e.to_string()),
            EnvdError::Host(u) => u.into(),
            EnvdError::BadUser => Self::InvalidRequest(e.to_string()),
            EnvdError::Request(e) => Self::internal(e),
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Invalid(m) => Self::InvalidRequest(m),
            LifecycleError::NotFound | LifecycleError::TemplateNotFound(_) => {
                Self::NotFound(e.to_string())
            }
            LifecycleError::InvalidState(m) => Self::InvalidState(m),
            LifecycleError::NoPlacement(_) => Self::HostUnavailable(e.to_string()),
            LifecycleError::Unreachable(u) => u.into(),
            LifecycleError::Agent(e) => Self::rpc(e),
            LifecycleError::Task(e) => Self::internal(e),
            LifecycleError::Db(e) => Self::db(e),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(m) => Self::InvalidRequest(m),
            UserError::EmailTaken => Self::Conflict(e.to_string()),
            UserError::BadCredentials | UserError::Disabled => Self::Unauthorized(e.to_string()),
            UserError::NotFound => Self::NotFound(e.to_string()),
            UserError::Denied(d) => d.into(),
            UserError::Team(t) => t.into(),
            UserError::Hash(e) => Self::internal(e),
            UserError::Db(e) => Self::db(e),
        }
    }
}

impl From<TeamError> for ApiError {
    fn from(e: TeamError) -> Self {
        match e {
            TeamError::Invalid(m) => Self::InvalidRequest(m),
            TeamError::NotFound | TeamError::NotMember | TeamError::NoAccount => {
                Self::NotFound(e.to_string())
            }
            TeamError::AlreadyMember => Self::Conflict(e.to_string()),
            TeamError::Denied(d) => d.into(),
            TeamError::Db(e) => Self::db(e),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid(m) => Self::InvalidRequest(m),
            KeyError::NotFound => Self::NotFound(e.to_string()),
            KeyError::Denied(d) => d.into(),
            KeyError::Db(e) => Self::db(e),
        }
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Invalid(m) => Self::InvalidRequest(m),
            HostError::NotFound(_) => Self::NotFound(e.to_string()),
            HostError::HasCapsules(ref ids) => Self::HostHasCapsules {
                message: e.to_string(),
                capsule_ids: ids.clone(),
            },
            HostError::AlreadyRegistered => Self::InvalidState(e.to_string()),
            HostError::BadRegistrationToken | HostError::BadHostToken => {
                Self::Unauthorized(e.to_string())
            }
            HostError::Denied(d) => d.into(),
            HostError::Db(e) => Self::db(e),
        }
    }
}

impl From<CapsuleError> for ApiError {
    fn from(e: CapsuleError) -> Self {
        match e {
            CapsuleError::NotFound => Self::NotFound(e.to_string()),
            CapsuleError::Invalid(m) => Self::InvalidRequest(m),
            CapsuleError::Lifecycle(e) => e.into(),
            CapsuleError::Unreachable(u) => u.into(),
            CapsuleError::Envd(e) => e.into(),
            CapsuleError::Rpc(e) => Self::rpc(e),
            CapsuleError::Timeout(m) => Self::Timeout(m),
            CapsuleError::Protocol(m) => Self::Agent(m),
            CapsuleError::TooLarge(m) => Self::TooLarge(m),
            CapsuleError::Denied(d) => d.into(),
            CapsuleError::Db(e) => Self::db(e),
        }
    }
}

impl From<TemplateError> for ApiError {
    fn from(e: TemplateError) -> Self {
        match e {
            TemplateError::Invalid(m) => Self::InvalidRequest(m),
            TemplateError::NotFound(m) => Self::NotFound(m),
            TemplateError::Conflict(m) => Self::Conflict(m),
            TemplateError::Lifecycle(e) => e.into(),
            TemplateError::Unreachable(u) => u.into(),
            TemplateError::Agent(e) => Self::rpc(e),
            TemplateError::Denied(d) => d.into(),
            TemplateError::Db(e) => Self::db(e),
        }
    }
}

impl From<BuildError> for ApiError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Invalid(m) => Self::InvalidRequest(m),
            BuildError::InvalidRecipe(ref errors) => Self::InvalidRecipe {
                message: e.to_string(),
                errors: errors.clone(),
            },
            BuildError::TooLarge(m) => Self::TooLarge(m),
            BuildError::NotFound | BuildError::BaseNotFound(_) => Self::NotFound(e.to_string()),
            BuildError::Ended(_) => Self::InvalidState(e.to_string()),
            BuildError::AlreadyQueued(_) => Self::Conflict(e.to_string()),
            BuildError::Template(t) => t.into(),
            BuildError::Db(e) => Self::db(e),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Invalid(m) => Self::InvalidRequest(m),
            AuditError::Db(e) => Self::db(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(code: Code) -> ApiError {
        ApiError::rpc(ConnectError::new(code, "m"))
    }

    #[test]
    fn maps_agent_codes_to_rest_errors() {
        assert_eq!(rpc(Code::NotFound).status(), 404);
        assert_eq!(rpc(Code::InvalidArgument).status(), 400);
        assert_eq!(rpc(Code::FailedPrecondition).code(), "invalid_state");
        assert_eq!(rpc(Code::AlreadyExists).code(), "already_exists");
        assert_eq!(rpc(Code::Internal).code(), "agent_error");
        assert_eq!(rpc(Code::Unavailable).code(), "host_unavailable");
        assert_eq!(rpc(Code::DeadlineExceeded).status(), 504);
    }

    #[test]
    fn maps_envd_file_errors() {
        let files = |status, message: &str| {
            ApiError::from(EnvdError::Files {
                status,
                message: message.into(),
            })
        };
        assert_eq!(files(StatusCode::NOT_FOUND, "no such file").status(), 404);
        assert_eq!(
            files(StatusCode::NOT_FOUND, "no such file").to_string(),
            "no such file"
        );
        assert_eq!(files(StatusCode::BAD_REQUEST, "dir").status(), 400);
        assert_eq!(files(StatusCode::IM_A_TEAPOT, "x").code(), "agent_error");
    }
}
