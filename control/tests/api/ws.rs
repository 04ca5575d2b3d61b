//! WebSocket routes: in-band authentication for browsers (a first
//! `{"type":"auth","token"}` message) and typed error frames.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

async fn first_frame(url: &str, header_key: Option<&str>, send: Option<Value>) -> Value {
    let mut req = url.into_client_request().expect("request");
    if let Some(k) = header_key {
        req.headers_mut()
            .insert("X-API-Key", k.parse().expect("header"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    if let Some(m) = send {
        ws.send(Message::Text(m.to_string().into()))
            .await
            .expect("send");
    }
    loop {
        match ws.next().await.expect("a frame").expect("frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json"),
            Message::Close(_) => panic!("closed without a message"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn websocket_auth_and_errors() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let u = signup(&http, "ws@example.com").await;
    let key = api_key(&http, &u).await;
    let ws = c.base.replacen("http://", "ws://", 1);
    let paused = insert_capsule(&c.app, &u.team_id, None, "paused").await;

    // Browsers: the token in the first message (API key or session JWT).
    for token in [key.as_str(), u.token.as_str()] {
        let v = first_frame(
            &format!("{ws}/v1/capsules/sb-00000000deadbeef/pty"),
            None,
            Some(json!({ "type": "auth", "token": token })),
        )
        .await;
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str(), v["fatal"].as_bool()),
            (Some("error"), Some("not_found"), Some(true)),
            "{v}"
        );
    }
    let v = first_frame(
        &format!("{ws}/v1/capsules/{paused}/exec/stream"),
        None,
        Some(json!({ "type": "auth", "token": "wrn_forged" })),
    )
    .await;
    assert_eq!(v["code"], "unauthorized", "{v}");
    let v = first_frame(
        &format!("{ws}/v1/capsules/{paused}/pty"),
        None,
        Some(json!({ "type": "start" })),
    )
    .await;
    assert_eq!(v["code"], "unauthorized", "{v}");

    // SDKs: the key in the upgrade request; a paused capsule is refused.
    let v = first_frame(&format!("{ws}/v1/capsules/{paused}/pty"), Some(&key), None).await;
    assert_eq!(
        (v["code"].as_str(), v["fatal"].as_bool()),
        (Some("invalid_state"), Some(true)),
        "{v}"
    );
    let v = first_frame(
        &format!("{ws}/v1/capsules/{paused}/processes/12/stream"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(v["code"], "invalid_state", "{v}");
    c.stop().await;
}
