//! Build requests checked before anything is stored (no agent needed):
//! malformed recipes answer 400 naming each error's line and column,
//! archives escaping their root (by `..` or by a symlink) are refused,
//! unknown bases are 404, name clashes 409; a queued build can be
//! cancelled, and its log replays with its end.

use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::common::*;

/// One archive entry for [`tar_of`].
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Exec(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// A tar archive of `entries`; names are written raw (so tests can make
/// the hostile ones the tar crate's own path checks would refuse).
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let (name, data, mode, kind): (&str, &[u8], u32, _) = match e {
            Entry::File(n, d) => (n, d, 0o644, tar::EntryType::Regular),
            Entry::Exec(n, d) => (n, d, 0o755, tar::EntryType::Regular),
            Entry::Symlink(n, _) => (n, &[], 0o777, tar::EntryType::Symlink),
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Entry::Symlink(_, target) = e {
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("tar entry");
    }
    b.into_inner().expect("tar")
}

/// `POST /v1/admin/builds` as multipart with `archive`.
pub async fn submit_multipart(
    k: &Client,
    fields: &[(&str, &str)],
    archive: Vec<u8>,
) -> (reqwest::StatusCode, Value) {
    let mut form = Form::new().part("archive", Part::bytes(archive).file_name("ctx.tar"));
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    let resp = k
        .req(reqwest::Method::POST, "/v1/admin/builds")
        .multipart(form)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The whole event stream of a build's log (until its `end` event).
pub async fn log_events(k: &Client, id: &str) -> Vec<(String, Value)> {
    let resp = k
        .req(reqwest::Method::GET, &format!("/v1/admin/builds/{id}/logs"))
        .send()
        .await
        .expect("logs");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
    while !events.iter().any(|(e, _): &(String, Value)| e == "end") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("log stream in time")
            .expect("stream open")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let event = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_string();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            if !event.is_empty() {
                events.push((event, data));
            }
        }
    }
    events
}

#[tokio::test]
async fn build_requests_are_checked_before_anything_is_stored() {
    let db = fresh_db().await;
    let mut cfg = config(&db);
    cfg.build_workers = 0;
    cfg.max_build_archive_bytes = 64 << 10;
    let c = Control::start(cfg).await;
    let http = c.client();
    let user = signup(&http, "recipes@example.com").await;
    let key = api_key(&http, &user).await;
    let k = http.with(&key);
    let builds = || count(&c.app, "SELECT count(*) FROM builds");

    // A malformed recipe: every error with its line and column.
    let (st, v) = k
        .post(
            "/v1/admin/builds",
            json!({ "name": "bad", "base": "tiny", "recipe": "RUN true\nFROB x\nUSER Bad!\nRUN --timeout=soon x" }),
        )
        .await;
    assert_error(&(st, v.clone()), 400, "invalid_request");
    let errors: Vec<(u64, u64)> = v["error"]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        [2, 3, 4],
        "{v}"
    );
    assert_eq!(errors[0], (2, 1), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2, column 1"),
        "{v}"
    );
    assert_error(
        &k.post(
            "/v1/admin/builds",
            json!({ "name": "e", "recipe": "# nothing\n" }),
        )
        .await,
        400,
        "invalid_request",
    );

    // Archives escaping their root: by `..`, by a symlink, by an absolute path.
    let recipe = "COPY . /srv/\nRUN true";
    for (expect, archive) in [
        (
            "\"../evil\" refused",
            tar_of(&[Entry::File("ok.txt", b"x"), Entry::File("../evil", b"x")]),
        ),
        (
            "\"link\" refused",
            tar_of(&[Entry::Symlink("link", "../../etc"), Entry::File("a", b"x")]),
        ),
        (
            "\"d/x\" refused",
            tar_of(&[Entry::Symlink("d", "sub"), Entry::File("d/x", b"x")]),
        ),
        (
            "\"/etc/passwd\" refused",
            tar_of(&[Entry::File("/etc/passwd", b"x")]),
        ),
        ("not a tar", b"just some text".to_vec()),
    ] {
        let (st, v) = submit_multipart(&k, &[("name", "arch"), ("recipe", recipe)], archive).await;
        assert_error(&(st, v.clone()), 400, "invalid_request");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(expect),
            "{expect}: {v}"
        );
    }
    // A zip with a traversal entry too.
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file("../../x", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut z, b"x").unwrap();
    let zipped = z.finish().unwrap().into_inner();
    let (st, v) = submit_multipart(&k, &[("name", "z"), ("recipe", recipe)], zipped).await;
    assert_error(&(st, v.clone()), 400, "invalid_request");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("refused"),
        "{v}"
    );

    // COPY sources must be in the archive; COPY needs one.
    let (st, v) = submit_multipart(
        &k,
        &[("name", "src"), ("recipe", "RUN true\nCOPY missing.txt /x")],
        tar_of(&[Entry::File("other.txt", b"x")]),
    )
    .await;
    assert_error(&(st, v.clone()), 400, "invalid_request");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("line 2"),
        "{v}"
    );
    assert_error(
        &k.post(
            "/v1/admin/builds",
            json!({ "name": "n", "recipe": "COPY a /b" }),
        )
        .await,
        400,
        "invalid_request",
    );
    // Too large an archive.
    let (st, v) = submit_multipart(
        &k,
        &[("name", "big"), ("recipe", recipe)],
        vec![0u8; 128 << 10],
    )
    .await;
    assert_error(&(st, v), 413, "too_large");

    // Unknown base, bad names and sizes, name clashes.
    assert_error(
        &k.post(
            "/v1/admin/builds",
            json!({ "name": "x", "base": "nope", "recipe": "RUN true" }),
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &k.post(
            "/v1/admin/builds",
            json!({ "name": "bad name!", "recipe": "RUN true" }),
        )
        .await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.post(
            "/v1/admin/builds",
            json!({ "name": "x", "recipe": "RUN true", "vcpus": 0 }),
        )
        .await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.post("/v1/admin/builds", json!({ "name": "x", "recipe": 5 }))
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &k.post(
            "/v1/admin/builds",
            json!({ "name": "tiny", "recipe": "RUN true" }),
        )
        .await,
        409,
        "conflict",
    );
    assert_eq!(builds().await, 0, "nothing stored for refused requests");

    // A good one is queued (no workers here), with its steps.
    let (st, b) = k
        .post(
            "/v1/admin/builds",
            json!({ "name": "good", "base": "tiny", "recipe": "ENV A=1\nRUN echo $A\nRUN true" }),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    assert_eq!(b["status"], "queued");
    let steps = b["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[1]["instruction"], "RUN");
    assert_eq!(steps[1]["line"], 2);
    assert_eq!(steps[1]["status"], "pending");
    let id = b["id"].as_str().unwrap().to_string();
    // The same name while it is open: 409.
    assert_error(
        &k.post(
            "/v1/admin/builds",
            json!({ "name": "good", "recipe": "RUN true" }),
        )
        .await,
        409,
        "conflict",
    );

    // Another team sees none of it.
    let other = signup(&http, "other@example.com").await;
    let ok = http.with(&api_key(&http, &other).await);
    assert_error(
        &ok.get(&format!("/v1/admin/builds/{id}")).await,
        404,
        "not_found",
    );
    assert_eq!(ok.get("/v1/admin/builds").await.1, json!([]));
    let (_, mine) = k.get("/v1/admin/builds").await;
    assert_eq!(mine.as_array().unwrap().len(), 1);

    // Cancelled while queued: at once, and its log ends.
    let (st, v) = k
        .post(&format!("/v1/admin/builds/{id}/cancel"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "cancelled");
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cancelled")
    );
    assert_error(
        &k.post(&format!("/v1/admin/builds/{id}/cancel"), json!({}))
            .await,
        409,
        "invalid_state",
    );
    let events = log_events(&k, &id).await;
    assert_eq!(
        events.last().unwrap().1["status"],
        "cancelled",
        "{events:?}"
    );
    assert_eq!(
        count(&c.app, "SELECT count(*) FROM build_archives").await,
        0
    );
    c.stop().await;
}
