//! The lifecycle RPC (`agent.v1.Agent`, Connect over HTTP/1.1) the control
//! plane calls, authenticated with the control plane's token.

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::Notify;
use warren_proto::{
    agent::v1::{self as pb, AgentService},
    connect::{Code, ConnectError, RequestContext},
};

use warren_backend::{BackendError, BackendKind};
use warren_netslot::NetError;
use warren_template::{Template, TemplateDefaults, TemplateError};

use crate::manager::{
    CreateRequest, EnvdDefaults, IdlePolicy, Manager, ManagerError, Record, State, TxLimitRecord,
};

/// Maps a manager failure to the Connect code callers act on.
pub fn to_connect(e: ManagerError) -> ConnectError {
    let code = match &e {
        ManagerError::Invalid(_) | ManagerError::BadRequest(_) => Code::InvalidArgument,
        ManagerError::NotFound(_) => Code::NotFound,
        ManagerError::AlreadyExists(_) => Code::AlreadyExists,
        ManagerError::WrongState { .. }
        | ManagerError::Busy { .. }
        | ManagerError::Transition(_) => Code::FailedPrecondition,
        ManagerError::Exhausted(_) | ManagerError::Net(NetError::Exhausted(_)) => {
            Code::ResourceExhausted
        }
        ManagerError::Envd(_) => Code::Unavailable,
        ManagerError::Template(t) => template_code(t),
        ManagerError::Backend(b) => match b {
            BackendError::InvalidSpec(_) => Code::InvalidArgument,
            BackendError::Template(t) => template_code(t),
            BackendError::NotFound(_) => Code::NotFound,
            BackendError::AlreadyExists(_) => Code::AlreadyExists,
            BackendError::InvalidState { .. } => Code::FailedPrecondition,
            BackendError::Unsupported { .. } => Code::Unimplemented,
            _ => Code::Internal,
        },
        ManagerError::Net(_) | ManagerError::Persist { .. } => Code::Internal,
    };
    ConnectError::new(code, e.to_string())
}

fn template_code(e: &TemplateError) -> Code {
    match e {
        TemplateError::InvalidName(_) => Code::InvalidArgument,
        TemplateError::NotFound(_) => Code::NotFound,
        TemplateError::AlreadyExists(_) => Code::AlreadyExists,
        TemplateError::InUse { .. } => Code::FailedPrecondition,
        TemplateError::IdMapMismatch { .. }
        | TemplateError::Build { .. }
        | TemplateError::Io { .. } => Code::Internal,
    }
}

fn template_defaults(d: &TemplateDefaults) -> pb::TemplateDefaults {
    pb::TemplateDefaults {
        user: d.user.clone().unwrap_or_default(),
        env: d.env.clone().into_iter().collect(),
        workdir: d.workdir.clone().unwrap_or_default(),
        start_cmd: d.start_cmd.clone().unwrap_or_default(),
        vcpus: d.vcpus.unwrap_or(0),
        memory_mb: d.memory_mb.unwrap_or(0),
    }
}

fn from_template_defaults(d: pb::TemplateDefaults) -> TemplateDefaults {
    let text = |s: String| (!s.is_empty()).then_some(s);
    TemplateDefaults {
        user: text(d.user),
        env: d.env.into_iter().collect(),
        workdir: text(d.workdir),
        start_cmd: text(d.start_cmd),
        vcpus: (d.vcpus > 0).then_some(d.vcpus),
        memory_mb: (d.memory_mb > 0).then_some(d.memory_mb),
    }
}

pub fn template_info(t: &Template, capsules: Vec<String>) -> pb::TemplateInfo {
    pb::TemplateInfo {
        name: t.meta.name.clone(),
        size_bytes: t.meta.rootfs_bytes,
        has_memory_snapshot: false,
        defaults: Some(template_defaults(&t.meta.defaults)),
        builtin: t.meta.builtin,
        image_bytes: t.image_bytes().unwrap_or(0),
        created_at_unix_ms: t.meta.created_at_ms,
        capsules,
    }
}

fn state(s: State) -> pb::CapsuleState {
    match s {
        State::Creating => pb::CapsuleState::Creating,
        State::Running => pb::CapsuleState::Running,
        State::Pausing => pb::CapsuleState::Pausing,
        State::Paused => pb::CapsuleState::Paused,
        State::Resuming => pb::CapsuleState::Resuming,
        State::Stopping => pb::CapsuleState::Stopping,
        State::Stopped => pb::CapsuleState::Stopped,
        State::Error => pb::CapsuleState::Error,
    }
}

fn backend_name(k: BackendKind) -> &'static str {
    match k {
        BackendKind::Namespace => "namespace",
        BackendKind::Firecracker => "firecracker",
    }
}

pub fn capsule_info(r: &Record) -> pb::CapsuleInfo {
    pb::CapsuleInfo {
        capsule_id: r.id.clone(),
        state: state(r.state) as i32,
        template: r.template.clone(),
        vcpus: r.vcpus,
        memory_mb: r.memory_mb,
        disk_mb: r.disk_mb,
        timeout_sec: r.timeout_sec,
        created_at_unix_ms: r.created_at_ms,
        last_active_unix_ms: r.last_active_ms,
        address: r.address.map(|a| a.to_string()).unwrap_or_default(),
        backend: backend_name(r.backend).to_owned(),
        metadata: r.metadata.clone().into_iter().collect(),
        error: r.error.clone().unwrap_or_default(),
        envd_version: r.envd_version.clone().unwrap_or_default(),
    }
}

fn defaults(d: Option<pb::EnvdDefaults>) -> EnvdDefaults {
    let d = d.unwrap_or_default();
    EnvdDefaults {
        env: d.env.into_iter().collect::<BTreeMap<_, _>>(),
        user: d.user,
        workdir: d.workdir,
    }
}

fn required_id(id: &str) -> Result<&str, ConnectError> {
    if id.is_empty() {
        Err(ConnectError::invalid_argument("capsule_id is required"))
    } else {
        Ok(id)
    }
}

/// The RPC service.
#[derive(Debug)]
pub struct Rpc {
    pub manager: Arc<Manager>,
    /// Notified by `Terminate` once every capsule is gone.
    pub terminate: Arc<Notify>,
    pub proxy_address: String,
}

impl AgentService for Rpc {
    async fn create_capsule(
        &self,
        _ctx: RequestContext,
        req: pb::CreateCapsuleRequest,
    ) -> Result<pb::CreateCapsuleResponse, ConnectError> {
        let idle_policy = match pb::IdlePolicy::try_from(req.idle_policy) {
            Ok(pb::IdlePolicy::Pause) => Some(IdlePolicy::Pause),
            Ok(pb::IdlePolicy::Destroy) => Some(IdlePolicy::Destroy),
            Ok(pb::IdlePolicy::Unspecified) => None,
            Err(_) => {
                return Err(ConnectError::invalid_argument(format!(
                    "unknown idle_policy {}",
                    req.idle_policy
                )));
            }
        };
        let tx_limit = req.tx_rate_limit.map(|l| {
            l.bandwidth.filter(|b| b.size > 0).map(|b| TxLimitRecord {
                size: b.size,
                one_time_burst: b.one_time_burst,
                refill_time_ms: b.refill_time_ms.max(1),
            })
        });
        let create = CreateRequest {
            id: req.capsule_id,
            template: req.template,
            vcpus: req.vcpus,
            memory_mb: req.memory_mb,
            disk_mb: req.disk_mb,
            timeout_sec: req.timeout_sec,
            idle_policy,
            defaults: defaults(req.defaults),
            metadata: req.metadata.into_iter().collect(),
            egress: req.egress.unwrap_or(true),
            envd_token: Some(req.access_token),
            traffic_token: Some(req.traffic_access_token),
            tx_limit,
        };
        let record = self.manager.create(create).await.map_err(to_connect)?;
        Ok(pb::CreateCapsuleResponse {
            capsule: Some(capsule_info(&record)),
        })
    }

    async fn destroy_capsule(
        &self,
        _ctx: RequestContext,
        req: pb::DestroyCapsuleRequest,
    ) -> Result<pb::DestroyCapsuleResponse, ConnectError> {
        self.manager
            .destroy(required_id(&req.capsule_id)?)
            .await
            .map_err(to_connect)?;
        Ok(pb::DestroyCapsuleResponse {})
    }

    async fn pause_capsule(
        &self,
        _ctx: RequestContext,
        req: pb::PauseCapsuleRequest,
    ) -> Result<pb::PauseCapsuleResponse, ConnectError> {
        let r = self
            .manager
            .pause(required_id(&req.capsule_id)?)
            .await
            .map_err(to_connect)?;
        Ok(pb::PauseCapsuleResponse {
            capsule: Some(capsule_info(&r)),
        })
    }

    async fn resume_capsule(
        &self,
        _ctx: RequestContext,
        req: pb::ResumeCapsuleRequest,
    ) -> Result<pb::ResumeCapsuleResponse, ConnectError> {
        let timeout = (req.timeout_sec > 0).then_some(req.timeout_sec);
        let defaults = req.defaults.map(|d| defaults(Some(d)));
        let r = self
            .manager
            .resume(required_id(&req.capsule_id)?, timeout, defaults)
            .await
            .map_err(to_connect)?;
        Ok(pb::ResumeCapsuleResponse {
            capsule: Some(capsule_info(&r)),
        })
    }

    async fn ping_capsule(
        &self,
        _ctx: RequestContext,
        req: pb::PingCapsuleRequest,
    ) -> Result<pb::PingCapsuleResponse, ConnectError> {
        self.manager
            .ping(required_id(&req.capsule_id)?)
            .map_err(to_connect)?;
        Ok(pb::PingCapsuleResponse {})
    }

    async fn list_capsules(
        &self,
        _ctx: RequestContext,
        _req: pb::ListCapsulesRequest,
    ) -> Result<pb::ListCapsulesResponse, ConnectError> {
        let (records, paused, destroyed) = self.manager.list();
        Ok(pb::ListCapsulesResponse {
            capsules: records.iter().map(capsule_info).collect(),
            auto_paused_ids: paused,
            auto_destroyed_ids: destroyed,
        })
    }

    async fn get_metrics(
        &self,
        _ctx: RequestContext,
        req: pb::GetMetricsRequest,
    ) -> Result<pb::GetMetricsResponse, ConnectError> {
        let id = (!req.capsule_id.is_empty()).then_some(req.capsule_id.as_str());
        let metrics = self.manager.metrics(id).await.map_err(to_connect)?;
        Ok(pb::GetMetricsResponse {
            metrics: metrics
                .into_iter()
                .map(|m| pb::CapsuleMetrics {
                    capsule_id: m.id,
                    sampled_at_unix_ms: m.sampled_at_ms,
                    cpu_percent: m.cpu_percent,
                    memory_bytes: m.memory_bytes,
                    memory_limit_bytes: m.memory_limit_bytes,
                    disk_bytes: m.disk_bytes,
                    disk_limit_bytes: m.disk_limit_bytes,
                    pids: m.pids,
                    oom_kills: m.oom_kills,
                })
                .collect(),
        })
    }

    async fn get_host_info(
        &self,
        _ctx: RequestContext,
        _req: pb::GetHostInfoRequest,
    ) -> Result<pb::GetHostInfoResponse, ConnectError> {
        let h = self.manager.host_info().await;
        Ok(pb::GetHostInfoResponse {
            backend: backend_name(h.backend).to_owned(),
            vcpus: h.vcpus,
            memory_mb: h.memory_mb,
            disk_mb: h.disk_mb,
            allocated_vcpus: h.allocated_vcpus,
            allocated_memory_mb: h.allocated_memory_mb,
            capsule_count: h.capsules,
            templates: h
                .templates
                .into_iter()
                .map(|s| template_info(&s.template, s.capsules))
                .collect(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            proxy_address: self.proxy_address.clone(),
        })
    }

    async fn snapshot_capsule(
        &self,
        _ctx: RequestContext,
        req: pb::SnapshotCapsuleRequest,
    ) -> Result<pb::SnapshotCapsuleResponse, ConnectError> {
        if req.template.is_empty() {
            return Err(ConnectError::invalid_argument("template is required"));
        }
        let defaults = req.defaults.map(from_template_defaults).unwrap_or_default();
        let template = self
            .manager
            .snapshot(
                required_id(&req.capsule_id)?,
                &req.template,
                req.overwrite,
                defaults,
            )
            .await
            .map_err(to_connect)?;
        Ok(pb::SnapshotCapsuleResponse {
            template: Some(template_info(&template, Vec::new())),
        })
    }

    async fn delete_template(
        &self,
        _ctx: RequestContext,
        req: pb::DeleteTemplateRequest,
    ) -> Result<pb::DeleteTemplateResponse, ConnectError> {
        if req.template.is_empty() {
            return Err(ConnectError::invalid_argument("template is required"));
        }
        self.manager
            .delete_template(&req.template)
            .await
            .map_err(to_connect)?;
        Ok(pb::DeleteTemplateResponse {})
    }

    async fn terminate(
        &self,
        _ctx: RequestContext,
        _req: pb::TerminateRequest,
    ) -> Result<pb::TerminateResponse, ConnectError> {
        let failures = self.manager.destroy_all().await;
        if !failures.is_empty() {
            let list: Vec<String> = failures
                .iter()
                .map(|(id, e)| format!("{id}: {e}"))
                .collect();
            return Err(ConnectError::internal(format!(
                "some capsules could not be destroyed: {}",
                list.join("; ")
            )));
        }
        self.terminate.notify_one();
        Ok(pb::TerminateResponse {})
    }
}
