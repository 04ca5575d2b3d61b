//! Test harness: a throwaway Postgres cluster per test binary (initdb in a
//! temp dir, fsync off, Unix socket only, stopped and removed at exit even
//! when tests fail), a fresh database per test, in-process control
//! replicas on loopback, and small HTTP helpers.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use warren_control::app::AppState;
use warren_control::config::ControlConfig;
use warren_control::db::cluster::PgCluster;
use warren_control::{Server, ServerBuilder};

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

extern "C" fn stop_cluster() {
    if let Some(pg) = CLUSTER.get() {
        let _ = pg.stop(true);
        let _ = std::fs::remove_dir_all(&pg.dir);
    }
}

fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "warren-test-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let pg = PgCluster::new(&dir, 5432).expect("postgres binaries (postgresql-15)");
        pg.init().expect("initdb");
        pg.start(true).expect("start postgres");
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(stop_cluster) };
        pg
    })
}

/// A new, empty database on the throwaway cluster.
pub async fn fresh_db() -> String {
    let pg = cluster();
    let name = format!("t_{:016x}", rand::random::<u64>());
    let admin = sqlx::PgPool::connect(&pg.url("postgres"))
        .await
        .expect("connect");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    pg.url(&name)
}

pub fn config(db: &str) -> ControlConfig {
    let mut cfg = ControlConfig::for_database(db);
    cfg.no_background = true;
    cfg.agent_timeout_secs = 5;
    // Seconds to start, rather than `minimal`'s first-time build.
    cfg.default_template = "tiny".into();
    cfg
}

/// One in-process control replica.
pub struct Control {
    pub base: String,
    pub app: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Control {
    pub async fn start(cfg: ControlConfig) -> Control {
        Self::serve(Server::builder(cfg)).await
    }

    /// A replica built by `builder` (with extensions).
    pub async fn serve(builder: ServerBuilder) -> Control {
        let server = builder.build().await.expect("control state");
        let app = server.app().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        Control {
            base: format!("http://{addr}"),
            app,
            stop: Some(tx),
            task,
        }
    }

    pub async fn on(db: &str) -> Control {
        Self::start(config(db)).await
    }

    /// Graceful stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }

    /// Dies on the spot, mid-request (a crash).
    pub fn kill(self) {
        self.task.abort();
    }

    pub fn client(&self) -> Client {
        Client {
            base: self.base.clone(),
            http: reqwest::Client::new(),
            auth: None,
        }
    }
}

/// An HTTP client with an optional credential.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub auth: Option<String>,
}

impl Client {
    pub fn with(&self, token: &str) -> Client {
        Client {
            auth: Some(token.to_string()),
            ..self.clone()
        }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.auth {
            r = if t.starts_with("wrn_") {
                r.header("X-API-Key", t)
            } else {
                r.bearer_auth(t)
            };
        }
        r
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

/// Asserts Wrenn's error shape and code.
pub fn assert_error(resp: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(resp.0.as_u16(), status, "status of {resp:?}");
    assert_eq!(resp.1["error"]["code"], code, "code of {resp:?}");
    assert!(
        resp.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "message of {resp:?}"
    );
}

/// A signed-up user: their session and team.
#[derive(Debug, Clone)]
pub struct User {
    pub token: String,
    pub user_id: String,
    pub team_id: String,
}

pub async fn signup(c: &Client, email: &str) -> User {
    let (st, v) = c
        .post(
            "/v1/auth/signup",
            json!({ "email": email, "password": "hunter22hunter", "name": "Tester" }),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    User {
        token: v["token"].as_str().expect("token").into(),
        user_id: v["user_id"].as_str().expect("user").into(),
        team_id: v["team_id"].as_str().expect("team").into(),
    }
}

pub async fn api_key(c: &Client, user: &User) -> String {
    let (st, v) = c
        .with(&user.token)
        .post("/v1/api-keys", json!({ "name": "test" }))
        .await;
    assert_eq!(st, 201, "{v}");
    v["key"].as_str().expect("key").into()
}

pub async fn make_admin(app: &AppState, user: &User) {
    sqlx::query("UPDATE users SET is_admin = TRUE WHERE id = $1")
        .bind(&user.user_id)
        .execute(&app.db)
        .await
        .expect("make admin");
}

/// Inserts a capsule row directly (for tests of scoping and monitoring that
/// need no agent).
pub async fn insert_capsule(
    app: &AppState,
    team: &str,
    host: Option<&str>,
    status: &str,
) -> String {
    let id = warren_control::ids::new_id("sb-");
    sqlx::query(
        "INSERT INTO capsules (id, team_id, host_id, template, agent_template, status, vcpus, memory_mb, envd_token)
         VALUES ($1, $2, $3, 'tiny', 'tiny', $4, 1, 512, 'x')",
    )
    .bind(&id)
    .bind(team)
    .bind(host)
    .bind(status)
    .execute(&app.db)
    .await
    .expect("insert capsule");
    id
}

pub async fn count(app: &AppState, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.db)
        .await
        .expect("count")
}

/// Pulls host `host`'s state from its agent once.
pub async fn sync(c: &Control, host: &str) {
    let conn = warren_control::db::hosts::conn(&c.app.db, host)
        .await
        .expect("host")
        .expect("the host exists");
    warren_control::reconciler::sync_host(&c.app, &conn)
        .await
        .expect("sync");
}

/// Polls `f` until it returns `Some`, for up to `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
