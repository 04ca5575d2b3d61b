//! Host registration (one-time tokens), heartbeats, the monitor, tags,
//! deletion.

use serde_json::json;

use crate::common::*;
use crate::real_agent::RealAgent;
use crate::require_real_agent;

#[tokio::test]
async fn registration_heartbeat_and_monitor() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let admin = signup(&http, "ops@example.com").await;
    make_admin(&c.app, &admin).await;
    let a = http.with(&admin.token);

    let (st, created) = a
        .post(
            "/v1/hosts",
            json!({ "type": "regular", "provider": "bare-metal" }),
        )
        .await;
    assert_eq!(st, 201, "{created}");
    let id = created["host"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["host"]["status"], "pending");
    let token = created["registration_token"].as_str().unwrap().to_string();

    let reg = json!({ "token": token, "address": "127.0.0.1:7001", "agent_token": "agent-secret-0123456789",
                      "cpu_cores": 4, "memory_mb": 8192, "arch": "x86_64" });
    assert_error(
        &http
            .post(
                "/v1/hosts/register",
                json!({ "token": "wrt_wrong", "address": "x:1" }),
            )
            .await,
        401,
        "unauthorized",
    );
    let (st, r) = http.post("/v1/hosts/register", reg.clone()).await;
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["host"]["status"], "online");
    assert_eq!(r["agent_token"], "agent-secret-0123456789");
    let host_token = r["token"].as_str().unwrap().to_string();
    // One time only.
    assert_error(
        &http.post("/v1/hosts/register", reg).await,
        401,
        "unauthorized",
    );
    // Tokens are stored as digests.
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, '') FROM hosts t")
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    assert!(!dump.contains(&host_token) && !dump.contains(&token));

    // Heartbeats.
    let beat = |host: &str, tok: &str| {
        let http = http.clone();
        let (host, tok) = (host.to_string(), tok.to_string());
        async move {
            let r = http
                .req(
                    reqwest::Method::POST,
                    &format!("/v1/hosts/{host}/heartbeat"),
                )
                .header("X-Host-Token", tok)
                .json(&json!({ "capsule_count": 0 }))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(beat(&id, &host_token).await, 204);
    assert_eq!(beat(&id, "wht_forged").await, 401);
    assert_eq!(beat("host-someoneelse", &host_token).await, 403);
    // Heartbeats leave no audit rows; registration does (under no team for
    // a regular host, so none here).
    assert_eq!(
        count(
            &c.app,
            "SELECT count(*) FROM audit_logs WHERE action = 'heartbeat'"
        )
        .await,
        0
    );

    // A silent host becomes unreachable and its capsules missing.
    let cap = insert_capsule(&c.app, &admin.team_id, Some(&id), "running").await;
    let paused = insert_capsule(&c.app, &admin.team_id, Some(&id), "paused").await;
    sqlx::query("UPDATE hosts SET last_heartbeat_at = now() - interval '1 hour' WHERE id = $1")
        .bind(&id)
        .execute(&c.app.db)
        .await
        .unwrap();
    let down = warren_control::monitor::sweep(&c.app).await.unwrap();
    assert_eq!(down, vec![id.clone()]);
    assert!(
        warren_control::monitor::sweep(&c.app)
            .await
            .unwrap()
            .is_empty(),
        "idempotent"
    );
    let (_, h) = a.get(&format!("/v1/hosts/{id}")).await;
    assert_eq!(h["status"], "unreachable");
    for (cid, before) in [(&cap, "running"), (&paused, "paused")] {
        let (_, v) = a.get(&format!("/v1/capsules/{cid}")).await;
        assert_eq!(v["status"], "missing");
        let kept: Option<String> =
            sqlx::query_scalar("SELECT status_before_missing FROM capsules WHERE id = $1")
                .bind(cid)
                .fetch_one(&c.app.db)
                .await
                .unwrap();
        assert_eq!(kept.as_deref(), Some(before));
    }
    // Its heartbeat brings it back and schedules a sync with its agent.
    assert_eq!(beat(&id, &host_token).await, 204);
    let (_, h) = a.get(&format!("/v1/hosts/{id}")).await;
    assert_eq!(h["status"], "online");

    // Tags.
    assert_eq!(
        a.post(&format!("/v1/hosts/{id}/tags"), json!({ "tag": "gpu" }))
            .await
            .0,
        204
    );
    assert_error(
        &a.post(
            &format!("/v1/hosts/{id}/tags"),
            json!({ "tag": "has space" }),
        )
        .await,
        400,
        "invalid_request",
    );
    let (_, tags) = a.get(&format!("/v1/hosts/{id}/tags")).await;
    assert_eq!(tags, json!(["gpu"]));
    assert_eq!(a.delete(&format!("/v1/hosts/{id}/tags/gpu")).await.0, 204);
    assert_error(
        &a.delete(&format!("/v1/hosts/{id}/tags/gpu")).await,
        404,
        "not_found",
    );

    // Deleting a host with capsules needs force.
    let r = a.delete(&format!("/v1/hosts/{id}")).await;
    assert_error(&r, 409, "host_has_capsules");
    let ids = r.1["capsule_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    c.stop().await;
}

#[tokio::test]
async fn byoc_hosts_belong_to_their_team() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let owner = signup(&http, "owner@example.com").await;
    let o = http.with(&owner.token);
    let (st, v) = o.post("/v1/hosts", json!({ "type": "byoc" })).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["host"]["team_id"], owner.team_id.as_str());
    let id = v["host"]["id"].as_str().unwrap().to_string();
    // A fresh registration token for a pending host.
    let (st, v2) = o.post(&format!("/v1/hosts/{id}/token"), json!({})).await;
    assert_eq!(st, 201);
    assert_ne!(v2["registration_token"], v["registration_token"]);
    // The old one no longer works.
    assert_error(
        &http
            .post(
                "/v1/hosts/register",
                json!({ "token": v["registration_token"], "address": "127.0.0.1:1" }),
            )
            .await,
        401,
        "unauthorized",
    );
    // Another team cannot add BYOC hosts to this one.
    let other = signup(&http, "other@example.com").await;
    assert_error(
        &http
            .with(&other.token)
            .post(
                "/v1/hosts",
                json!({ "type": "byoc", "team_id": owner.team_id }),
            )
            .await,
        403,
        "forbidden",
    );
    // Deleting an empty host works and is audited.
    assert_eq!(o.delete(&format!("/v1/hosts/{id}")).await.0, 204);
    assert_error(&o.get(&format!("/v1/hosts/{id}")).await, 404, "not_found");
    let (_, audit) = o.get("/v1/audit-logs?resource_type=host").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["delete", "token", "create"], "{audit}");
    c.stop().await;
}

/// `warren-agent --control-url … --registration-token …`: the agent
/// registers itself once, heartbeats on its own, and after a restart comes
/// back as the same host from its saved credentials.
#[tokio::test]
async fn an_agent_registers_itself_and_heartbeats_with_real_agent() {
    require_real_agent!();
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let admin = signup(&http, "ops@example.com").await;
    make_admin(&c.app, &admin).await;
    let a = http.with(&admin.token);
    let (st, created) = a.post("/v1/hosts", json!({ "type": "regular" })).await;
    assert_eq!(st, 201, "{created}");
    let id = created["host"]["id"].as_str().unwrap().to_string();
    let token = created["registration_token"].as_str().unwrap().to_string();

    let mut agent = RealAgent::start_with(&[
        "--control-url",
        &c.base,
        "--registration-token",
        &token,
        "--heartbeat-interval",
        "0.2",
    ]);
    let host = |a: Client, id: String| async move {
        let (st, h) = a.get(&format!("/v1/hosts/{id}")).await;
        assert_eq!(st, 200, "{h}");
        h
    };
    let first = eventually(30, || async {
        let h = host(a.clone(), id.clone()).await;
        (h["status"] == "online" && h["last_heartbeat_at"].is_string()).then_some(h)
    })
    .await;
    // Heartbeats keep coming.
    let beat = first["last_heartbeat_at"].clone();
    eventually(30, || async {
        let h = host(a.clone(), id.clone()).await;
        (h["last_heartbeat_at"] != beat).then_some(())
    })
    .await;
    // The control plane reaches the agent at the address it registered.
    sync(&c, &id).await;
    let h = host(a.clone(), id.clone()).await;
    assert!(h["memory_mb"].as_i64().unwrap_or(0) > 0, "{h}");
    let saved = std::fs::read_to_string(agent.dir.path().join("agent/host.json")).unwrap();
    assert!(saved.contains(&id), "{saved}");

    // Restarted, the agent is the same host (its registration token is
    // spent: a second registration would be refused).
    agent.restart();
    let before: String =
        sqlx::query_scalar("SELECT last_heartbeat_at::text FROM hosts WHERE id = $1")
            .bind(&id)
            .fetch_one(&c.app.db)
            .await
            .unwrap();
    eventually(30, || async {
        let now: String =
            sqlx::query_scalar("SELECT last_heartbeat_at::text FROM hosts WHERE id = $1")
                .bind(&id)
                .fetch_one(&c.app.db)
                .await
                .unwrap();
        (now != before).then_some(())
    })
    .await;
    assert!(
        agent.log().contains("using the saved host credentials"),
        "{}",
        agent.log()
    );
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM hosts WHERE deleted_at IS NULL")
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    assert_eq!(hosts, 1);
    drop(agent);
    c.stop().await;
}
