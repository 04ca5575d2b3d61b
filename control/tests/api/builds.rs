//! Template builds end to end with the real agent (namespace capsules on
//! `tiny`): a recipe using every instruction, its defaults in a new
//! capsule, the layer cache on rebuilds, a changed COPY input, failure,
//! cancel, two replicas, a worker killed mid-build, and snapshots of
//! capsules as templates; with `WARREN_TEST_MINIMAL=1`, a recipe on
//! `minimal` too.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::build_input::{Entry, log_events, submit_multipart, tar_of};
use crate::common::*;
use crate::real_agent::{binary, warren_with_real_agent};
use crate::require_real_agent;

/// Polls build `id` until it ends (up to `secs`).
pub async fn wait_build(k: &Client, id: &str, secs: u64) -> Value {
    eventually(secs, || async {
        let (st, v) = k.get(&format!("/v1/admin/builds/{id}")).await;
        assert_eq!(st, 200, "{v}");
        matches!(
            v["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
        .then_some(v)
    })
    .await
}

/// A running capsule of `template`.
async fn capsule(k: &Client, template: &str) -> String {
    let (st, v) = k
        .post("/v1/capsules", json!({ "template": template }))
        .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["status"], "running", "{v}");
    v["id"].as_str().expect("id").to_string()
}

/// Runs a shell command in a capsule: (stdout, exit code).
async fn sh(k: &Client, id: &str, cmd: &str) -> (String, i64) {
    let (st, v) = k
        .post(&format!("/v1/capsules/{id}/exec"), json!({ "cmd": cmd }))
        .await;
    assert_eq!(st, 200, "{v}");
    (
        v["stdout"].as_str().unwrap_or_default().to_string(),
        v["exit_code"].as_i64().unwrap_or(-1),
    )
}

fn statuses(b: &Value) -> Vec<(String, String)> {
    b["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["instruction"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn runs(b: &Value) -> Vec<i64> {
    b["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["runs"].as_i64().unwrap())
        .collect()
}

fn log_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(e, _)| e == "log")
        .map(|(_, v)| v["text"].as_str().unwrap_or_default())
        .collect()
}

/// What the build's commands printed on stdout.
fn stdout_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(e, v)| e == "log" && v["stream"] == "stdout")
        .map(|(_, v)| v["text"].as_str().unwrap_or_default())
        .collect()
}

const RECIPE: &str = r#"# Every instruction, Dockerfile-like.
ENV GREETING="hello there" APP=/srv/app
USER builder
WORKDIR $APP
COPY app/ ./
COPY conf/demo.cfg /etc/demo/
RUN --timeout=60s echo "$GREETING from $(whoami) in $(pwd)" \
    && test -x serve.sh && cat /etc/demo/demo.cfg > built.txt
START ./serve.sh
HEALTHCHECK --interval=1s --timeout=5s --retries=20 wget -q -O /dev/null http://127.0.0.1:8080/index.html
"#;

fn context(color: &str) -> Vec<u8> {
    let cfg = format!("color={color}\n");
    tar_of(&[
        Entry::Exec(
            "app/serve.sh",
            b"#!/bin/sh\nexec /bin/busybox httpd -f -p 127.0.0.1:8080 -h /srv/app/www\n",
        ),
        Entry::File("app/www/index.html", b"hello from the template\n"),
        Entry::Symlink("app/page", "www/index.html"),
        Entry::File("conf/demo.cfg", cfg.as_bytes()),
        Entry::File("unused.txt", b"not copied"),
    ])
}

async fn build(k: &Client, name: &str, color: &str, overwrite: bool) -> (Value, Duration) {
    let started = Instant::now();
    let (st, b) = submit_multipart(
        k,
        &[
            ("name", name),
            ("base", "tiny"),
            ("recipe", RECIPE),
            ("overwrite", if overwrite { "true" } else { "false" }),
        ],
        context(color),
    )
    .await;
    assert_eq!(st, 202, "{b}");
    let b = wait_build(k, b["id"].as_str().unwrap(), 300).await;
    (b, started.elapsed())
}

#[tokio::test]
async fn recipe_with_every_instruction_builds_on_tiny_and_caches_with_real_agent() {
    require_real_agent!();
    let (c, agent, _admin, key) = warren_with_real_agent(1).await;
    let k = c.client().with(&key);

    // First build: every step runs.
    let (b, took) = build(&k, "demo-app", "blue", false).await;
    assert_eq!(b["status"], "succeeded", "{b}\n{}", agent.log());
    eprintln!("TIMING first build of the test recipe on tiny: {took:?}");
    let all_done: Vec<(String, String)> = [
        "ENV",
        "USER",
        "WORKDIR",
        "COPY",
        "COPY",
        "RUN",
        "START",
        "HEALTHCHECK",
    ]
    .iter()
    .map(|i| (i.to_string(), "done".to_string()))
    .collect();
    assert_eq!(statuses(&b), all_done, "{b}");
    assert_eq!(runs(&b), [1, 1, 1, 1, 1, 1, 1, 1]);
    let events = log_events(&k, b["id"].as_str().unwrap()).await;
    let text = log_text(&events);
    assert!(
        text.contains("hello there from builder in /srv/app"),
        "{text}"
    );
    assert!(text.contains("created user builder"), "{text}");
    assert!(text.contains("healthy"), "{text}");

    // The template is the team's, with its defaults.
    let (_, list) = k.get("/v1/snapshots").await;
    let tpl = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "demo-app")
        .unwrap_or_else(|| panic!("demo-app listed: {list}"))
        .clone();
    assert_eq!(tpl["type"], "snapshot");
    assert_eq!(tpl["platform"], false);
    let id = capsule(&k, "demo-app").await;
    assert_eq!(sh(&k, &id, "whoami").await, ("builder\n".into(), 0));
    assert_eq!(sh(&k, &id, "pwd").await, ("/srv/app\n".into(), 0));
    let (env, _) = sh(&k, &id, "env").await;
    assert!(env.contains("GREETING=hello there\n"), "{env}");
    assert!(env.contains("APP=/srv/app\n"), "{env}");
    assert_eq!(sh(&k, &id, "cat built.txt").await.0, "color=blue\n");
    assert_eq!(
        sh(
            &k,
            &id,
            "stat -c '%U %a %n' serve.sh www/index.html /etc/demo/demo.cfg; readlink page; ls /srv/app"
        )
        .await
        .0,
        "builder 755 serve.sh\nbuilder 644 www/index.html\nbuilder 644 /etc/demo/demo.cfg\nwww/index.html\nbuilt.txt\npage\nserve.sh\nwww\n"
    );
    // START's daemon runs in capsules made from the template (the
    // namespace backend has no memory snapshot: it is started at create).
    let served = eventually(20, || async {
        let (out, code) = sh(&k, &id, "wget -q -O - http://127.0.0.1:8080/index.html").await;
        (code == 0).then_some(out)
    })
    .await;
    assert_eq!(served, "hello from the template\n");
    assert_eq!(k.delete(&format!("/v1/capsules/{id}")).await.0, 204);
    // A name clash without overwrite is refused at once.
    assert_error(
        &submit_multipart(
            &k,
            &[("name", "demo-app"), ("recipe", RECIPE)],
            context("blue"),
        )
        .await,
        409,
        "conflict",
    );

    // The same recipe and files again: every filesystem step is cached
    // (none runs: no output of theirs); the daemon and its health check
    // run again (a process is not part of a layer).
    let (b2, took) = build(&k, "demo-app-2", "blue", false).await;
    assert_eq!(b2["status"], "succeeded", "{b2}");
    eprintln!("TIMING cached rebuild of the test recipe on tiny: {took:?}");
    let expected: Vec<(String, String)> = [
        ("ENV", "cached"),
        ("USER", "cached"),
        ("WORKDIR", "cached"),
        ("COPY", "cached"),
        ("COPY", "cached"),
        ("RUN", "cached"),
        ("START", "done"),
        ("HEALTHCHECK", "done"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(statuses(&b2), expected, "{b2}");
    assert_eq!(runs(&b2), [0, 0, 0, 0, 0, 0, 1, 1]);
    assert_eq!(b2["cached_steps"], 6);
    let text = log_text(&log_events(&k, b2["id"].as_str().unwrap()).await);
    assert!(!text.contains("hello there from builder"), "{text}");
    assert!(text.contains("(cached)"), "{text}");
    let id = capsule(&k, "demo-app-2").await;
    assert_eq!(sh(&k, &id, "cat built.txt").await.0, "color=blue\n");
    assert_eq!(k.delete(&format!("/v1/capsules/{id}")).await.0, 204);

    // A changed COPY input: the steps before it stay cached, it and the
    // ones after it run; overwrite replaces the template.
    let (b3, _) = build(&k, "demo-app", "red", true).await;
    assert_eq!(b3["status"], "succeeded", "{b3}");
    let st: Vec<String> = statuses(&b3).into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        st,
        [
            "cached", "cached", "cached", "cached", "done", "done", "done", "done"
        ],
        "{b3}"
    );
    assert_eq!(runs(&b3), [0, 0, 0, 0, 1, 1, 1, 1]);
    let text = log_text(&log_events(&k, b3["id"].as_str().unwrap()).await);
    assert!(text.contains("hello there from builder"), "{text}");
    let id = capsule(&k, "demo-app").await;
    assert_eq!(sh(&k, &id, "cat built.txt").await.0, "color=red\n");
    assert_eq!(k.delete(&format!("/v1/capsules/{id}")).await.0, 204);

    // Build capsules are gone; the template rows point at the agent's.
    assert_eq!(
        count(
            &c.app,
            "SELECT count(*) FROM capsules WHERE metadata ? 'build_id' AND status NOT IN ('stopped', 'error')"
        )
        .await,
        0
    );
    let held = agent.templates().await;
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT agent_name FROM templates WHERE name IN ('demo-app', 'demo-app-2')",
    )
    .fetch_all(&c.app.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| held.contains(r)),
        "{rows:?} in {held:?}"
    );

    // `template rm` (DELETE /v1/snapshots) removes it everywhere.
    let agent_name = |name: &'static str| {
        sqlx::query_scalar::<_, String>("SELECT agent_name FROM templates WHERE name = $1")
            .bind(name)
            .fetch_one(&c.app.db)
    };
    let (gone, kept) = (
        agent_name("demo-app-2").await.unwrap(),
        agent_name("demo-app").await.unwrap(),
    );
    assert_ne!(gone, kept);
    assert_eq!(k.delete("/v1/snapshots/demo-app-2").await.0, 204);
    let held = agent.templates().await;
    assert!(!held.contains(&gone) && held.contains(&kept), "{held:?}");
    c.stop().await;
}

#[tokio::test]
async fn a_failed_build_leaves_no_template_with_real_agent() {
    require_real_agent!();
    let (c, agent, _admin, key) = warren_with_real_agent(1).await;
    let k = c.client().with(&key);
    let before = agent.templates().await;
    let (st, b) = k
        .post(
            "/v1/admin/builds",
            json!({ "name": "broken", "base": "tiny",
                    "recipe": "RUN echo one > /one\nRUN echo oops >&2; exit 3\nRUN echo never" }),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let b = wait_build(&k, b["id"].as_str().unwrap(), 120).await;
    assert_eq!(b["status"], "failed", "{b}");
    let error = b["error"].as_str().unwrap();
    assert!(
        error.contains("step 2") && error.contains("exited with code 3"),
        "{error}"
    );
    let st: Vec<String> = statuses(&b).into_iter().map(|(_, s)| s).collect();
    assert_eq!(st, ["done", "failed", "skipped"]);
    let text = log_text(&log_events(&k, b["id"].as_str().unwrap()).await);
    assert!(text.contains("oops"), "{text}");
    // No template; the build capsule is gone; only the layer of the step
    // that worked stays (the fix re-runs from the failed step).
    assert_eq!(
        count(
            &c.app,
            "SELECT count(*) FROM templates WHERE name = 'broken'"
        )
        .await,
        0
    );
    assert!(agent.capsules().await.is_empty());
    let after = agent.templates().await;
    let new: Vec<&String> = after.iter().filter(|t| !before.contains(t)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].starts_with("snap-l-"), "{new:?}");

    // The fixed recipe re-runs from the failed step.
    let (st, b) = k
        .post(
            "/v1/admin/builds",
            json!({ "name": "broken", "base": "tiny",
                    "recipe": "RUN echo one > /one\nRUN echo fixed\nRUN cat /one" }),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let b = wait_build(&k, b["id"].as_str().unwrap(), 120).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    let st: Vec<String> = statuses(&b).into_iter().map(|(_, s)| s).collect();
    assert_eq!(st, ["cached", "done", "done"]);
    c.stop().await;
}

#[tokio::test]
async fn cancel_mid_build_leaves_nothing_behind_with_real_agent() {
    require_real_agent!();
    let (c, agent, _admin, key) = warren_with_real_agent(1).await;
    let k = c.client().with(&key);
    let before = agent.templates().await;
    let (st, b) = k
        .post(
            "/v1/admin/builds",
            json!({ "name": "slow", "base": "tiny",
                    "recipe": "RUN echo first > /first\nRUN echo started; sleep 300\nRUN echo never" }),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    // Wait until the long step runs (the first left a layer behind).
    eventually(120, || async {
        let (_, v) = k.get(&format!("/v1/admin/builds/{id}")).await;
        (v["steps"][1]["status"] == "running").then_some(())
    })
    .await;
    let capsule_id: String = sqlx::query_scalar("SELECT capsule_id FROM builds WHERE id = $1")
        .bind(&id)
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    assert!(agent.capsules().await.contains(&capsule_id));
    // A log stream opened now follows the build live to its end.
    let live = tokio::spawn({
        let k = k.clone();
        let id = id.clone();
        async move { log_events(&k, &id).await }
    });
    let started = Instant::now();
    let (st, v) = k
        .post(&format!("/v1/admin/builds/{id}/cancel"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the step was stopped, not awaited"
    );
    let st: Vec<String> = statuses(&v).into_iter().map(|(_, s)| s).collect();
    assert_eq!(st, ["done", "cancelled", "cancelled"], "{v}");
    // Nothing left: no template row, no build capsule, no agent template
    // (not even the first step's layer), no cache row.
    assert_eq!(
        count(&c.app, "SELECT count(*) FROM templates WHERE name = 'slow'").await,
        0
    );
    let (status,): (String,) = sqlx::query_as("SELECT status FROM capsules WHERE id = $1")
        .bind(&capsule_id)
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    assert_eq!(status, "stopped");
    assert!(agent.capsules().await.is_empty());
    assert_eq!(agent.templates().await, before);
    assert_eq!(count(&c.app, "SELECT count(*) FROM build_cache").await, 0);
    let events = live.await.expect("log stream");
    assert!(
        events
            .iter()
            .any(|(e, v)| e == "step" && v["index"] == 1 && v["status"] == "running"),
        "{events:?}"
    );
    assert!(stdout_text(&events).contains("started"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(e, v)| e == "step" && v["index"] == 1 && v["status"] == "cancelled"),
        "{events:?}"
    );
    assert!(log_text(&events).contains("build cancelled"));
    assert_eq!(events.last().unwrap().1["status"], "cancelled");
    c.stop().await;
}

#[tokio::test]
async fn snapshot_of_a_capsule_becomes_a_template_with_real_agent() {
    require_real_agent!();
    let (c, agent, _admin, key) = warren_with_real_agent(0).await;
    let k = c.client().with(&key);
    let src = capsule(&k, "tiny").await;
    assert_eq!(
        sh(
            &k,
            &src,
            "mkdir -p /home/user/work && echo kept > /home/user/work/f.txt"
        )
        .await
        .1,
        0
    );
    let (st, t) = k
        .post(
            "/v1/snapshots",
            json!({ "sandbox_id": src, "name": "snap-test" }),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["name"], "snap-test");
    assert_eq!(t["type"], "snapshot");
    // The source keeps running.
    assert_eq!(sh(&k, &src, "cat /home/user/work/f.txt").await.0, "kept\n");
    // A clash without overwrite: 409; with it: replaced.
    assert_error(
        &k.post(
            "/v1/snapshots",
            json!({ "sandbox_id": src, "name": "snap-test" }),
        )
        .await,
        409,
        "conflict",
    );
    assert_eq!(sh(&k, &src, "echo v2 > /home/user/work/g.txt").await.1, 0);
    let (st, t2) = k
        .post(
            "/v1/snapshots?overwrite=true",
            json!({ "sandbox_id": src, "name": "snap-test" }),
        )
        .await;
    assert_eq!(st, 201, "{t2}");
    let (_, list) = k.get("/v1/snapshots?type=snapshot").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // A new capsule from it has the files, and the template's defaults.
    let copy = capsule(&k, "snap-test").await;
    assert_eq!(
        sh(
            &k,
            &copy,
            "cat /home/user/work/f.txt /home/user/work/g.txt; whoami"
        )
        .await
        .0,
        "kept\nv2\nuser\n"
    );
    let agent_name: String =
        sqlx::query_scalar("SELECT agent_name FROM templates WHERE name = 'snap-test'")
            .fetch_one(&c.app.db)
            .await
            .unwrap();
    assert!(agent.templates().await.contains(&agent_name));
    // Deleting it removes it from the agent too (once no capsule uses it).
    assert_eq!(k.delete(&format!("/v1/capsules/{copy}")).await.0, 204);
    assert_eq!(k.delete("/v1/snapshots/snap-test").await.0, 204);
    assert!(!agent.templates().await.contains(&agent_name));
    assert_error(&k.delete("/v1/snapshots/snap-test").await, 404, "not_found");
    assert_error(
        &k.post("/v1/capsules", json!({ "template": "snap-test" }))
            .await,
        404,
        "not_found",
    );
    c.stop().await;
}

#[tokio::test]
async fn two_replicas_never_run_the_same_build_with_real_agent() {
    require_real_agent!();
    let (a, _agent, _admin, key) = warren_with_real_agent(2).await;
    let mut cfg = config(&a.app.cfg.database_url);
    cfg.build_workers = 2;
    cfg.agent_timeout_secs = 120;
    let b = Control::start(cfg).await;
    let (ka, kb) = (a.client().with(&key), b.client().with(&key));
    let mut ids = Vec::new();
    for i in 0..4 {
        let k = if i % 2 == 0 { &ka } else { &kb };
        let (st, v) = k
            .post(
                "/v1/admin/builds",
                json!({ "name": format!("twice-{i}"), "base": "tiny",
                        "recipe": format!("RUN echo marker-{i}-$$ > /m\nRUN cat /m") }),
            )
            .await;
        assert_eq!(st, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let v = wait_build(&ka, id, 300).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        // One attempt, each step run once.
        assert_eq!(v["attempts"], 1, "{v}");
        assert_eq!(runs(&v), [1, 1], "{v}");
        let text = stdout_text(&log_events(&kb, id).await);
        assert_eq!(text.matches("marker-").count(), 1, "{text}");
    }
    let workers: Vec<String> = sqlx::query_scalar("SELECT DISTINCT worker FROM builds")
        .fetch_all(&a.app.db)
        .await
        .unwrap();
    eprintln!(
        "builds were run by {} worker(s): {workers:?}",
        workers.len()
    );
    b.stop().await;
    a.stop().await;
}

/// A `warren-control` process (killed with SIGKILL on drop).
struct ControlProcess(std::process::Child);

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_build_whose_worker_dies_is_taken_over_with_real_agent() {
    require_real_agent!();
    let control_bin = binary("warren-control");
    let control_dir = tempfile::tempdir().unwrap();
    // This replica serves the API; its workers are off.
    let (c, agent, _admin, key) = warren_with_real_agent(0).await;
    let k = c.client().with(&key);
    // A second replica, a separate process, runs the build...
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(&control_bin)
        .env("WARREN_DIR", control_dir.path())
        .env("DATABASE_URL", &c.app.cfg.database_url)
        .env("WARREN_LISTEN", format!("127.0.0.1:{port}"))
        .env("WARREN_BUILD_LEASE", "4")
        .env("WARREN_HEARTBEAT_TIMEOUT", "3600")
        .env("LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start warren-control");
    let doomed = ControlProcess(child);
    let (st, v) = k
        .post(
            "/v1/admin/builds",
            json!({ "name": "survivor", "base": "tiny",
                    "recipe": "RUN echo one > /one\nRUN sleep 3; echo two > /two\nRUN cat /one /two" }),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    eventually(120, || async {
        let (_, v) = k.get(&format!("/v1/admin/builds/{id}")).await;
        (v["steps"][1]["status"] == "running").then_some(())
    })
    .await;
    let first_capsule: String = sqlx::query_scalar("SELECT capsule_id FROM builds WHERE id = $1")
        .bind(&id)
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    // ... and dies mid-step.
    drop(doomed);
    // Another replica's workers take it over once the lease runs out.
    let mut cfg = config(&c.app.cfg.database_url);
    cfg.build_workers = 1;
    cfg.build_lease_secs = 4;
    cfg.agent_timeout_secs = 120;
    let heir = Control::start(cfg).await;
    let v = wait_build(&k, &id, 300).await;
    assert_eq!(v["status"], "succeeded", "{v}\n{}", agent.log());
    assert_eq!(v["attempts"], 2, "{v}");
    let st: Vec<String> = statuses(&v).into_iter().map(|(_, s)| s).collect();
    assert_eq!(st, ["cached", "done", "done"], "{v}");
    // The dead worker's capsule was destroyed, not left running.
    let (status,): (String,) = sqlx::query_as("SELECT status FROM capsules WHERE id = $1")
        .bind(&first_capsule)
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    assert_eq!(status, "stopped");
    // The heir's own build capsule goes right after the build settles.
    eventually(30, || async {
        agent.capsules().await.is_empty().then_some(())
    })
    .await;
    let copy = capsule(&k, "survivor").await;
    assert_eq!(sh(&k, &copy, "cat /one /two").await.0, "one\ntwo\n");
    heir.stop().await;
    c.stop().await;
    drop(agent);
}

/// The same instructions on `minimal` (Debian: `useradd`, sudo, python3,
/// curl). Opt-in like every `minimal` test: the agent builds Debian with
/// debootstrap from this host's apt mirror first (about a minute).
#[tokio::test]
async fn a_recipe_builds_on_minimal_with_real_agent() {
    require_real_agent!();
    if std::env::var("WARREN_TEST_MINIMAL").as_deref() != Ok("1") {
        eprintln!(
            "SKIP a_recipe_builds_on_minimal_with_real_agent: set WARREN_TEST_MINIMAL=1 to build `minimal` (debootstrap from this host's apt mirror)"
        );
        return;
    }
    let (c, agent, _admin, key) = warren_with_real_agent(1).await;
    let k = c.client().with(&key);
    // The agent's own command builds it; the next sync offers it.
    let dir = agent.dir.path().to_owned();
    let built = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary("warren-agent"))
            .args(["template", "--data-dir"])
            .arg(&dir)
            .args(["build", "minimal"])
            .output()
            .expect("warren-agent template build")
    })
    .await
    .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let host: String = sqlx::query_scalar("SELECT id::text FROM hosts")
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    sync(&c, &host).await;

    let recipe = r#"ENV GREETING=hi
USER app
WORKDIR /srv/proj
COPY main.py ./
RUN python3 main.py > out.txt && sudo -n true && echo sudo-ok
START python3 -m http.server 8000 --bind 127.0.0.1
HEALTHCHECK --interval=1s --retries=30 curl -fsS -o /dev/null http://127.0.0.1:8000/main.py
"#;
    let archive = tar_of(&[Entry::File(
        "main.py",
        b"import os\nprint(os.environ['GREETING'], 6 * 7)\n",
    )]);
    let (st, b) = submit_multipart(
        &k,
        &[("name", "py-app"), ("base", "minimal"), ("recipe", recipe)],
        archive,
    )
    .await;
    assert_eq!(st, 202, "{b}");
    let b = wait_build(&k, b["id"].as_str().unwrap(), 300).await;
    let events = log_events(&k, b["id"].as_str().unwrap()).await;
    assert_eq!(
        b["status"],
        "succeeded",
        "{b}\n{}\n{}",
        log_text(&events),
        agent.log()
    );
    assert!(stdout_text(&events).contains("sudo-ok"), "{events:?}");

    let id = capsule(&k, "py-app").await;
    assert_eq!(sh(&k, &id, "whoami").await, ("app\n".into(), 0));
    assert_eq!(sh(&k, &id, "pwd").await, ("/srv/proj\n".into(), 0));
    assert_eq!(sh(&k, &id, "cat out.txt").await, ("hi 42\n".into(), 0));
    assert_eq!(
        sh(
            &k,
            &id,
            ". /etc/os-release && echo $VERSION_ID; sudo -n id -u"
        )
        .await,
        ("12\n0\n".into(), 0)
    );
    let served = eventually(30, || async {
        let (out, code) = sh(&k, &id, "curl -fsS http://127.0.0.1:8000/main.py").await;
        (code == 0).then_some(out)
    })
    .await;
    assert!(served.contains("GREETING"), "{served}");
    assert_eq!(k.delete(&format!("/v1/capsules/{id}")).await.0, 204);
    c.stop().await;
}
