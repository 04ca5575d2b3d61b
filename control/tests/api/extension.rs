//! The example extension (`control/examples/extension.rs`) in a control
//! replica: its route answers behind the API's authentication, and its
//! hook sees a capsule's whole life, in order, for its team only.

use serde_json::{Value, json};

use crate::common::*;
use crate::stub_agent::{StubAgent, add_host};

#[path = "../../examples/extension.rs"]
#[allow(dead_code)]
mod example;

/// The events the example recorded for `capsule`, as `event:status`.
async fn seen(k: &Client, capsule: &str) -> Vec<String> {
    let (st, v) = k.get("/v1/example/events").await;
    assert_eq!(st, 200, "{v}");
    v.as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["capsule_id"] == capsule)
        .map(|e| {
            format!(
                "{}:{}",
                e["event"].as_str().unwrap(),
                e["status"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn example_extension_routes_and_hooks_with_stub_agent() {
    let c = Control::serve(example::install(warren_control::Server::builder(config(
        &fresh_db().await,
    ))))
    .await;
    let agent = StubAgent::start().await;
    let http = c.client();
    let admin = signup(&http, "ext@example.com").await;
    make_admin(&c.app, &admin).await;
    add_host(&c, &admin.token, &agent).await;
    let k = http.with(&api_key(&http, &admin).await);

    // The route shares the API's authentication and its documentation.
    assert_error(&http.get("/v1/example/events").await, 401, "unauthorized");
    let (_, doc) = http.get("/openapi.json").await;
    assert!(
        doc["paths"]["/v1/example/events"]["get"].is_object(),
        "{doc}"
    );
    let (st, v) = k.get("/v1/example/events").await;
    assert_eq!((st.as_u16(), v), (200, json!([])));

    let (st, cap) = k.post("/v1/capsules", json!({ "template": "tiny" })).await;
    assert_eq!(st, 202, "{cap}");
    let id = cap["id"].as_str().unwrap().to_string();
    let started = ["created:starting", "state_changed:running"];
    eventually(10, || async {
        (seen(&k, &id).await == started).then_some(())
    })
    .await;
    let (_, v) = k.get("/v1/example/events").await;
    assert_eq!(v[1]["from"], "starting", "{v}");

    let (st, _) = k.delete(&format!("/v1/capsules/{id}")).await;
    assert_eq!(st, 204);
    let ended = [
        "created:starting",
        "state_changed:running",
        "state_changed:stopping",
        "state_changed:stopped",
        "destroyed:stopped",
    ];
    eventually(10, || async {
        (seen(&k, &id).await == ended).then_some(())
    })
    .await;

    // Another team sees none of it.
    let other = signup(&http, "other@example.com").await;
    let (_, v): (_, Value) = http.with(&other.token).get("/v1/example/events").await;
    assert_eq!(v, json!([]));
    c.stop().await;
}
