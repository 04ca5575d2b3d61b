//! Control plane hot paths, end to end over HTTP against a throwaway
//! Postgres, with a stand-in agent (so the figures are the control plane's
//! own: `agent_capsules` measures the real agent, `scripts/api_latency.py`
//! the whole path) and an in-process envd as the capsule:
//! - create → ready latency (p50/p99 printed), beside the bare agent RPC it
//!   wraps as the floor;
//! - exec round trip (`POST /exec` of `true`), beside starting the same
//!   command on envd directly;
//! - 50 concurrent creates.
//!
//! Run: `cargo bench -p warren-benches --bench control` (as root: the
//! throwaway Postgres runs as the `postgres` user).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::IntoResponse;
use criterion::{Criterion, criterion_group, criterion_main};
use envd::state::{Defaults, Envd};
use futures_util::StreamExt;
use prost::Message;
use serde_json::{Value, json};
use warren_control::config::ControlConfig;
use warren_control::db::cluster::PgCluster;
use warren_proto::agent::v1 as pb;
use warren_proto::connect::Client;
use warren_proto::process::{ProcessClient, ProcessConfig, StartRequest};

const TOKEN: &str = "bench-agent-token-0123456789";

/// The stand-in agent: lifecycle answers only, capacity to spare.
async fn agent(Path(method): Path<String>, body: Bytes, envd: String) -> axum::response::Response {
    let proto = |m: Vec<u8>| ([("content-type", "application/proto")], m).into_response();
    match method.as_str() {
        "CreateCapsule" => {
            let req = pb::CreateCapsuleRequest::decode(body).unwrap_or_default();
            proto(
                pb::CreateCapsuleResponse {
                    capsule: Some(pb::CapsuleInfo {
                        capsule_id: req.capsule_id,
                        state: pb::CapsuleState::Running as i32,
                        ..Default::default()
                    }),
                }
                .encode_to_vec(),
            )
        }
        "DestroyCapsule" => proto(pb::DestroyCapsuleResponse {}.encode_to_vec()),
        "ListCapsules" => proto(pb::ListCapsulesResponse::default().encode_to_vec()),
        "GetMetrics" => proto(pb::GetMetricsResponse::default().encode_to_vec()),
        "GetHostInfo" => proto(
            pb::GetHostInfoResponse {
                backend: "namespace".into(),
                vcpus: 1000,
                memory_mb: 1 << 30,
                templates: vec![pb::TemplateInfo {
                    name: "tiny".into(),
                    ..Default::default()
                }],
                proxy_address: envd,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        _ => (
            axum::http::StatusCode::NOT_FOUND,
            "{\"code\":\"unimplemented\"}",
        )
            .into_response(),
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    pg: PgCluster,
    base: String,
    key: String,
    agent_addr: String,
    envd_addr: String,
    http: reqwest::Client,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.pg.stop(true);
    }
}

async fn setup() -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("warren-bench-")
        .tempdir()
        .expect("tempdir");
    let pg = PgCluster::new(&dir.path().join("pg"), 5432).expect("postgres binaries");
    pg.init().expect("initdb");
    pg.start(true).expect("postgres");
    let admin = sqlx::PgPool::connect(&pg.url("postgres"))
        .await
        .expect("connect");
    sqlx::query("CREATE DATABASE bench")
        .execute(&admin)
        .await
        .expect("db");

    // envd, in-process.
    let envd_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let envd_addr = envd_listener.local_addr().expect("addr").to_string();
    let state: Arc<Envd> = Envd::new(
        Default::default(),
        Defaults {
            user: "root".into(),
            ..Defaults::default()
        },
    )
    .expect("envd");
    tokio::spawn(envd::server::serve(
        envd_listener,
        state,
        std::future::pending(),
    ));

    // The stand-in agent.
    let proxy = envd_addr.clone();
    let router = axum::Router::new().route(
        "/agent.v1.Agent/{method}",
        axum::routing::post(move |m, b| agent(m, b, proxy.clone())),
    );
    let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let agent_addr = agent_listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(agent_listener, router).await });

    // Control.
    let mut cfg = ControlConfig::for_database(&pg.url("bench"));
    cfg.no_background = true;
    let server = warren_control::Server::builder(cfg)
        .build()
        .await
        .expect("control");
    let app = server.app().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(server.serve(listener, std::future::pending()));

    let http = reqwest::Client::new();
    let post = |path: &str, auth: Option<String>, body: Value| {
        let mut r = http.post(format!("{base}{path}")).json(&body);
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        async move {
            r.send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let user = post(
        "/v1/auth/signup",
        None,
        json!({ "email": "bench@example.com", "password": "benchmark-pass", "name": "Bench" }),
    )
    .await;
    let jwt = user["token"].as_str().expect("token").to_string();
    sqlx::query("UPDATE users SET is_admin = TRUE")
        .execute(&app.db)
        .await
        .expect("admin");
    let key = post("/v1/api-keys", Some(jwt.clone()), json!({})).await["key"]
        .as_str()
        .expect("key")
        .to_string();
    let host = post("/v1/hosts", Some(jwt), json!({ "type": "regular" })).await;
    let reg = post(
        "/v1/hosts/register",
        None,
        json!({ "token": host["registration_token"], "address": agent_addr, "agent_token": TOKEN }),
    )
    .await;
    let conn = warren_control::db::hosts::conn(&app.db, reg["host"]["id"].as_str().expect("host"))
        .await
        .expect("host")
        .expect("registered host");
    warren_control::reconciler::sync_host(&app, &conn)
        .await
        .expect("sync");
    sqlx::query("UPDATE templates SET default_user = 'root'")
        .execute(&app.db)
        .await
        .expect("user");
    Setup {
        _dir: dir,
        pg,
        base,
        key,
        agent_addr,
        envd_addr,
        http,
    }
}

impl Setup {
    async fn create(&self) -> String {
        let v: Value = self
            .http
            .post(format!("{}/v1/capsules", self.base))
            .header("X-API-Key", &self.key)
            .json(&json!({ "template": "tiny" }))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        assert_eq!(v["status"], "running", "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    async fn destroy(&self, id: &str) {
        let r = self
            .http
            .delete(format!("{}/v1/capsules/{id}", self.base))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .expect("destroy");
        assert_eq!(r.status(), 204);
    }
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    if samples.is_empty() {
        return;
    }
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label}: p50 {:?}  p99 {:?}  (n={})",
        at(0.5),
        at(0.99),
        samples.len()
    );
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = rt.block_on(setup());

    // Create → ready, and its floor: the agent RPC alone.
    let lat = std::sync::Mutex::new(Vec::new());
    c.bench_function("control/create_to_ready", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let s = &s;
            let lat = &lat;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let id = s.create().await;
                    let d = t.elapsed();
                    total += d;
                    lat.lock().expect("samples").push(d);
                    s.destroy(&id).await;
                }
                total
            }
        })
    });
    percentiles(
        "control/create_to_ready",
        lat.into_inner().expect("samples"),
    );
    let agent = warren_control::agent_client::AgentClient::new(
        &warren_control::rpc::RpcClients::new(Duration::from_secs(10)),
        &s.agent_addr,
        TOKEN,
    )
    .expect("agent client");
    c.bench_function("control/create_floor_agent_rpc", |b| {
        b.to_async(&rt).iter(|| async {
            agent
                .create_capsule(pb::CreateCapsuleRequest {
                    capsule_id: "sb-floor".into(),
                    template: "tiny".into(),
                    ..Default::default()
                })
                .await
                .expect("create")
        })
    });

    // Exec round trip, and its floor: the same start on envd directly.
    let id = rt.block_on(s.create());
    let exec_url = format!("{}/v1/capsules/{id}/exec", s.base);
    let lat = std::sync::Mutex::new(Vec::new());
    c.bench_function("control/exec_true", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (s, exec_url, lat) = (&s, &exec_url, &lat);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let v: Value = s
                        .http
                        .post(exec_url)
                        .header("X-API-Key", &s.key)
                        .json(&json!({ "cmd": "true" }))
                        .send()
                        .await
                        .expect("exec")
                        .json()
                        .await
                        .expect("json");
                    let d = t.elapsed();
                    assert_eq!(v["exit_code"], 0, "{v}");
                    total += d;
                    lat.lock().expect("samples").push(d);
                }
                total
            }
        })
    });
    percentiles("control/exec_true", lat.into_inner().expect("samples"));
    let envd = ProcessClient::new(
        Client::builder(format!("http://{}", s.envd_addr))
            .build()
            .expect("client"),
    );
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), "true".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    c.bench_function("control/exec_floor_envd_direct", |b| {
        b.to_async(&rt).iter(|| async {
            let mut events = envd.start(&req).await.expect("start");
            while let Some(ev) = events.next().await {
                ev.expect("event");
            }
        })
    });

    // 50 concurrent creates.
    let mut group = c.benchmark_group("control/concurrent_creates");
    group.sample_size(10);
    group.bench_function("50", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let s = &s;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let ids = futures_util::future::join_all((0..50).map(|_| s.create())).await;
                    total += t.elapsed();
                    futures_util::future::join_all(ids.iter().map(|id| s.destroy(id))).await;
                }
                total
            }
        })
    });
    group.finish();
}

criterion_group!(control, benches);
criterion_main!(control);
