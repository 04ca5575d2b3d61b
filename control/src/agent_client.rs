//! Typed client for a host's `agent.v1.Agent` lifecycle RPC (the
//! generated `warren_proto` client, with the control plane's token), and
//! the mapping of Connect errors to REST errors.

use http::HeaderValue;
use warren_proto::agent::v1 as pb;
use warren_proto::connect::{Code, ConnectError};

use crate::error::ApiError;
use crate::rpc::RpcClients;

pub type RpcError = ConnectError;

/// One agent, reached at its RPC address with the control plane's token.
#[derive(Debug, Clone)]
pub struct AgentClient {
    inner: pb::AgentClient,
}

impl AgentClient {
    pub fn new(rpc: &RpcClients, address: &str, token: &str) -> Result<Self, ApiError> {
        let (unary, _) = rpc.clients(address).map_err(|e| {
            ApiError::HostUnavailable(format!("bad agent address {address}: {}", e.message))
        })?;
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiError::internal("agent token is not a valid header value"))?;
        Ok(Self {
            inner: pb::AgentClient::new(unary.with_header(http::header::AUTHORIZATION, auth)),
        })
    }

    pub async fn create_capsule(
        &self,
        req: pb::CreateCapsuleRequest,
    ) -> Result<pb::CapsuleInfo, RpcError> {
        let resp = self.inner.create_capsule(&req).await?;
        resp.capsule
            .ok_or_else(missing("CreateCapsuleResponse.capsule"))
    }

    pub async fn destroy_capsule(&self, capsule_id: &str) -> Result<(), RpcError> {
        let req = pb::DestroyCapsuleRequest {
            capsule_id: capsule_id.into(),
        };
        self.inner.destroy_capsule(&req).await.map(drop)
    }

    pub async fn pause_capsule(&self, capsule_id: &str) -> Result<pb::CapsuleInfo, RpcError> {
        let req = pb::PauseCapsuleRequest {
            capsule_id: capsule_id.into(),
        };
        let resp = self.inner.pause_capsule(&req).await?;
        resp.capsule
            .ok_or_else(missing("PauseCapsuleResponse.capsule"))
    }

    pub async fn resume_capsule(
        &self,
        req: pb::ResumeCapsuleRequest,
    ) -> Result<pb::CapsuleInfo, RpcError> {
        let resp = self.inner.resume_capsule(&req).await?;
        resp.capsule
            .ok_or_else(missing("ResumeCapsuleResponse.capsule"))
    }

    pub async fn ping_capsule(&self, capsule_id: &str) -> Result<(), RpcError> {
        let req = pb::PingCapsuleRequest {
            capsule_id: capsule_id.into(),
        };
        self.inner.ping_capsule(&req).await.map(drop)
    }

    pub async fn list_capsules(&self) -> Result<pb::ListCapsulesResponse, RpcError> {
        self.inner.list_capsules(&pb::ListCapsulesRequest {}).await
    }

    pub async fn metrics(&self, capsule_id: &str) -> Result<Vec<pb::CapsuleMetrics>, RpcError> {
        let req = pb::GetMetricsRequest {
            capsule_id: capsule_id.into(),
        };
        Ok(self.inner.get_metrics(&req).await?.metrics)
    }

    pub async fn host_info(&self) -> Result<pb::GetHostInfoResponse, RpcError> {
        self.inner.get_host_info(&pb::GetHostInfoRequest {}).await
    }

    pub async fn snapshot_capsule(
        &self,
        capsule_id: &str,
        template: &str,
        overwrite: bool,
    ) -> Result<pb::TemplateInfo, RpcError> {
        let req = pb::SnapshotCapsuleRequest {
            capsule_id: capsule_id.into(),
            template: template.into(),
            overwrite,
        };
        let resp = self.inner.snapshot_capsule(&req).await?;
        resp.template
            .ok_or_else(missing("SnapshotCapsuleResponse.template"))
    }

    pub async fn delete_template(&self, template: &str) -> Result<(), RpcError> {
        let req = pb::DeleteTemplateRequest {
            template: template.into(),
        };
        self.inner.delete_template(&req).await.map(drop)
    }
}

fn missing(field: &'static str) -> impl FnOnce() -> RpcError {
    move || ConnectError::new(Code::Internal, format!("agent response lacks {field}"))
}

/// Whether an error means "it did not happen" (the state can be settled
/// now) rather than "we do not know" (left to the reconciler).
pub fn is_definite(err: &RpcError) -> bool {
    !matches!(
        err.code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Canceled
    )
}

/// Maps an agent or envd error to the REST error users see.
pub fn rpc_to_api(err: RpcError) -> ApiError {
    let msg = err.message;
    match err.code {
        Code::NotFound => ApiError::NotFound(msg),
        Code::InvalidArgument | Code::OutOfRange => ApiError::InvalidRequest(msg),
        Code::FailedPrecondition | Code::Aborted => ApiError::InvalidState(msg),
        Code::AlreadyExists => ApiError::AlreadyExists(msg),
        Code::ResourceExhausted => ApiError::HostUnavailable(msg),
        Code::Unavailable => {
            ApiError::HostUnavailable(format!("capsule host is unreachable: {msg}"))
        }
        Code::DeadlineExceeded => ApiError::Timeout(msg),
        _ => ApiError::Agent(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: Code) -> RpcError {
        ConnectError::new(code, "m")
    }

    #[test]
    fn maps_codes_to_rest_errors() {
        assert_eq!(rpc_to_api(err(Code::NotFound)).status(), 404);
        assert_eq!(rpc_to_api(err(Code::InvalidArgument)).status(), 400);
        assert_eq!(
            rpc_to_api(err(Code::FailedPrecondition)).code(),
            "invalid_state"
        );
        assert_eq!(
            rpc_to_api(err(Code::AlreadyExists)).code(),
            "already_exists"
        );
        assert_eq!(rpc_to_api(err(Code::Internal)).code(), "agent_error");
        assert_eq!(
            rpc_to_api(err(Code::Unavailable)).code(),
            "host_unavailable"
        );
        assert_eq!(rpc_to_api(err(Code::DeadlineExceeded)).status(), 504);
        assert!(is_definite(&err(Code::NotFound)));
        assert!(!is_definite(&err(Code::Unavailable)));
    }
}
