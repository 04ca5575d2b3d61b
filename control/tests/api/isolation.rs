//! Team isolation: a key never sees or touches another team's capsules,
//! hosts, templates or audit rows.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_team_sees_only_its_own_resources() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let a = signup(&http, "a@example.com").await;
    let b = signup(&http, "b@example.com").await;
    let ka = http.with(&api_key(&http, &a).await);
    let kb = http.with(&api_key(&http, &b).await);

    // Team A: a capsule, a BYOC host, a snapshot template, audit rows.
    let (st, host) = http
        .with(&a.token)
        .post("/v1/hosts", json!({ "type": "byoc" }))
        .await;
    assert_eq!(st, 201, "{host}");
    let host_id = host["host"]["id"].as_str().unwrap().to_string();
    let cap = insert_capsule(&c.app, &a.team_id, Some(&host_id), "running").await;
    sqlx::query(
        "INSERT INTO templates (id, team_id, name, agent_name, type) VALUES ('tpl-a', $1, 'secret-snap', 'snap-a', 'snapshot')",
    )
    .bind(&a.team_id)
    .execute(&c.app.db)
    .await
    .unwrap();

    // A sees them.
    assert_eq!(ka.get(&format!("/v1/capsules/{cap}")).await.0, 200);
    let (_, list) = ka.get("/v1/capsules").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(ka.get(&format!("/v1/hosts/{host_id}")).await.0, 200);
    let (_, snaps) = ka.get("/v1/snapshots?type=snapshot").await;
    assert_eq!(snaps.as_array().unwrap().len(), 1);

    // B does not: not listed, not found, not touchable.
    let (_, list) = kb.get("/v1/capsules").await;
    assert_eq!(list, json!([]));
    for path in [
        format!("/v1/capsules/{cap}"),
        format!("/v1/capsules/{cap}/metrics"),
        format!("/v1/capsules/{cap}/processes"),
        format!("/v1/hosts/{host_id}"),
        format!("/v1/hosts/{host_id}/tags"),
    ] {
        assert_error(&kb.get(&path).await, 404, "not_found");
    }
    for path in ["pause", "resume", "ping"] {
        assert_error(
            &kb.post(&format!("/v1/capsules/{cap}/{path}"), json!({}))
                .await,
            404,
            "not_found",
        );
    }
    assert_error(
        &kb.post(&format!("/v1/capsules/{cap}/exec"), json!({ "cmd": "id" }))
            .await,
        404,
        "not_found",
    );
    assert_error(
        &kb.post(
            &format!("/v1/capsules/{cap}/files/list"),
            json!({ "path": "/" }),
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &kb.delete(&format!("/v1/capsules/{cap}")).await,
        404,
        "not_found",
    );
    assert_error(
        &kb.post(
            "/v1/snapshots",
            json!({ "sandbox_id": cap, "name": "steal" }),
        )
        .await,
        404,
        "not_found",
    );
    let (_, hosts) = kb.get("/v1/hosts").await;
    assert_eq!(hosts, json!([]));
    let (_, snaps) = kb.get("/v1/snapshots").await;
    assert!(!snaps.to_string().contains("secret-snap"), "{snaps}");
    assert_error(
        &kb.delete("/v1/snapshots/secret-snap").await,
        404,
        "not_found",
    );
    assert_error(
        &kb.post("/v1/capsules", json!({ "template": "secret-snap" }))
            .await,
        404,
        "not_found",
    );
    assert_error(
        &http
            .with(&b.token)
            .delete(&format!("/v1/hosts/{host_id}"))
            .await,
        404,
        "not_found",
    );
    assert_error(
        &http
            .with(&b.token)
            .get(&format!("/v1/teams/{}", a.team_id))
            .await,
        404,
        "not_found",
    );

    // Audit rows: A's calls are A's; B sees only its own.
    let (_, audit_b) = kb.get("/v1/audit-logs").await;
    let (_, audit_a) = ka.get("/v1/audit-logs").await;
    let ids = |v: &serde_json::Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(!ids(&audit_a).is_empty());
    assert!(ids(&audit_b).iter().all(|id| !ids(&audit_a).contains(id)));
    let b_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE team_id = $1")
        .bind(&b.team_id)
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    assert_eq!(b_rows as usize, ids(&audit_b).len());

    // And nothing of A's changed.
    let (_, v) = ka.get(&format!("/v1/capsules/{cap}")).await;
    assert_eq!(v["status"], "running");
    c.stop().await;
}
