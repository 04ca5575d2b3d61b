//! User commands: `warren capsule ...` and `warren template ...`, as an
//! ordinary client of the REST API (the same calls the `wrenn` SDK makes).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What `warren up` writes for later commands (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub url: String,
    pub api_key: String,
    pub admin_email: String,
    pub admin_password: String,
}

pub fn credentials_path(dir: &Path) -> PathBuf {
    dir.join("credentials.json")
}

pub fn read_credentials(dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(credentials_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

#[derive(Debug, Subcommand)]
pub enum CapsuleCmd {
    /// Create a capsule and wait until it runs.
    Create {
        #[arg(long, short)]
        template: Option<String>,
        #[arg(long)]
        vcpus: Option<u32>,
        #[arg(long)]
        memory_mb: Option<u32>,
        /// Idle seconds before auto-pause (0: never).
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// List capsules.
    Ls,
    /// Run a command: `warren capsule exec ID -- CMD ARGS...`.
    Exec {
        id: String,
        #[arg(required = true, trailing_var_arg = true)]
        cmd: Vec<String>,
        #[arg(long)]
        cwd: Option<String>,
        /// Seconds before the command is killed.
        #[arg(long, default_value_t = 60)]
        timeout: u32,
    },
    /// Open a terminal in the capsule.
    Pty {
        id: String,
        /// Program to run (default: the template's shell).
        #[arg(long)]
        cmd: Option<String>,
    },
    /// Copy a file in or out: `warren capsule cp ./f ID:/path` or `ID:/path ./f`.
    Cp {
        src: String,
        dst: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Destroy a capsule.
    Rm {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// Templates this team can start capsules from.
    Ls,
}

/// A configured API client.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, key: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Flags and environment first, then the local installation's file.
    pub fn resolve(dir: &Path, url: Option<String>, key: Option<String>) -> anyhow::Result<Self> {
        let creds = read_credentials(dir);
        let url = url
            .or_else(|| creds.as_ref().map(|c| c.url.clone()))
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let key = key
            .or_else(|| creds.map(|c| c.api_key))
            .context("no API key: set WARREN_API_KEY or run `warren up` first")?;
        Ok(Self::new(&url, &key))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .header("X-API-Key", &self.key)
    }

    async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        match body["error"]["message"].as_str() {
            Some(m) => bail!(
                "{m} ({})",
                body["error"]["code"].as_str().unwrap_or("error")
            ),
            None => bail!("HTTP {status}"),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = Self::check(r.send().await.context("reaching the control plane")?).await?;
        let text = resp.text().await?;
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    pub fn ws_url(&self, path: &str) -> String {
        let base = self
            .base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        format!("{base}{path}")
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

/// A spinner on stderr for slow steps (silent when stderr is not a TTY).
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    label: String,
}

impl Progress {
    pub fn start(label: &str) -> Self {
        let tty = std::io::stderr().is_terminal();
        let l = label.to_string();
        let task = tty.then(|| {
            tokio::spawn(async move {
                let frames = ['|', '/', '-', '\\'];
                let started = std::time::Instant::now();
                for i in 0.. {
                    eprint!(
                        "\r{} {l} ({:.0}s)",
                        frames[i % 4],
                        started.elapsed().as_secs_f64()
                    );
                    let _ = std::io::stderr().flush();
                    tokio::time::sleep(Duration::from_millis(120)).await;
                }
            })
        });
        if !tty {
            eprintln!("{label}...");
        }
        Self {
            task,
            label: label.to_string(),
        }
    }

    pub fn done(self, outcome: &str) {
        match &self.task {
            Some(t) => {
                t.abort();
                eprintln!("\r\x1b[2K{}: {outcome}", self.label);
            }
            None => eprintln!("{}: {outcome}", self.label),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn capsule(api: &Api, cmd: CapsuleCmd) -> anyhow::Result<i32> {
    use reqwest::Method;
    match cmd {
        CapsuleCmd::Create {
            template,
            vcpus,
            memory_mb,
            timeout,
        } => {
            let p = Progress::start("creating capsule");
            let mut v = api
                .call(
                    Method::POST,
                    "/v1/capsules",
                    Some(json!({ "template": template, "vcpus": vcpus, "memory_mb": memory_mb, "timeout_sec": timeout })),
                )
                .await?;
            let id = s(&v["id"]);
            while v["status"] == "starting" {
                tokio::time::sleep(Duration::from_millis(300)).await;
                v = api
                    .call(Method::GET, &format!("/v1/capsules/{id}"), None)
                    .await?;
            }
            p.done(&s(&v["status"]));
            println!("{id}");
            Ok(if v["status"] == "running" { 0 } else { 1 })
        }
        CapsuleCmd::Ls => {
            let list = api.call(Method::GET, "/v1/capsules", None).await?;
            let mut rows = vec![
                vec!["ID", "STATUS", "TEMPLATE", "VCPUS", "MEMORY_MB", "CREATED"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ];
            for c in list.as_array().into_iter().flatten() {
                rows.push(vec![
                    s(&c["id"]),
                    s(&c["status"]),
                    s(&c["template"]),
                    s(&c["vcpus"]),
                    s(&c["memory_mb"]),
                    s(&c["created_at"]),
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
        CapsuleCmd::Exec {
            id,
            cmd,
            cwd,
            timeout,
        } => {
            let (first, rest) = cmd.split_first().context("a command is required")?;
            let body = if rest.is_empty() {
                json!({ "cmd": first, "cwd": cwd, "timeout_sec": timeout })
            } else {
                json!({ "cmd": first, "args": rest, "cwd": cwd, "timeout_sec": timeout })
            };
            let v = api
                .call(Method::POST, &format!("/v1/capsules/{id}/exec"), Some(body))
                .await?;
            let decode = |field: &str| -> Vec<u8> {
                let raw = v[field].as_str().unwrap_or_default();
                if v["encoding"] == "base64" {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(raw)
                        .unwrap_or_default()
                } else {
                    raw.as_bytes().to_vec()
                }
            };
            std::io::stdout().write_all(&decode("stdout"))?;
            std::io::stderr().write_all(&decode("stderr"))?;
            Ok(v["exit_code"].as_i64().unwrap_or(1) as i32)
        }
        CapsuleCmd::Pty { id, cmd } => super::terminal::run(api, &id, cmd).await,
        CapsuleCmd::Cp { src, dst } => copy(api, &src, &dst).await.map(|()| 0),
        CapsuleCmd::Pause { id } => lifecycle(api, &id, "pause", "pausing").await,
        CapsuleCmd::Resume { id } => lifecycle(api, &id, "resume", "resuming").await,
        CapsuleCmd::Rm { id } => {
            let p = Progress::start("destroying capsule");
            api.call(Method::DELETE, &format!("/v1/capsules/{id}"), None)
                .await?;
            p.done("done");
            Ok(0)
        }
    }
}

async fn lifecycle(api: &Api, id: &str, op: &str, label: &str) -> anyhow::Result<i32> {
    let p = Progress::start(&format!("{label} {id}"));
    let v = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/capsules/{id}/{op}"),
            Some(json!({})),
        )
        .await?;
    p.done(&s(&v["status"]));
    Ok(0)
}

/// `ID:/path` → (id, path).
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (id, path) = spec.split_once(':')?;
    (!id.is_empty() && id.starts_with("sb-") && !path.is_empty()).then_some((id, path))
}

async fn copy(api: &Api, src: &str, dst: &str) -> anyhow::Result<()> {
    match (remote(src), remote(dst)) {
        (None, Some((id, path))) => {
            let file = tokio::fs::File::open(src)
                .await
                .with_context(|| format!("opening {src}"))?;
            let len = file.metadata().await?.len();
            let p = Progress::start(&format!("uploading {len} bytes"));
            let stream = futures::stream::unfold(Some(file), |state| async move {
                let mut file = state?;
                let mut buf = vec![0u8; 64 << 10];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(buf), Some(file)))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            });
            let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream))
                .file_name("upload");
            let form = reqwest::multipart::Form::new()
                .text("path", path.to_string())
                .part("file", part);
            let resp = api
                .request(
                    reqwest::Method::POST,
                    &format!("/v1/capsules/{id}/files/stream/write"),
                )
                .multipart(form)
                .send()
                .await?;
            Api::check(resp).await?;
            p.done("done");
            Ok(())
        }
        (Some((id, path)), None) => {
            let p = Progress::start(&format!("downloading {path}"));
            let resp = api
                .request(
                    reqwest::Method::POST,
                    &format!("/v1/capsules/{id}/files/stream/read"),
                )
                .json(&json!({ "path": path }))
                .send()
                .await?;
            let resp = Api::check(resp).await?;
            let mut out = tokio::fs::File::create(dst)
                .await
                .with_context(|| format!("creating {dst}"))?;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await?;
            p.done("done");
            Ok(())
        }
        _ => bail!("exactly one of the two paths must be a capsule path (sb-...:/path)"),
    }
}

pub async fn template(api: &Api, cmd: TemplateCmd) -> anyhow::Result<i32> {
    match cmd {
        TemplateCmd::Ls => {
            let list = api
                .call(reqwest::Method::GET, "/v1/snapshots", None)
                .await?;
            let mut rows = vec![
                vec!["NAME", "TYPE", "SIZE_BYTES", "CREATED"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ];
            for t in list.as_array().into_iter().flatten() {
                rows.push(vec![
                    s(&t["name"]),
                    s(&t["type"]),
                    s(&t["size_bytes"]),
                    s(&t["created_at"]),
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
    }
}
