//! Administrator-only routes refuse everyone else.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn admin_routes_are_checked() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let user = signup(&http, "user@example.com").await;
    let admin = signup(&http, "root@example.com").await;
    make_admin(&c.app, &admin).await;
    let u = http.with(&user.token);
    let k = http.with(&api_key(&http, &admin).await);
    let a = http.with(&admin.token);

    for path in [
        "/v1/admin/teams",
        "/v1/admin/users",
        "/v1/admin/capsules",
        "/v1/admin/templates",
    ] {
        assert_error(&u.get(path).await, 403, "forbidden");
        // An administrator's API key is not an administrator.
        assert_error(&k.get(path).await, 403, "forbidden");
        assert_eq!(a.get(path).await.0, 200, "{path}");
    }
    assert_error(
        &u.post("/v1/admin/templates", json!({ "name": "x" })).await,
        403,
        "forbidden",
    );
    assert_error(
        &u.post("/v1/hosts", json!({ "type": "regular" })).await,
        403,
        "forbidden",
    );
    assert_error(
        &u.call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/users/{}", user.user_id),
            Some(json!({ "is_admin": true })),
        )
        .await,
        403,
        "forbidden",
    );

    // The administrator sees every team and user, registers templates.
    let (_, teams) = a.get("/v1/admin/teams").await;
    assert_eq!(teams.as_array().unwrap().len(), 2);
    let (st, t) = a
        .post(
            "/v1/admin/templates",
            json!({ "name": "busy", "shell": "/bin/sh -c", "vcpus": 1 }),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(
        (t["type"].as_str(), t["platform"].as_bool()),
        (Some("base"), Some(true))
    );
    let (_, snaps) = u.get("/v1/snapshots").await;
    assert!(
        snaps.to_string().contains("busy"),
        "platform templates are visible to all"
    );
    assert_error(&u.delete("/v1/snapshots/busy").await, 403, "forbidden");
    assert_eq!(a.delete("/v1/admin/templates/busy").await.0, 204);

    // Disabling a user ends their sessions.
    let r = a
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/users/{}", user.user_id),
            Some(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(r.0, 200, "{r:?}");
    assert_error(&u.get("/v1/me").await, 401, "unauthorized");
    c.stop().await;
}
