//! The in-capsule routes (exec, processes, streams, PTY, files) end to end
//! against a real envd: the stand-in agent answers the lifecycle calls and
//! reports a local envd (run by the test, on loopback, as root) as the
//! capsule's data plane, so the REST API talks to envd exactly as it does
//! through the agent's relay (which envd ignores the relay headers of).

use std::process::{Child, Command};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;
use crate::lifecycle::add_host;
use crate::stub_agent::StubAgent;

struct Envd(Child);

impl Drop for Envd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn envd_binary() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("ENVD_BIN") {
        return Some(p.into());
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    Some(target.join("debug/envd")).filter(|p| p.exists())
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

/// Control + stand-in agent + local envd, one running capsule of an
/// administrator's team: (control, agent, envd, API key, capsule id).
async fn capsule_on_local_envd(
    bin: &std::path::Path,
    max_upload: u64,
) -> (Control, StubAgent, Envd, String, String) {
    let (envd, envd_addr) = start_envd(bin).await;
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

#[tokio::test]
async fn in_capsule_routes_with_stub_agent_and_local_envd() {
    let Some(bin) = envd_binary() else {
        eprintln!(
            "SKIP in_capsule_routes_with_stub_agent_and_local_envd: no envd binary (cargo build -p envd, or set ENVD_BIN)"
        );
        return;
    };
    let (c, _agent, _envd, key, id) = capsule_on_local_envd(&bin, 1 << 20).await;
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

/// Runs the `warren` CLI against the control plane.
async fn warren(c: &Control, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .env("WARREN_URL", &c.base)
        .env("WARREN_API_KEY", key)
        .env("WARREN_DIR", "/nonexistent")
        .output()
        .await
        .expect("run warren");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn warren_cli_with_stub_agent_and_local_envd() {
    let Some(bin) = envd_binary() else {
        eprintln!("SKIP warren_cli_with_stub_agent_and_local_envd: no envd binary");
        return;
    };
    let (c, _agent, _envd, key, id) = capsule_on_local_envd(&bin, 100 << 20).await;
    let (code, out, err) = warren(&c, &key, &["capsule", "ls"]).await;
    assert!(
        code == 0 && out.contains(&id) && out.contains("running"),
        "{out}{err}"
    );
    let (code, out, _) = warren(&c, &key, &["template", "ls"]).await;
    assert!(code == 0 && out.contains("tiny"), "{out}");
    let (code, out, err) = warren(
        &c,
        &key,
        &[
            "capsule",
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    )
    .await;
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));

    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.bin");
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).expect("write");
    let remote = format!("{id}:{}/in-capsule.bin", dir.path().display());
    let back = dir.path().join("back.bin");
    let (code, _, err) = warren(
        &c,
        &key,
        &["capsule", "cp", src.to_str().expect("path"), &remote],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = warren(
        &c,
        &key,
        &["capsule", "cp", &remote, back.to_str().expect("path")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&back).expect("read"), data);

    for (cmd, status) in [("pause", "paused"), ("resume", "running")] {
        let (code, _, err) = warren(&c, &key, &["capsule", cmd, &id]).await;
        assert!(code == 0 && err.contains(status), "{cmd}: {err}");
    }
    let (code, out, err) = warren(&c, &key, &["capsule", "create", "--template", "tiny"]).await;
    assert!(code == 0 && out.trim().starts_with("sb-"), "{out}{err}");
    let (code, _, err) = warren(&c, &key, &["capsule", "rm", out.trim()]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = warren(
        &c,
        &key,
        &["capsule", "exec", "sb-00000000deadbeef", "--", "true"],
    )
    .await;
    assert!(code == 1 && err.contains("not_found"), "{err}");
    c.stop().await;
}
