//! Typed client for a host's `agent.v1.Agent` lifecycle RPC (the
//! generated `warren_proto` client, with the control plane's token).
//! Calls fail with the agent's Connect error ([`RpcError`]); a host that
//! cannot be addressed at all is [`Unreachable`].

use http::HeaderValue;
use warren_proto::agent::v1 as pb;
use warren_proto::connect::{Code, ConnectError};

use crate::rpc::RpcClients;

pub type RpcError = ConnectError;

/// A host (its agent or its data plane) that cannot be reached: not
/// registered, gone, offline, or without a usable address. The message
/// says which.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// One agent, reached at its RPC address with the control plane's token.
#[derive(Debug, Clone)]
pub struct AgentClient {
    inner: pb::AgentClient,
}

impl AgentClient {
    pub fn new(rpc: &RpcClients, address: &str, token: &str) -> Result<Self, Unreachable> {
        let (unary, _) = rpc
            .clients(address)
            .map_err(|e| Unreachable(format!("bad agent address {address}: {}", e.message)))?;
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Unreachable("the agent token is not a valid header value".into()))?;
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
        defaults: Option<pb::TemplateDefaults>,
    ) -> Result<pb::TemplateInfo, RpcError> {
        let req = pb::SnapshotCapsuleRequest {
            capsule_id: capsule_id.into(),
            template: template.into(),
            overwrite,
            defaults,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_errors() {
        assert!(is_definite(&ConnectError::new(Code::NotFound, "m")));
        assert!(!is_definite(&ConnectError::new(Code::Unavailable, "m")));
    }
}
