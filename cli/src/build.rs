//! `warren template build`: queues a build and follows its log (the
//! `/v1/admin/builds/{id}/logs` event stream, resumed after a dropped
//! connection) until it ends; Ctrl-C cancels the build.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::Method;
use warren_api_types::builds::{BuildEnd, BuildLog, BuildView, CreateBuildRequest, LogStreamError};
use warren_api_types::status::{BuildStatus, LogStream};

use crate::client::Api;

/// What `template build` was asked.
#[derive(Debug, Clone)]
pub struct BuildArgs {
    pub name: String,
    pub base: Option<String>,
    pub recipe: String,
    pub archive: Option<PathBuf>,
    pub overwrite: bool,
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
}

/// One Server-Sent Event.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// Splits complete events off the front of `buf`.
fn take_events(buf: &mut String) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut ev = SseEvent::default();
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                ev.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            } else if let Some(v) = line.strip_prefix("id:") {
                ev.id = Some(v.trim().to_string());
            }
        }
        ev.data = data.join("\n");
        if !ev.event.is_empty() || !ev.data.is_empty() {
            out.push(ev);
        }
    }
    out
}

async fn submit(api: &Api, args: &BuildArgs) -> anyhow::Result<BuildView> {
    let path = "/v1/admin/builds";
    let Some(archive) = &args.archive else {
        let req = CreateBuildRequest {
            name: args.name.clone(),
            base: args.base.clone(),
            recipe: args.recipe.clone(),
            overwrite: args.overwrite,
            vcpus: args.vcpus,
            memory_mb: args.memory_mb,
        };
        return api.post(path, &req).await;
    };
    let bytes = tokio::fs::read(archive)
        .await
        .with_context(|| format!("reading {}", archive.display()))?;
    let mut form = reqwest::multipart::Form::new()
        .text("name", args.name.clone())
        .text("recipe", args.recipe.clone())
        .text("overwrite", args.overwrite.to_string())
        .part(
            "archive",
            reqwest::multipart::Part::bytes(bytes).file_name("archive"),
        );
    if let Some(b) = &args.base {
        form = form.text("base", b.clone());
    }
    if let Some(v) = args.vcpus {
        form = form.text("vcpus", v.to_string());
    }
    if let Some(m) = args.memory_mb {
        form = form.text("memory_mb", m.to_string());
    }
    api.send(api.request(Method::POST, path).multipart(form))
        .await
}

/// Prints one event; the build's end (status, error, template) when it is
/// the last.
fn show(ev: &SseEvent, out: &mut impl Write) -> anyhow::Result<Option<BuildEnd>> {
    let parse = |what| format!("the log stream sent a malformed {what} event");
    match ev.event.as_str() {
        "log" => {
            let log: BuildLog = serde_json::from_str(&ev.data).with_context(|| parse("log"))?;
            if log.stream == LogStream::System {
                for line in log.text.lines() {
                    writeln!(out, "==> {line}")?;
                }
            } else {
                write!(out, "{}", log.text)?;
            }
            out.flush()?;
        }
        "end" => {
            return Ok(Some(
                serde_json::from_str(&ev.data).with_context(|| parse("end"))?,
            ));
        }
        "error" => {
            let e: LogStreamError =
                serde_json::from_str(&ev.data).with_context(|| parse("error"))?;
            bail!("log stream: {}", e.message)
        }
        _ => {}
    }
    Ok(None)
}

/// Follows the log until the end event; reconnects where it left off.
async fn follow(api: &Api, id: &str) -> anyhow::Result<BuildEnd> {
    let mut last: Option<String> = None;
    let mut failures = 0;
    let mut stdout = std::io::stdout();
    loop {
        let mut req = api.request(Method::GET, &format!("/v1/admin/builds/{id}/logs"));
        if let Some(l) = &last {
            req = req.header("Last-Event-ID", l);
        }
        let resp = match req.send().await {
            Ok(r) => Api::check(r).await?,
            Err(e) if failures < 10 => {
                failures += 1;
                tracing::debug!(error = %e, "log stream lost; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e).context("following the build log"),
        };
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            failures = 0;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for ev in take_events(&mut buf) {
                if ev.event == "log" && ev.id.is_some() {
                    last = ev.id.clone();
                }
                if let Some(end) = show(&ev, &mut stdout)? {
                    return Ok(end);
                }
            }
        }
        failures += 1;
        if failures > 10 {
            bail!("the build log stream keeps closing");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `warren template build`.
pub async fn run(api: &Api, args: BuildArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let id = submit(api, &args).await?.id;
    eprintln!("build {id} queued: template '{}'", args.name);
    let end = tokio::select! {
        end = follow(api, &id) => end?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ncancelling build {id}...");
            let b: BuildView = api.act(&format!("/v1/admin/builds/{id}/cancel")).await?;
            eprintln!("build {id}: {}", b.status);
            return Ok(130);
        }
    };
    let secs = started.elapsed().as_secs_f64();
    if end.status != BuildStatus::Succeeded {
        let why = end.error.map(|e| format!(": {e}")).unwrap_or_default();
        eprintln!("build {id} {}{why}", end.status);
        return Ok(1);
    }
    let view: BuildView = api.get(&format!("/v1/admin/builds/{id}")).await?;
    eprintln!(
        "template '{}' built in {secs:.1}s ({} of {} steps cached)",
        args.name,
        view.cached_steps,
        view.steps.len()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_server_sent_events() {
        let mut buf = String::from(
            ": keepalive\n\nevent: log\nid: 7\ndata: {\"text\":\"a\"}\n\nevent: end\ndata: {}\n\nevent: lo",
        );
        let evs = take_events(&mut buf);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event, "log");
        assert_eq!(evs[0].id.as_deref(), Some("7"));
        assert_eq!(evs[0].data, r#"{"text":"a"}"#);
        assert_eq!(evs[1].event, "end");
        assert_eq!(buf, "event: lo");
    }

    #[test]
    fn shows_logs_and_stops_at_the_end() {
        let mut out = Vec::new();
        let log = |stream, text: &str| SseEvent {
            event: "log".into(),
            id: None,
            data: serde_json::to_string(&BuildLog {
                id: 1,
                step: Some(0),
                stream,
                text: text.into(),
                at: chrono::Utc::now(),
            })
            .unwrap(),
        };
        let system = log(LogStream::System, "step 1/2: RUN x\n");
        assert!(show(&system, &mut out).unwrap().is_none());
        let stdout = log(LogStream::Stdout, "hello\n");
        assert!(show(&stdout, &mut out).unwrap().is_none());
        let end = SseEvent {
            event: "end".into(),
            id: None,
            data: r#"{"status":"succeeded","error":null,"template":"t"}"#.into(),
        };
        let end = show(&end, &mut out).unwrap().unwrap();
        assert_eq!(end.status, BuildStatus::Succeeded);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "==> step 1/2: RUN x\nhello\n"
        );
        let broken = SseEvent {
            event: "log".into(),
            id: None,
            data: "{".into(),
        };
        assert!(show(&broken, &mut Vec::new()).is_err());
    }
}
