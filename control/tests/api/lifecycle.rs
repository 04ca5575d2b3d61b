//! Capsule lifecycle against a stand-in agent (the real warren-agent is
//! being built alongside): placement and admission, pause/resume/destroy,
//! a control plane that dies in the middle of a create, and an agent that
//! goes away and comes back.

use std::time::Duration;

use serde_json::json;
use warren_control::{monitor, reconciler};

use crate::common::*;
use crate::stub_agent::{StubAgent, add_host};

async fn admin_and_key(c: &Control) -> (User, String) {
    let http = c.client();
    let admin = signup(&http, "admin@example.com").await;
    make_admin(&c.app, &admin).await;
    let key = api_key(&http, &admin).await;
    (admin, key)
}

#[tokio::test]
async fn capsule_lifecycle_with_stub_agent() {
    let c = Control::on(&fresh_db().await).await;
    let agent = StubAgent::start().await;
    let (admin, key) = admin_and_key(&c).await;
    add_host(&c, &admin.token, &agent).await;
    let k = c.client().with(&key);

    // The agent's built-in template became a platform template.
    let (_, tpls) = k.get("/v1/snapshots?type=base").await;
    assert_eq!(tpls[0]["name"], "tiny", "{tpls}");

    let (st, cap) = k
        .post(
            "/v1/capsules",
            json!({ "template": "tiny", "vcpus": 1, "memory_mb": 512, "timeout_sec": 5 }),
        )
        .await;
    assert_eq!(st, 202, "{cap}");
    assert_eq!(cap["status"], "running");
    assert_eq!(
        cap["timeout_sec"], 60,
        "short idle timeouts are raised to 60"
    );
    let id = cap["id"].as_str().unwrap().to_string();
    assert!(agent.state.lock().unwrap().capsules.contains_key(&id));

    let (st, v) = k.post(&format!("/v1/capsules/{id}/pause"), json!({})).await;
    assert_eq!(
        (st.as_u16(), v["status"].as_str()),
        (202, Some("paused")),
        "{v}"
    );
    assert_error(
        &k.post(&format!("/v1/capsules/{id}/pause"), json!({})).await,
        409,
        "invalid_state",
    );
    assert_error(
        &k.post(&format!("/v1/capsules/{id}/ping"), json!({})).await,
        409,
        "invalid_state",
    );
    assert_error(
        &k.post(&format!("/v1/capsules/{id}/exec"), json!({ "cmd": "true" }))
            .await,
        409,
        "invalid_state",
    );
    let (st, v) = k
        .post(&format!("/v1/capsules/{id}/resume"), json!({}))
        .await;
    assert_eq!(
        (st.as_u16(), v["status"].as_str()),
        (202, Some("running")),
        "{v}"
    );
    assert_eq!(
        k.post(&format!("/v1/capsules/{id}/ping"), json!({}))
            .await
            .0,
        204
    );

    // Admission: the host has 2 GiB; four 512 MiB capsules fill it.
    for _ in 0..3 {
        assert_eq!(
            k.post(
                "/v1/capsules",
                json!({ "template": "tiny", "memory_mb": 512 })
            )
            .await
            .0,
            202
        );
    }
    let before = count(&c.app, "SELECT count(*) FROM capsules").await;
    assert_error(
        &k.post(
            "/v1/capsules",
            json!({ "template": "tiny", "memory_mb": 512 }),
        )
        .await,
        503,
        "host_unavailable",
    );
    assert_eq!(
        count(&c.app, "SELECT count(*) FROM capsules").await,
        before,
        "refused create left no row"
    );
    let (_, stats) = k.get("/v1/capsules/stats?range=5m").await;
    assert_eq!(stats["current"]["running_count"], 4, "{stats}");
    assert_eq!(stats["current"]["memory_mb_reserved"], 2048);

    // A paused capsule frees its place; resuming it needs the place back.
    k.post(&format!("/v1/capsules/{id}/pause"), json!({})).await;
    let (st, other) = k
        .post(
            "/v1/capsules",
            json!({ "template": "tiny", "memory_mb": 512 }),
        )
        .await;
    assert_eq!(st, 202);
    assert_error(
        &k.post(&format!("/v1/capsules/{id}/resume"), json!({}))
            .await,
        503,
        "host_unavailable",
    );
    let (_, v) = k.get(&format!("/v1/capsules/{id}")).await;
    assert_eq!(v["status"], "paused", "a refused resume changes nothing");

    // Destroy.
    let other = other["id"].as_str().unwrap();
    assert_eq!(k.delete(&format!("/v1/capsules/{other}")).await.0, 204);
    let (_, v) = k.get(&format!("/v1/capsules/{other}")).await;
    assert_eq!(v["status"], "stopped");
    assert!(!agent.state.lock().unwrap().capsules.contains_key(other));
    assert_error(
        &k.delete(&format!("/v1/capsules/{other}")).await,
        404,
        "not_found",
    );

    // Every mutating call left an audit row.
    let (_, audit) = k
        .get("/v1/audit-logs?resource_type=capsule&limit=200")
        .await;
    let items = audit["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["action"] == "create" && i["resource_id"] == id.as_str())
    );
    assert!(
        items
            .iter()
            .any(|i| i["action"] == "pause" && i["status"] == "error")
    );
    assert!(
        items
            .iter()
            .any(|i| i["action"] == "delete" && i["resource_id"] == other)
    );
    let usage = k.get("/v1/capsules/usage").await;
    assert_eq!(usage.0, 200, "{usage:?}");
    c.stop().await;
}

#[tokio::test]
async fn control_restarted_mid_create_with_stub_agent() {
    let db = fresh_db().await;
    let mut cfg = config(&db);
    cfg.agent_timeout_secs = 1;
    let a = Control::start(cfg).await;
    let agent = StubAgent::start().await;
    let (admin, key) = admin_and_key(&a).await;
    add_host(&a, &admin.token, &agent).await;
    agent.state.lock().unwrap().create_delay = Duration::from_millis(800);

    // Creates in flight when the replica dies.
    let k = a.client().with(&key);
    let mut inflight = Vec::new();
    for _ in 0..3 {
        let k = k.clone();
        inflight.push(tokio::spawn(async move {
            k.post("/v1/capsules", json!({ "template": "tiny" })).await
        }));
    }
    eventually(10, || async {
        (count(&a.app, "SELECT count(*) FROM capsules").await == 3).then_some(())
    })
    .await;
    a.kill();
    for t in inflight {
        let _ = t.await;
    }
    agent.state.lock().unwrap().create_delay = Duration::ZERO;

    // Another replica (with its reconciler) finishes them.
    let mut cfg = config(&db);
    cfg.no_background = false;
    cfg.agent_timeout_secs = 1;
    let b = Control::start(cfg).await;
    let rows: Vec<(String, String)> = eventually(30, || async {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, status FROM capsules")
            .fetch_all(&b.app.db)
            .await
            .unwrap();
        rows.iter().all(|(_, s)| s == "running").then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 3, "no row lost");
    let on_agent = agent.state.lock().unwrap().capsules.clone();
    assert_eq!(on_agent.len(), 3, "each created exactly once on the host");
    for (id, _) in &rows {
        assert!(on_agent.contains_key(id));
    }
    assert_eq!(
        count(
            &b.app,
            "SELECT count(*) FROM capsules WHERE lease_until IS NOT NULL"
        )
        .await,
        0
    );
    let runs = count(
        &b.app,
        "SELECT count(*) FROM capsule_runs WHERE ended_at IS NULL",
    )
    .await;
    assert_eq!(runs, 3, "usage intervals consistent");
    b.stop().await;
}

#[tokio::test]
async fn agent_restart_is_reconciled_with_stub_agent() {
    let c = Control::on(&fresh_db().await).await;
    let agent = StubAgent::start().await;
    let (admin, key) = admin_and_key(&c).await;
    let (host, host_token) = add_host(&c, &admin.token, &agent).await;
    let k = c.client().with(&key);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, v) = k.post("/v1/capsules", json!({ "template": "tiny" })).await;
        ids.push(v["id"].as_str().unwrap().to_string());
    }

    // The agent dies; its heartbeats stop; the monitor notices.
    agent.kill();
    sqlx::query("UPDATE hosts SET last_heartbeat_at = now() - interval '1 hour' WHERE id = $1")
        .bind(&host)
        .execute(&c.app.db)
        .await
        .unwrap();
    monitor::sweep(&c.app).await.unwrap();
    for id in &ids {
        let (_, v) = k.get(&format!("/v1/capsules/{id}")).await;
        assert_eq!(v["status"], "missing");
    }
    // Meanwhile: one capsule is destroyed here (the host cannot be told),
    // and on the host, its reaper pauses another.
    let destroyed = &ids[0];
    let r = k.delete(&format!("/v1/capsules/{destroyed}")).await;
    assert_eq!(r.0, 202, "accepted, the host is away: {r:?}");
    {
        let mut s = agent.state.lock().unwrap();
        let c1 = s.capsules.get_mut(&ids[1]).unwrap();
        c1.state = warren_proto::agent::v1::CapsuleState::Paused as i32;
        s.auto_paused.push(ids[1].clone());
    }

    // The agent comes back (same address, same capsules) and heartbeats.
    let back = StubAgent::start_on(agent.addr, agent.state.clone()).await;
    let r = c
        .client()
        .req(
            reqwest::Method::POST,
            &format!("/v1/hosts/{host}/heartbeat"),
        )
        .header("X-Host-Token", &host_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    reconciler::sync_hosts(&c.app).await.unwrap();
    reconciler::finish_expired(&c.app).await.unwrap();
    // The destroy still pending is finished once its lease runs out.
    sqlx::query("UPDATE capsules SET lease_until = now() WHERE status = 'stopping'")
        .execute(&c.app.db)
        .await
        .unwrap();
    reconciler::finish_expired(&c.app).await.unwrap();

    let status = |id: String| {
        let k = k.clone();
        async move {
            k.get(&format!("/v1/capsules/{id}")).await.1["status"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(status(ids[1].clone()).await, "paused");
    assert_eq!(status(ids[2].clone()).await, "running");
    assert_eq!(status(destroyed.clone()).await, "stopped");
    assert!(
        !back.state.lock().unwrap().capsules.contains_key(destroyed),
        "destroyed on the host too"
    );
    c.stop().await;
}
