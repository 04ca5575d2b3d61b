//! The in-capsule routes (exec, processes, streams, PTY, files) end to end
//! against a real envd, run locally ([`crate::local_envd`]).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;
use crate::local_envd::*;

async fn ws_connect(
    url: &str,
    key: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut()
        .insert("X-API-Key", key.parse().expect("header"));
    tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade")
        .0
}

fn text(m: Message) -> Option<Value> {
    match m {
        Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
        _ => None,
    }
}

#[tokio::test]
async fn in_capsule_routes_with_stub_agent_and_local_envd() {
    let (c, _agent, _envd, key, id) = capsule_on_local_envd(1 << 20).await;
    let k = c.client().with(&key);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8").to_string();
    let p = |s: &str| format!("/v1/capsules/{id}{s}");

    // Foreground exec: shell string with envs and cwd; argv; binary output; timeout.
    let (st, v) = k
        .post(&p("/exec"), json!({ "cmd": "echo $A; pwd; echo err >&2; exit 3", "envs": { "A": "x y" }, "cwd": d }))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stdout"], format!("x y\n{d}\n"));
    assert_eq!(
        (
            v["stderr"].as_str(),
            v["exit_code"].as_i64(),
            v["encoding"].as_str()
        ),
        (Some("err\n"), Some(3), Some("utf-8"))
    );
    let (_, v) = k
        .post(
            &p("/exec"),
            json!({ "cmd": "printf", "args": ["%s-%s", "a", "b"] }),
        )
        .await;
    assert_eq!(v["stdout"], "a-b");
    let (_, v) = k
        .post(&p("/exec"), json!({ "cmd": "printf '\\377\\376'" }))
        .await;
    assert_eq!(
        (v["encoding"].as_str(), v["stdout"].as_str()),
        (Some("base64"), Some("//4=")),
        "{v}"
    );
    assert_error(
        &k.post(&p("/exec"), json!({ "cmd": "sleep 30", "timeout_sec": 1 }))
            .await,
        504,
        "timeout",
    );

    // Background processes: start, list, kill by tag.
    let tag = format!("sleeper-{:x}", rand::random::<u32>());
    let (st, bg) = k
        .post(
            &p("/exec"),
            json!({ "cmd": "sleep 60", "background": true, "tag": tag }),
        )
        .await;
    assert_eq!(st, 202, "{bg}");
    assert_eq!(bg["tag"], tag.as_str());
    assert!(bg["pid"].as_u64().expect("pid") > 0);
    let (_, list) = k.get(&p("/processes")).await;
    assert!(
        list["processes"]
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e["tag"] == tag.as_str()),
        "{list}"
    );
    assert_eq!(k.delete(&p(&format!("/processes/{tag}"))).await.0, 204);
    eventually(10, || async {
        let (_, list) = k.get(&p("/processes")).await;
        (!list.to_string().contains(&tag)).then_some(())
    })
    .await;

    // Files: multipart write, read, list with depth, mkdir, remove.
    let form = reqwest::multipart::Form::new()
        .text("path", format!("{d}/a/b.txt"))
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"hello files".to_vec()).file_name("b.txt"),
        );
    let r = k
        .req(reqwest::Method::POST, &p("/files/write"))
        .multipart(form)
        .send()
        .await
        .expect("write");
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let r = k
        .req(reqwest::Method::POST, &p("/files/read"))
        .json(&json!({ "path": format!("{d}/a/b.txt") }))
        .send()
        .await
        .expect("read");
    assert_eq!(r.bytes().await.expect("body").as_ref(), b"hello files");
    let (_, l) = k
        .post(&p("/files/list"), json!({ "path": d, "depth": 2 }))
        .await;
    let names: Vec<&str> = l["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or(""))
        .collect();
    assert!(names.contains(&"a") && names.contains(&"b.txt"), "{l}");
    let (st, m) = k
        .post(&p("/files/mkdir"), json!({ "path": format!("{d}/new/x") }))
        .await;
    assert_eq!(
        (st.as_u16(), m["entry"]["type"].as_str()),
        (200, Some("directory")),
        "{m}"
    );
    assert_error(
        &k.post(&p("/files/mkdir"), json!({ "path": format!("{d}/new/x") }))
            .await,
        409,
        "already_exists",
    );
    // Rename: the file moves; onto an existing path it is refused.
    let (st, m) = k
        .post(
            &p("/files/rename"),
            json!({ "from": format!("{d}/a/b.txt"), "to": format!("{d}/a/c.txt") }),
        )
        .await;
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["entry"]["name"], "c.txt", "{m}");
    let r = k
        .req(reqwest::Method::POST, &p("/files/read"))
        .json(&json!({ "path": format!("{d}/a/c.txt") }))
        .send()
        .await
        .expect("read");
    assert_eq!(r.bytes().await.expect("body").as_ref(), b"hello files");
    assert_error(
        &k.post(
            &p("/files/rename"),
            json!({ "from": format!("{d}/a/nope"), "to": format!("{d}/a/d.txt") }),
        )
        .await,
        404,
        "not_found",
    );
    assert_eq!(
        k.post(&p("/files/remove"), json!({ "path": format!("{d}/a") }))
            .await
            .0,
        204
    );
    assert_error(
        &k.post(&p("/files/read"), json!({ "path": format!("{d}/a/c.txt") }))
            .await,
        404,
        "not_found",
    );

    // Streamed upload and download, checked by SHA-256; the limited write refuses it.
    let big: Vec<u8> = (0..(3u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let digest = hex::encode(sha2::Sha256::digest(&big));
    let upload = |path: &str, route: &str| {
        let form = reqwest::multipart::Form::new()
            .text("path", format!("{d}/{path}"))
            .part(
                "file",
                reqwest::multipart::Part::stream(big.clone()).file_name("big"),
            );
        k.req(reqwest::Method::POST, &p(route))
            .multipart(form)
            .send()
    };
    let r = upload("too-big.bin", "/files/write").await.expect("send");
    assert_eq!(r.status(), 413);
    let r = upload("big.bin", "/files/stream/write")
        .await
        .expect("send");
    assert_eq!(r.status(), 204);
    let r = k
        .req(reqwest::Method::POST, &p("/files/stream/read"))
        .json(&json!({ "path": format!("{d}/big.bin") }))
        .send()
        .await
        .expect("read");
    let mut hasher = sha2::Sha256::new();
    let mut body = r.bytes_stream();
    let mut total = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        total += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!((total, hex::encode(hasher.finalize())), (big.len(), digest));
    let (_, v) = k
        .post(
            &p("/exec"),
            json!({ "cmd": format!("sha256sum {d}/big.bin") }),
        )
        .await;
    assert!(
        v["stdout"]
            .as_str()
            .unwrap_or("")
            .starts_with(&hex::encode(sha2::Sha256::digest(&big)))
    );

    let ws = c.base.replacen("http://", "ws://", 1);
    // exec/stream.
    let mut s = ws_connect(&format!("{ws}{}", p("/exec/stream")), &key).await;
    s.send(Message::Text(
        json!({ "type": "start", "cmd": "echo hi; echo oh >&2; exit 2" })
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let mut frames = Vec::new();
    while let Some(Ok(m)) = s.next().await {
        if let Some(v) = text(m) {
            let done = v["type"] == "exit";
            frames.push(v);
            if done {
                break;
            }
        }
    }
    assert_eq!(frames[0]["type"], "start", "{frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "stdout" && f["data"] == "hi\n"),
        "{frames:?}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "stderr" && f["data"] == "oh\n"),
        "{frames:?}"
    );
    assert_eq!(frames.last().expect("exit")["exit_code"], 2);

    // Re-attach to a background process by tag.
    let tag2 = format!("late-{:x}", rand::random::<u32>());
    k.post(
        &p("/exec"),
        json!({ "cmd": "sleep 1; echo late", "background": true, "tag": tag2 }),
    )
    .await;
    let mut s = ws_connect(
        &format!("{ws}{}", p(&format!("/processes/{tag2}/stream"))),
        &key,
    )
    .await;
    let mut out = String::new();
    let mut exit = None;
    while let Some(Ok(m)) = s.next().await {
        if let Some(v) = text(m) {
            if v["type"] == "stdout" {
                out.push_str(v["data"].as_str().unwrap_or(""));
            }
            if v["type"] == "exit" {
                exit = v["exit_code"].as_i64();
                break;
            }
        }
    }
    assert_eq!((out.as_str(), exit), ("late\n", Some(0)));

    // PTY: binary frames (the SDK's way), resize, kill.
    let mut s = ws_connect(&format!("{ws}{}", p("/pty")), &key).await;
    s.send(Message::Text(
        json!({ "type": "start", "cmd": "/bin/sh", "cols": 100, "rows": 30 })
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let started = loop {
        if let Some(v) = text(s.next().await.expect("frame").expect("frame")) {
            break v;
        }
    };
    assert_eq!(started["type"], "started", "{started}");
    assert!(started["tag"].as_str().unwrap_or("").starts_with("pty-"));
    s.send(Message::Binary(b"echo pty-$((6*7))\n".to_vec().into()))
        .await
        .expect("send");
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("pty-42") {
        match tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("output in time")
        {
            Some(Ok(Message::Binary(b))) => seen.extend_from_slice(&b),
            Some(Ok(_)) => {}
            other => panic!("pty ended: {other:?}"),
        }
    }
    s.send(Message::Text(
        json!({ "type": "resize", "cols": 120, "rows": 40 })
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    s.send(Message::Text(json!({ "type": "kill" }).to_string().into()))
        .await
        .expect("send");
    let exit = loop {
        match s.next().await {
            Some(Ok(m)) => {
                if let Some(v) = text(m) {
                    if v["type"] == "exit" {
                        break v;
                    }
                    assert_ne!(v["type"], "error", "{v}");
                }
            }
            other => panic!("no exit frame: {other:?}"),
        }
    };
    assert!(exit["exit_code"].is_i64(), "{exit}");

    // PTY for browsers: JSON base64 output on request.
    let mut s = ws_connect(&format!("{ws}{}?encoding=base64", p("/pty")), &key).await;
    s.send(Message::Text(
        json!({ "type": "start", "cmd": "/bin/sh" })
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    s.send(Message::Text(
        json!({ "type": "input", "data": b64.encode("echo b64-$((2*21))\n") })
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("b64-42") {
        let m = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("frame");
        assert!(
            !matches!(m, Message::Binary(_)),
            "base64 mode sends text frames"
        );
        if let Some(v) = text(m) {
            if v["type"] == "output" {
                seen.extend(
                    b64.decode(v["data"].as_str().unwrap_or(""))
                        .expect("base64"),
                );
            }
        }
    }
    s.send(Message::Text(json!({ "type": "kill" }).to_string().into()))
        .await
        .expect("send");
    c.stop().await;
}
