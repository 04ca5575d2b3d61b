//! A capsule whose envd is a local envd process: the stand-in agent
//! answers the lifecycle calls and reports a local envd (run by the test,
//! on loopback) as the capsule's data plane, so the REST API (and the
//! `warren` CLI) talk to envd exactly as they do through an agent's relay
//! (which envd ignores the relay headers of).

use std::path::PathBuf;
use std::process::{Child, Command};

use serde_json::json;

use crate::common::*;
use crate::stub_agent::{StubAgent, add_host};

pub struct Envd(Child);

impl Drop for Envd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The envd binary: `ENVD_BIN`, else the one built beside this test.
fn envd_binary() -> PathBuf {
    warren_testkit::built_bin("envd", Some("ENVD_BIN"))
}

async fn start_envd(bin: &std::path::Path) -> (Envd, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let child = Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--default-user",
            "root",
        ])
        .spawn()
        .expect("start envd");
    let addr = format!("127.0.0.1:{port}");
    let envd = Envd(child);
    let http = reqwest::Client::new();
    eventually(20, || async {
        http.get(format!("http://{addr}/health"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    (envd, addr)
}

/// Control + stand-in agent + local envd, one running capsule of an
/// administrator's team: (control, agent, envd, API key, capsule id).
pub async fn capsule_on_local_envd(max_upload: u64) -> (Control, StubAgent, Envd, String, String) {
    let (envd, envd_addr) = start_envd(&envd_binary()).await;
    let mut cfg = config(&fresh_db().await);
    cfg.max_upload_bytes = max_upload;
    let c = Control::start(cfg).await;
    let agent = StubAgent::start().await;
    agent.state.lock().expect("lock").proxy_address = envd_addr;
    let http = c.client();
    let admin = signup(&http, "envd@example.com").await;
    make_admin(&c.app, &admin).await;
    let key = api_key(&http, &admin).await;
    add_host(&c, &admin.token, &agent).await;
    // The local "capsule" is this machine: run as root.
    sqlx::query("UPDATE templates SET default_user = 'root' WHERE name = 'tiny'")
        .execute(&c.app.db)
        .await
        .expect("template user");
    let (st, cap) = http
        .with(&key)
        .post("/v1/capsules", json!({ "template": "tiny" }))
        .await;
    assert_eq!(st, 202, "{cap}");
    let id = cap["id"].as_str().expect("id").to_string();
    (c, agent, envd, key, id)
}
