//! `warren up` / `down` / `status`: a whole installation on one machine.
//!
//! `up` starts a private Postgres under `$WARREN_DIR/pg` (unless
//! `DATABASE_URL` is set), `warren-control`, and the local `warren-agent`,
//! registers the local host, creates an administrator and an API key on the
//! first run (kept in `$WARREN_DIR/credentials.json`, mode 0600), prints the
//! URL and key, and supervises the two processes (restarting them if they
//! die) until SIGTERM. `--detach` returns once everything is up.
//!
//! The agent's command line is built in one place, [`agent_command`]; what
//! it assumes of `warren-agent` is documented there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::process::{Child, Command};

use super::commands::{Credentials, Progress, credentials_path, read_credentials};
use super::pg::PgCluster;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Where the REST API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The agent binary (default: `warren-agent` next to `warren`, else on PATH).
    #[arg(long, env = "WARREN_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// Where the local agent serves its lifecycle RPC.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub agent_rpc: SocketAddr,
    /// Where the local agent's data plane serves capsule traffic.
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub agent_proxy: SocketAddr,
    /// Do not start an agent (hosts register themselves).
    #[arg(long)]
    pub no_agent: bool,
    /// Return once everything is up (logs in `$WARREN_DIR/logs/warren.log`).
    #[arg(long)]
    pub detach: bool,
    /// The first administrator's email.
    #[arg(long, default_value = "admin@warren.local")]
    pub admin_email: String,
    /// Template used when a create names none. A built-in one (`minimal`:
    /// Debian, about a minute to build the first time; `tiny`) is built
    /// before the agent starts; `minimal` falls back to `tiny` if it cannot
    /// be built here.
    #[arg(long, env = "WARREN_DEFAULT_TEMPLATE", default_value = "minimal")]
    pub default_template: String,
}

/// The local host's registration, kept across runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalHost {
    host_id: String,
    host_token: String,
    agent_token: String,
}

fn pid_path(dir: &Path) -> PathBuf {
    dir.join("warren.pid")
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn running_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_path(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    Ok(())
}

/// The agent writes its own `logs/agent.log` (reopened on SIGHUP); what it
/// prints to stderr (the same lines, and anything before logging starts)
/// goes beside it.
const AGENT_STDERR: &str = "agent.stderr";

/// The `warren-agent` command for the local host (more flags through
/// `WARREN_AGENT_ARGS`):
/// - flags `--data-dir DIR --rpc-listen ADDR --proxy-listen ADDR`;
/// - env `WARREN_DIR`, `WARREN_AGENT_TOKEN` (the bearer token control
///   presents on RPCs and the data plane's relay token), `WARREN_CONTROL_URL`,
///   `WARREN_HOST_ID`, `WARREN_HOST_TOKEN` (with which the agent sends its
///   own heartbeats), `LOG_LEVEL`.
fn agent_command(
    bin: &Path,
    dir: &Path,
    args: &UpArgs,
    control_url: &str,
    host: &LocalHost,
) -> Command {
    let mut c = Command::new(bin);
    c.arg("--data-dir")
        .arg(dir)
        .arg("--rpc-listen")
        .arg(args.agent_rpc.to_string())
        .arg("--proxy-listen")
        .arg(args.agent_proxy.to_string());
    if let Ok(extra) = std::env::var("WARREN_AGENT_ARGS") {
        c.args(extra.split_whitespace());
    }
    c.env("WARREN_DIR", dir)
        .env("WARREN_AGENT_TOKEN", &host.agent_token)
        .env("WARREN_CONTROL_URL", control_url)
        .env("WARREN_HOST_ID", &host.host_id)
        .env("WARREN_HOST_TOKEN", &host.host_token);
    c
}

fn control_command(dir: &Path, db_url: &str, listen: SocketAddr, template: &str) -> Command {
    let mut c = Command::new(sibling("warren-control"));
    c.env("DATABASE_URL", db_url)
        .env("WARREN_LISTEN", listen.to_string())
        .env("WARREN_DIR", dir)
        .env("WARREN_DEFAULT_TEMPLATE", template);
    c
}

/// Builds the default template if it is a built-in one not built yet
/// (`warren-agent template build`, output in `logs/template.log`), and
/// returns the template creates get by default: `tiny` when `minimal`
/// cannot be built here (no debootstrap, no apt mirror), said on stderr.
async fn default_template(dir: &Path, agent_bin: &Path, wanted: &str) -> anyhow::Result<String> {
    if !matches!(wanted, "minimal" | "tiny") {
        // A template of the operator's own: the agent checks it on create.
        return Ok(wanted.to_owned());
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join("template.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let p = Progress::start(&format!(
        "preparing the `{wanted}` template (the first time `minimal` takes about a minute)"
    ));
    let status = Command::new(agent_bin)
        .arg("template")
        .arg("--data-dir")
        .arg(dir)
        .args(["build", wanted])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .stdin(Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => {
            p.done("ready");
            Ok(wanted.to_owned())
        }
        Ok(s) if wanted != "tiny" => {
            p.done(&format!(
                "failed ({s}; see {}); creates default to `tiny`",
                log_path.display()
            ));
            Ok("tiny".to_owned())
        }
        Ok(s) => bail!("building `tiny` failed ({s}); see {}", log_path.display()),
        Err(e) => {
            p.done(&format!("skipped ({e}: {})", agent_bin.display()));
            Ok(wanted.to_owned())
        }
    }
}

/// Starts `cmd` with output appended to `logs/<name>.log`.
fn spawn(dir: &Path, name: &str, mut cmd: Command) -> anyhow::Result<Child> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))?;
    cmd.stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().with_context(|| format!("starting {name}"))
}

async fn wait_healthy(url: &str, secs: u64) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(r) = http.get(format!("{url}/health")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{url} did not become healthy in {secs}s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The database: `DATABASE_URL`, or the private cluster (started here).
async fn database(dir: &Path) -> anyhow::Result<(String, Option<PgCluster>)> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok((url, None));
    }
    let pg = PgCluster::new(&dir.join("pg"), 5432)?;
    if !pg.initialized() {
        let p = Progress::start("initializing Postgres");
        pg.init()?;
        p.done("done");
    }
    if !pg.running() {
        let p = Progress::start("starting Postgres");
        pg.start(false)?;
        p.done("done");
    }
    let admin = sqlx::PgPool::connect(&pg.url("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'warren')")
            .fetch_one(&admin)
            .await?;
    if !exists {
        sqlx::query("CREATE DATABASE warren")
            .execute(&admin)
            .await?;
    }
    admin.close().await;
    Ok((pg.url("warren"), Some(pg)))
}

/// First run: an administrator and an API key.
async fn first_run(
    dir: &Path,
    db_url: &str,
    url: &str,
    email: &str,
) -> anyhow::Result<Credentials> {
    if let Some(c) = read_credentials(dir) {
        return Ok(Credentials {
            url: url.to_string(),
            ..c
        });
    }
    let mut cfg = crate::config::ControlConfig::for_database(db_url);
    cfg.no_background = true;
    let app = crate::server::state(cfg).await?;
    let password = crate::ids::new_secret(20);
    let (_, team) = crate::api::auth::create_user(&app, email, "Administrator", &password, true)
        .await
        .map_err(|e| anyhow::anyhow!("creating the administrator: {e}"))?;
    let (_, key) = crate::api::api_keys::create_key(&app, &team, None, "warren up", None)
        .await
        .map_err(|e| anyhow::anyhow!("creating the API key: {e}"))?;
    let creds = Credentials {
        url: url.to_string(),
        api_key: key,
        admin_email: email.to_string(),
        admin_password: password,
    };
    write_private(
        &credentials_path(dir),
        &serde_json::to_string_pretty(&creds)?,
    )?;
    Ok(creds)
}

async fn admin_session(url: &str, creds: &Credentials) -> anyhow::Result<String> {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/auth/login"))
        .json(&json!({ "email": creds.admin_email, "password": creds.admin_password }))
        .send()
        .await?
        .json()
        .await?;
    v["token"]
        .as_str()
        .map(String::from)
        .context("administrator login failed")
}

/// Registers the local host once (its tokens kept in `host.json`).
async fn local_host(
    dir: &Path,
    url: &str,
    creds: &Credentials,
    args: &UpArgs,
) -> anyhow::Result<LocalHost> {
    let path = dir.join("host.json");
    if let Some(h) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
    {
        return Ok(h);
    }
    let http = reqwest::Client::new();
    let jwt = admin_session(url, creds).await?;
    let created: serde_json::Value = http
        .post(format!("{url}/v1/hosts"))
        .bearer_auth(&jwt)
        .json(&json!({ "type": "regular", "provider": "local" }))
        .send()
        .await?
        .json()
        .await?;
    let agent_token = crate::ids::new_secret(40);
    let reg: serde_json::Value = http
        .post(format!("{url}/v1/hosts/register"))
        .json(&json!({
            "token": created["registration_token"],
            "address": args.agent_rpc.to_string(),
            "proxy_address": args.agent_proxy.to_string(),
            "agent_token": agent_token,
            "cpu_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }))
        .send()
        .await?
        .json()
        .await?;
    let host = LocalHost {
        host_id: reg["host"]["id"]
            .as_str()
            .context("host registration failed")?
            .into(),
        host_token: reg["token"]
            .as_str()
            .context("host registration failed")?
            .into(),
        agent_token,
    };
    write_private(&path, &serde_json::to_string_pretty(&host)?)?;
    Ok(host)
}

fn banner(creds: &Credentials) {
    println!();
    println!("Warren is up.");
    println!("  API:      {}", creds.url);
    println!("  Docs:     {}/docs", creds.url);
    println!("  API key:  {}", creds.api_key);
    println!(
        "  Admin:    {} / {}",
        creds.admin_email, creds.admin_password
    );
    println!();
    println!(
        "  export WRENN_BASE_URL={} WRENN_API_KEY={}",
        creds.url, creds.api_key
    );
    println!(
        "  export WARREN_URL={} WARREN_API_KEY={}",
        creds.url, creds.api_key
    );
}

pub async fn up(dir: &Path, args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(pid) = running_pid(dir) {
        println!("warren is already running (pid {pid})");
        if let Some(c) = read_credentials(dir) {
            banner(&c);
        }
        return Ok(());
    }
    if args.detach {
        return detach(dir, &args).await;
    }
    std::fs::write(pid_path(dir), std::process::id().to_string())?;
    let result = run(dir, &args).await;
    let _ = std::fs::remove_file(pid_path(dir));
    result
}

/// Re-runs `warren up` in the background and waits until it is ready.
async fn detach(dir: &Path, args: &UpArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--dir")
        .arg(dir)
        .arg("up")
        .arg("--listen")
        .arg(args.listen.to_string());
    cmd.arg("--agent-rpc").arg(args.agent_rpc.to_string());
    cmd.arg("--agent-proxy").arg(args.agent_proxy.to_string());
    cmd.arg("--admin-email").arg(&args.admin_email);
    cmd.arg("--default-template").arg(&args.default_template);
    if let Some(b) = &args.agent_bin {
        cmd.arg("--agent-bin").arg(b);
    }
    if args.no_agent {
        cmd.arg("--no-agent");
    }
    // SAFETY: setsid in the child before exec only detaches it from our
    // session; it touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = spawn(dir, "warren", cmd)?;
    let p = Progress::start("starting warren");
    let url = format!("http://{}", args.listen);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(st) = child.try_wait()? {
            bail!(
                "warren up exited ({st}); see {}",
                dir.join("logs/warren.log").display()
            );
        }
        let ready = dir.join("ready").exists();
        if ready && wait_healthy(&url, 1).await.is_ok() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "warren did not come up in time; see {}",
                dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    p.done("up");
    // The child lives on in its own session.
    std::mem::forget(child);
    if let Some(c) = read_credentials(dir) {
        banner(&c);
    }
    Ok(())
}

/// Waits until the control plane has synced the local host from its agent
/// (capacity, backend, templates), so the first create after `up` can be
/// placed.
async fn wait_host_synced(url: &str, creds: &Credentials, host_id: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let jwt = admin_session(url, creds).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let host: serde_json::Value = http
            .get(format!("{url}/v1/hosts/{host_id}"))
            .bearer_auth(&jwt)
            .send()
            .await?
            .json()
            .await?;
        if host["memory_mb"].as_i64().unwrap_or(0) > 0 && host["backend"].is_string() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the agent did not report to the control plane in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(dir: &Path, args: &UpArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(dir.join("ready"));
    let (db_url, pg) = database(dir).await?;
    let url = format!("http://{}", args.listen);
    let creds = first_run(dir, &db_url, &url, &args.admin_email).await?;

    let agent_bin = args
        .agent_bin
        .clone()
        .unwrap_or_else(|| sibling("warren-agent"));
    let template = if args.no_agent {
        args.default_template.clone()
    } else {
        default_template(dir, &agent_bin, &args.default_template).await?
    };

    let p = Progress::start("starting the control plane");
    let mut control = spawn(
        dir,
        "control",
        control_command(dir, &db_url, args.listen, &template),
    )?;
    wait_healthy(&url, 60).await?;
    p.done("listening");
    let host = if args.no_agent {
        None
    } else {
        Some(local_host(dir, &url, &creds, args).await?)
    };
    let mut agent = match &host {
        None => None,
        Some(h) => match spawn(
            dir,
            AGENT_STDERR,
            agent_command(&agent_bin, dir, args, &url, h),
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!(
                    "warning: {e:#} ({}); capsules need an agent",
                    agent_bin.display()
                );
                None
            }
        },
    };
    if let (Some(h), Some(_)) = (&host, &agent) {
        let p = Progress::start("waiting for the agent to report");
        wait_host_synced(&url, &creds, &h.host_id).await?;
        p.done("host online");
    }
    std::fs::write(dir.join("ready"), b"")?;
    banner(&creds);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        if let Some(st) = control.try_wait()? {
            eprintln!("warren-control exited ({st}); restarting");
            control = spawn(
                dir,
                "control",
                control_command(dir, &db_url, args.listen, &template),
            )?;
        }
        if let (Some(a), Some(host)) = (agent.as_mut(), &host) {
            if let Some(st) = a.try_wait()? {
                eprintln!("warren-agent exited ({st}); restarting");
                agent = spawn(
                    dir,
                    AGENT_STDERR,
                    agent_command(&agent_bin, dir, args, &url, host),
                )
                .ok();
            }
        }
    }
    eprintln!("stopping");
    let _ = std::fs::remove_file(dir.join("ready"));
    for child in [agent.as_mut(), Some(&mut control)].into_iter().flatten() {
        if let Some(pid) = child.id() {
            // SAFETY: sends SIGTERM to a child we started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
        let _ = child.kill().await;
    }
    if let Some(pg) = pg {
        pg.stop(false)?;
    }
    Ok(())
}

pub async fn down(dir: &Path) -> anyhow::Result<()> {
    let Some(pid) = running_pid(dir) else {
        println!("warren is not running");
        return Ok(());
    };
    // SAFETY: SIGTERM to the pid `warren up` recorded.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let p = Progress::start("stopping warren");
    for _ in 0..300 {
        if !alive(pid) {
            p.done("stopped");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("warren (pid {pid}) did not stop within 30 s")
}

pub async fn status(dir: &Path, url: Option<String>, key: Option<String>) -> anyhow::Result<i32> {
    let creds = read_credentials(dir);
    let url = url
        .or_else(|| creds.as_ref().map(|c| c.url.clone()))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    match running_pid(dir) {
        Some(pid) => println!("warren up: running (pid {pid})"),
        None => println!("warren up: not running here"),
    }
    let healthy = wait_healthy(&url, 0).await.is_ok();
    println!(
        "control:   {url} {}",
        if healthy { "healthy" } else { "unreachable" }
    );
    if !healthy {
        return Ok(1);
    }
    let http = reqwest::Client::new();
    let req = http.get(format!("{url}/v1/hosts"));
    let req = match (&creds, key) {
        (_, Some(k)) => req.header("X-API-Key", k),
        (Some(c), None) => req.bearer_auth(admin_session(&url, c).await?),
        (None, None) => return Ok(0),
    };
    let hosts: serde_json::Value = req.send().await?.json().await?;
    for h in hosts.as_array().into_iter().flatten() {
        println!(
            "host:      {} {} {} ({} cores, {} MiB, backend {})",
            h["id"].as_str().unwrap_or("?"),
            h["status"].as_str().unwrap_or("?"),
            h["address"].as_str().unwrap_or("-"),
            h["cpu_cores"],
            h["memory_mb"],
            h["backend"].as_str().unwrap_or("?"),
        );
    }
    Ok(0)
}
