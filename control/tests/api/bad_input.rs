//! Bad input on every route family gets a typed error and changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_half_created() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let u = signup(&http, "bad@example.com").await;
    let admin = signup(&http, "admin@example.com").await;
    make_admin(&c.app, &admin).await;
    let k = http.with(&api_key(&http, &u).await);
    let s = http.with(&u.token);
    assert_eq!(
        http.with(&admin.token)
            .post(
                "/v1/admin/templates",
                json!({ "name": "tiny", "shell": "/bin/sh -c" })
            )
            .await
            .0,
        201
    );

    // Capsule create.
    assert_error(
        &k.post("/v1/capsules", json!({ "template": "no-such-template" }))
            .await,
        404,
        "not_found",
    );
    for body in [
        json!({ "vcpus": 0 }),
        json!({ "vcpus": 100000 }),
        json!({ "memory_mb": 1 }),
        json!({ "memory_mb": 10_000_000 }),
        json!({ "vcpus": -1 }),
        json!({ "vcpus": "two" }),
        json!({ "timeout_sec": "soon" }),
        json!({ "template": 7 }),
        json!({ "template": "" }),
        json!({ "flavour": "large" }),
        json!({ "metadata": { "agent_version": "x" } }),
        json!({ "metadata": { "bad key!": "x" } }),
        json!([1, 2, 3]),
    ] {
        assert_error(
            &k.post("/v1/capsules", body.clone()).await,
            400,
            "invalid_request",
        );
    }
    let raw = |m: Method, path: &str, body: Vec<u8>| {
        let k = k.clone();
        let path = path.to_string();
        async move {
            let r = k
                .req(m, &path)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let st = r.status();
            (st, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    assert_error(
        &raw(Method::POST, "/v1/capsules", b"{not json".to_vec()).await,
        400,
        "invalid_request",
    );
    let mut huge = b"{\"template\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 << 20));
    huge.extend(b"\"}");
    assert_error(
        &raw(Method::POST, "/v1/capsules", huge).await,
        413,
        "too_large",
    );
    // No host yet: a valid request is refused cleanly, with no row left.
    assert_error(
        &k.post("/v1/capsules", json!({ "template": "tiny" })).await,
        503,
        "host_unavailable",
    );
    assert_eq!(
        count(&c.app, "SELECT count(*) FROM capsules").await,
        0,
        "nothing half-created"
    );

    // Unknown capsule, every route.
    let id = "sb-00000000deadbeef";
    for (m, path) in [
        (Method::GET, format!("/v1/capsules/{id}")),
        (Method::DELETE, format!("/v1/capsules/{id}")),
        (Method::POST, format!("/v1/capsules/{id}/pause")),
        (Method::POST, format!("/v1/capsules/{id}/resume")),
        (Method::POST, format!("/v1/capsules/{id}/ping")),
        (Method::GET, format!("/v1/capsules/{id}/metrics")),
        (Method::GET, format!("/v1/capsules/{id}/processes")),
        (Method::DELETE, format!("/v1/capsules/{id}/processes/12")),
    ] {
        assert_error(&k.call(m, &path, None).await, 404, "not_found");
    }
    assert_error(
        &k.post(&format!("/v1/capsules/{id}/exec"), json!({ "cmd": "true" }))
            .await,
        404,
        "not_found",
    );
    for op in ["read", "list", "mkdir", "remove", "stream/read"] {
        assert_error(
            &k.post(
                &format!("/v1/capsules/{id}/files/{op}"),
                json!({ "path": "/tmp" }),
            )
            .await,
            404,
            "not_found",
        );
    }

    assert_error(
        &k.post(
            &format!("/v1/capsules/{id}/files/rename"),
            json!({ "from": "/tmp/a", "to": "/tmp/b" }),
        )
        .await,
        404,
        "not_found",
    );

    // Exec, processes, files: malformed requests.
    for body in [
        json!({}),
        json!({ "cmd": "" }),
        json!({ "cmd": 5 }),
        json!({ "cmd": "ls", "timeout_sec": 0 }),
        json!({ "cmd": "ls", "envs": { "A=B": "x" } }),
        json!({ "cmd": "ls", "tag": "bad tag" }),
        json!({ "cmd": "ls", "background": "yes" }),
    ] {
        assert_error(
            &k.post(&format!("/v1/capsules/{id}/exec"), body).await,
            400,
            "invalid_request",
        );
    }
    assert_error(
        &k.delete(&format!("/v1/capsules/{id}/processes/12?signal=SIGHUP"))
            .await,
        400,
        "invalid_request",
    );
    for body in [
        json!({ "path": "" }),
        json!({ "path": "a\u{0}b" }),
        json!({}),
        json!({ "path": ["x"] }),
    ] {
        assert_error(
            &k.post(&format!("/v1/capsules/{id}/files/list"), body).await,
            400,
            "invalid_request",
        );
    }
    assert_error(
        &k.post(
            &format!("/v1/capsules/{id}/files/list"),
            json!({ "path": "/", "depth": 99 }),
        )
        .await,
        400,
        "invalid_request",
    );
    let long = "x".repeat(5000);
    for body in [
        json!({ "from": "/a" }),
        json!({ "from": "", "to": "/b" }),
        json!({ "from": "/a", "to": "b\u{0}" }),
        json!({ "from": "/a", "to": long }),
        json!({ "from": "/a", "to": "/b", "mode": 1 }),
    ] {
        assert_error(
            &k.post(&format!("/v1/capsules/{id}/files/rename"), body)
                .await,
            400,
            "invalid_request",
        );
    }

    // Snapshots, stats, usage, audit.
    assert_error(
        &k.post(
            "/v1/snapshots",
            json!({ "sandbox_id": id, "name": "../etc" }),
        )
        .await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.post(
            "/v1/snapshots?overwrite=perhaps",
            json!({ "sandbox_id": id }),
        )
        .await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.post("/v1/snapshots", json!({ "name": "x" })).await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.get("/v1/snapshots?type=weird").await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.get("/v1/capsules/stats?range=7y").await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.get("/v1/capsules/usage?from=yesterday").await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.get("/v1/capsules/usage?from=2026-02-01&to=2026-01-01")
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.get("/v1/audit-logs?limit=0").await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.get("/v1/audit-logs?limit=many").await,
        400,
        "invalid_request",
    );

    // Accounts, teams, hosts.
    for body in [
        json!({ "email": "nope", "password": "hunter22hunter", "name": "X" }),
        json!({ "email": "x@example.com", "password": "short", "name": "X" }),
        json!({ "email": "x@example.com", "password": "hunter22hunter", "name": "" }),
        json!({ "email": "x@example.com", "password": "hunter22hunter" }),
        json!({ "email": "x@example.com", "password": 12345678, "name": "X" }),
    ] {
        assert_error(
            &http.post("/v1/auth/signup", body).await,
            400,
            "invalid_request",
        );
    }
    assert_eq!(count(&c.app, "SELECT count(*) FROM users").await, 2);
    assert_error(
        &s.post("/v1/teams", json!({ "name": "" })).await,
        400,
        "invalid_request",
    );
    assert_error(
        &s.post("/v1/teams", json!({ "name": "<script>" })).await,
        400,
        "invalid_request",
    );
    assert_error(
        &s.post("/v1/hosts", json!({ "type": "mainframe" })).await,
        400,
        "invalid_request",
    );
    assert_error(
        &s.post("/v1/hosts", json!({ "type": "byoc", "provider": "" }))
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &http
            .post(
                "/v1/hosts/register",
                json!({ "token": "wrt_nope", "address": "127.0.0.1:1" }),
            )
            .await,
        401,
        "unauthorized",
    );
    assert_error(
        &http
            .post("/v1/hosts/register", json!({ "token": "wrt_nope" }))
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &http.post("/v1/hosts/host-x/heartbeat", json!({})).await,
        401,
        "unauthorized",
    );
    assert_eq!(count(&c.app, "SELECT count(*) FROM hosts").await, 0);

    // Unknown routes answer in the same shape.
    assert_error(&k.get("/v1/nothing-here").await, 404, "not_found");
    c.stop().await;
}
