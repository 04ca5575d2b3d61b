//! A stand-in for warren-agent's lifecycle RPC (`agent.v1.Agent` over
//! Connect, binary codec), for the few `*_with_stub_agent` tests that need
//! an agent before the real one exists. It keeps capsules in a map; it runs
//! nothing. Knobs make creates slow or make the agent vanish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use serde_json::json;
use warren_proto::agent::v1 as pb;

use crate::common::{Control, sync};

pub const TOKEN: &str = "stub-agent-token-0123456789";

#[derive(Default)]
pub struct Inner {
    pub capsules: HashMap<String, pb::CapsuleInfo>,
    pub create_delay: Duration,
    pub creates: u32,
    pub auto_paused: Vec<String>,
    /// What GetHostInfo reports as the data plane (where envd is reached).
    pub proxy_address: String,
}

#[derive(Clone)]
pub struct StubAgent {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<Inner>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

fn error(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({ "code": code, "message": msg }).to_string(),
    )
        .into_response()
}

fn ok<M: Message>(m: M) -> Response {
    ([("content-type", "application/proto")], m.encode_to_vec()).into_response()
}

async fn handle(
    State(state): State<Arc<Mutex<Inner>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", "bad token");
    }
    macro_rules! decode {
        ($t:ty) => {
            match <$t>::decode(body.clone()) {
                Ok(m) => m,
                Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_argument", &e.to_string()),
            }
        };
    }
    match method.as_str() {
        "CreateCapsule" => {
            let req = decode!(pb::CreateCapsuleRequest);
            let delay = state.lock().expect("lock").create_delay;
            tokio::time::sleep(delay).await;
            let mut s = state.lock().expect("lock");
            if req.template != "tiny" {
                return error(StatusCode::NOT_FOUND, "not_found", "unknown template");
            }
            if s.capsules.contains_key(&req.capsule_id) {
                return error(StatusCode::CONFLICT, "already_exists", "duplicate id");
            }
            s.creates += 1;
            let info = pb::CapsuleInfo {
                capsule_id: req.capsule_id.clone(),
                state: pb::CapsuleState::Running as i32,
                template: req.template,
                vcpus: req.vcpus,
                memory_mb: req.memory_mb,
                backend: "namespace".into(),
                ..Default::default()
            };
            s.capsules.insert(req.capsule_id, info.clone());
            ok(pb::CreateCapsuleResponse {
                capsule: Some(info),
            })
        }
        "DestroyCapsule" => {
            let req = decode!(pb::DestroyCapsuleRequest);
            match state.lock().expect("lock").capsules.remove(&req.capsule_id) {
                Some(_) => ok(pb::DestroyCapsuleResponse {}),
                None => error(StatusCode::NOT_FOUND, "not_found", "no such capsule"),
            }
        }
        "PauseCapsule" | "ResumeCapsule" => {
            let (id, from, to) = if method == "PauseCapsule" {
                (
                    decode!(pb::PauseCapsuleRequest).capsule_id,
                    pb::CapsuleState::Running,
                    pb::CapsuleState::Paused,
                )
            } else {
                (
                    decode!(pb::ResumeCapsuleRequest).capsule_id,
                    pb::CapsuleState::Paused,
                    pb::CapsuleState::Running,
                )
            };
            let mut s = state.lock().expect("lock");
            let Some(c) = s.capsules.get_mut(&id) else {
                return error(StatusCode::NOT_FOUND, "not_found", "no such capsule");
            };
            if c.state != from as i32 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "failed_precondition",
                    "wrong state",
                );
            }
            c.state = to as i32;
            let c = c.clone();
            if method == "PauseCapsule" {
                ok(pb::PauseCapsuleResponse { capsule: Some(c) })
            } else {
                ok(pb::ResumeCapsuleResponse { capsule: Some(c) })
            }
        }
        "PingCapsule" => ok(pb::PingCapsuleResponse {}),
        "ListCapsules" => {
            let mut s = state.lock().expect("lock");
            let auto_paused_ids = std::mem::take(&mut s.auto_paused);
            ok(pb::ListCapsulesResponse {
                capsules: s.capsules.values().cloned().collect(),
                auto_paused_ids,
                auto_destroyed_ids: vec![],
            })
        }
        "GetMetrics" => ok(pb::GetMetricsResponse { metrics: vec![] }),
        "GetHostInfo" => ok(pb::GetHostInfoResponse {
            proxy_address: {
                let p = state.lock().expect("lock").proxy_address.clone();
                if p.is_empty() {
                    "127.0.0.1:1".into()
                } else {
                    p
                }
            },
            backend: "namespace".into(),
            vcpus: 2,
            memory_mb: 2048,
            disk_mb: 10240,
            templates: vec![pb::TemplateInfo {
                name: "tiny".into(),
                size_bytes: 1 << 20,
                has_memory_snapshot: false,
                ..Default::default()
            }],
            agent_version: "stub".into(),
            ..Default::default()
        }),
        _ => error(StatusCode::NOT_FOUND, "unimplemented", "not in the stub"),
    }
}

impl StubAgent {
    pub async fn start() -> StubAgent {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), Arc::default()).await
    }

    /// Serves `state` on `addr` (to come back on the same address).
    pub async fn start_on(addr: SocketAddr, state: Arc<Mutex<Inner>>) -> StubAgent {
        let app = Router::new()
            .route("/agent.v1.Agent/{method}", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind stub");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StubAgent {
            addr,
            state,
            task: Arc::new(task),
        }
    }

    /// The agent goes away (its capsules are remembered for a restart).
    pub fn kill(&self) {
        self.task.abort();
    }
}

/// Registers `agent` as a regular host and pulls its state once; the host
/// id and its heartbeat token.
pub async fn add_host(c: &Control, admin_token: &str, agent: &StubAgent) -> (String, String) {
    let http = c.client().with(admin_token);
    let (_, created) = http.post("/v1/hosts", json!({ "type": "regular" })).await;
    let (st, reg) = c
        .client()
        .post(
            "/v1/hosts/register",
            json!({ "token": created["registration_token"], "address": agent.addr.to_string(), "agent_token": TOKEN }),
        )
        .await;
    assert_eq!(st, 201, "{reg}");
    let id = reg["host"]["id"].as_str().expect("host id").to_string();
    sync(c, &id).await;
    (id, reg["token"].as_str().expect("host token").to_string())
}
