//! Typed client for a host's `agent.v1.Agent` lifecycle RPC.

use std::time::Duration;

use warren_proto::agent::v1 as pb;

use crate::connect::{ConnectClient, Endpoint, RpcError};
use crate::error::ApiError;

/// One agent, reached at its RPC address with the control plane's token.
#[derive(Debug, Clone)]
pub struct AgentClient {
    rpc: ConnectClient,
    endpoint: Endpoint,
    timeout: Duration,
}

const SERVICE: &str = "/agent.v1.Agent/";

impl AgentClient {
    pub fn new(rpc: ConnectClient, address: &str, token: &str, timeout: Duration) -> Self {
        let endpoint =
            Endpoint::new(address).with_header("authorization", &format!("Bearer {token}"));
        Self {
            rpc,
            endpoint,
            timeout,
        }
    }

    async fn call<Req, Resp>(&self, method: &str, req: Req) -> Result<Resp, RpcError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let path = format!("{SERVICE}{method}");
        self.rpc
            .unary(&self.endpoint, &path, &req, self.timeout)
            .await
    }

    pub async fn create_capsule(
        &self,
        req: pb::CreateCapsuleRequest,
    ) -> Result<pb::CapsuleInfo, RpcError> {
        let resp: pb::CreateCapsuleResponse = self.call("CreateCapsule", req).await?;
        resp.capsule
            .ok_or_else(missing("CreateCapsuleResponse.capsule"))
    }

    pub async fn destroy_capsule(&self, capsule_id: &str) -> Result<(), RpcError> {
        let _: pb::DestroyCapsuleResponse = self
            .call(
                "DestroyCapsule",
                pb::DestroyCapsuleRequest {
                    capsule_id: capsule_id.into(),
                },
            )
            .await?;
        Ok(())
    }

    pub async fn pause_capsule(&self, capsule_id: &str) -> Result<pb::CapsuleInfo, RpcError> {
        let resp: pb::PauseCapsuleResponse = self
            .call(
                "PauseCapsule",
                pb::PauseCapsuleRequest {
                    capsule_id: capsule_id.into(),
                },
            )
            .await?;
        resp.capsule
            .ok_or_else(missing("PauseCapsuleResponse.capsule"))
    }

    pub async fn resume_capsule(
        &self,
        req: pb::ResumeCapsuleRequest,
    ) -> Result<pb::CapsuleInfo, RpcError> {
        let resp: pb::ResumeCapsuleResponse = self.call("ResumeCapsule", req).await?;
        resp.capsule
            .ok_or_else(missing("ResumeCapsuleResponse.capsule"))
    }

    pub async fn ping_capsule(&self, capsule_id: &str) -> Result<(), RpcError> {
        let _: pb::PingCapsuleResponse = self
            .call(
                "PingCapsule",
                pb::PingCapsuleRequest {
                    capsule_id: capsule_id.into(),
                },
            )
            .await?;
        Ok(())
    }

    pub async fn list_capsules(&self) -> Result<pb::ListCapsulesResponse, RpcError> {
        self.call("ListCapsules", pb::ListCapsulesRequest {}).await
    }

    pub async fn metrics(&self, capsule_id: &str) -> Result<Vec<pb::CapsuleMetrics>, RpcError> {
        let resp: pb::GetMetricsResponse = self
            .call(
                "GetMetrics",
                pb::GetMetricsRequest {
                    capsule_id: capsule_id.into(),
                },
            )
            .await?;
        Ok(resp.metrics)
    }

    pub async fn host_info(&self) -> Result<pb::GetHostInfoResponse, RpcError> {
        self.call("GetHostInfo", pb::GetHostInfoRequest {}).await
    }

    pub async fn snapshot_capsule(
        &self,
        capsule_id: &str,
        template: &str,
        overwrite: bool,
    ) -> Result<pb::TemplateInfo, RpcError> {
        let resp: pb::SnapshotCapsuleResponse = self
            .call(
                "SnapshotCapsule",
                pb::SnapshotCapsuleRequest {
                    capsule_id: capsule_id.into(),
                    template: template.into(),
                    overwrite,
                },
            )
            .await?;
        resp.template
            .ok_or_else(missing("SnapshotCapsuleResponse.template"))
    }

    pub async fn delete_template(&self, template: &str) -> Result<(), RpcError> {
        let _: pb::DeleteTemplateResponse = self
            .call(
                "DeleteTemplate",
                pb::DeleteTemplateRequest {
                    template: template.into(),
                },
            )
            .await?;
        Ok(())
    }

    pub async fn terminate(&self) -> Result<(), RpcError> {
        let _: pb::TerminateResponse = self.call("Terminate", pb::TerminateRequest {}).await?;
        Ok(())
    }
}

fn missing(field: &'static str) -> impl FnOnce() -> RpcError {
    move || RpcError::Status {
        code: "internal".into(),
        message: format!("agent response lacks {field}"),
    }
}

/// Maps an agent or envd error to the REST error users see.
pub fn rpc_to_api(err: RpcError) -> ApiError {
    let msg = err.message();
    match err.code() {
        "not_found" => ApiError::NotFound(msg),
        "invalid_argument" | "out_of_range" => ApiError::InvalidRequest(msg),
        "failed_precondition" | "aborted" => ApiError::InvalidState(msg),
        "already_exists" => ApiError::AlreadyExists(msg),
        "resource_exhausted" => ApiError::HostUnavailable(msg),
        "unavailable" => ApiError::HostUnavailable(format!("capsule host is unreachable: {msg}")),
        "deadline_exceeded" => ApiError::Timeout(msg),
        _ => ApiError::Agent(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: &str) -> RpcError {
        RpcError::Status {
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn maps_codes_to_rest_errors() {
        assert_eq!(rpc_to_api(status("not_found")).status(), 404);
        assert_eq!(rpc_to_api(status("invalid_argument")).status(), 400);
        assert_eq!(
            rpc_to_api(status("failed_precondition")).code(),
            "invalid_state"
        );
        assert_eq!(
            rpc_to_api(status("already_exists")).code(),
            "already_exists"
        );
        assert_eq!(rpc_to_api(status("internal")).code(), "agent_error");
        assert_eq!(
            rpc_to_api(RpcError::Transport("refused".into())).code(),
            "host_unavailable"
        );
        assert_eq!(
            rpc_to_api(RpcError::Timeout(Duration::from_secs(1))).status(),
            504
        );
    }
}
