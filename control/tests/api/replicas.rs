//! Two control replicas on one database: sessions, keys, placement limits
//! and events work across them.

use futures::StreamExt;
use serde_json::json;

use crate::common::*;
use crate::stub_agent::{StubAgent, add_host};

#[tokio::test]
async fn two_replicas_share_everything_with_stub_agent() {
    let db = fresh_db().await;
    let a = Control::on(&db).await;
    let b = Control::on(&db).await;
    let (ha, hb) = (a.client(), b.client());

    // Sessions and keys made on one work on the other.
    let u = signup(&ha, "both@example.com").await;
    make_admin(&a.app, &u).await;
    assert_eq!(hb.with(&u.token).get("/v1/me").await.0, 200);
    let (st, _) = hb
        .post(
            "/v1/auth/login",
            json!({ "email": "both@example.com", "password": "hunter22hunter" }),
        )
        .await;
    assert_eq!(st, 200);
    let key = api_key(&hb, &u).await;
    assert_eq!(ha.with(&key).get("/v1/capsules").await.0, 200);

    // Events written through A reach a subscriber on B (LISTEN/NOTIFY).
    let sse = hb
        .with(&u.token)
        .req(reqwest::Method::GET, "/v1/events/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert!(
        sse.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = sse.bytes_stream();

    let agent = StubAgent::start().await;
    add_host(&a, &u.token, &agent).await;

    // Creates through both replicas at once never overfill the host
    // (2 GiB: four 512 MiB capsules).
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = if i % 2 == 0 {
            ha.with(&key)
        } else {
            hb.with(&key)
        };
        tasks.push(tokio::spawn(async move {
            c.post(
                "/v1/capsules",
                json!({ "template": "tiny", "memory_mb": 512 }),
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (st, v) = t.await.unwrap();
        match st.as_u16() {
            202 => ok += 1,
            503 => assert_eq!(v["error"]["code"], "host_unavailable"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(ok, 4, "admission holds across replicas");
    assert_eq!(count(&a.app, "SELECT count(*) FROM capsules").await, 4);
    assert_eq!(agent.state.lock().unwrap().capsules.len(), 4);

    // B's subscriber saw the host come up and the capsules being made.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(seen.contains("event: host.up") && seen.matches("event: capsule.create").count() >= 4) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events in time")
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("event: connected"), "{seen}");
    assert!(seen.contains("\"outcome\":\"success\""));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn openapi_document_and_docs_page() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let (st, doc) = http.get("/openapi.json").await;
    assert_eq!(st, 200);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/capsules",
        "/v1/capsules/{id}/exec",
        "/v1/capsules/{id}/pty",
        "/v1/capsules/{id}/files/stream/write",
        "/v1/snapshots",
        "/v1/events/stream",
        "/v1/hosts/register",
        "/v1/hosts/{id}/heartbeat",
        "/v1/audit-logs",
        "/v1/admin/templates",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["apiKeyAuth"].is_object());
    let docs = http
        .http
        .get(format!("{}/docs", http.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
    c.stop().await;
}
