//! `warren-agent`: the Warren host agent. For now it runs the data plane
//! proxy standalone (`warren-agent proxy --routes FILE`), fed by a routes
//! file, so the proxy can run and be benchmarked on its own.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use warren_dataplane::proxy::{Proxy, ProxyConfig, RouteTable, Routes, Secret, metrics};

#[derive(Debug, Parser)]
#[command(
    name = "warren-agent",
    version,
    about = "The Warren host agent: capsules, network slots and the io_uring data plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data plane proxy alone, routing from a JSON routes file
    /// (reloaded when it changes and on SIGHUP).
    Proxy(ProxyArgs),
}

#[derive(Debug, clap::Args)]
struct ProxyArgs {
    /// Routes file: {"capsules": {"<id>": {"address": "10.11.0.2", "state": "running",
    /// "access_token": null, "envd_access_token": null,
    /// "limits": {"bandwidth": {"size": 1048576, "one_time_burst": 0, "refill_time": 1000}}}}}
    #[arg(long, env = "WARREN_ROUTES")]
    routes: PathBuf,
    /// Address the proxy listens on (every core binds it with SO_REUSEPORT).
    #[arg(long, default_value = "0.0.0.0:5007", env = "WARREN_PROXY_LISTEN")]
    listen: SocketAddr,
    /// Admin address serving Prometheus metrics at /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:5008", env = "WARREN_ADMIN_LISTEN")]
    admin: SocketAddr,
    /// Cores (one io_uring runtime each); default: all available.
    #[arg(long, env = "WARREN_PROXY_CORES")]
    cores: Option<usize>,
    /// Domain for host routing ({port}-{id}.{domain}).
    #[arg(long, env = "WARREN_DOMAIN")]
    domain: Option<String>,
    /// File holding the agent's internal token (X-Warren-Agent-Token);
    /// without it (or WARREN_AGENT_TOKEN) no request is internal.
    #[arg(long, env = "WARREN_AGENT_TOKEN_FILE")]
    agent_token_file: Option<PathBuf>,
    /// Time allowed for a request head, in seconds.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Keep-alive and relay idle timeout, in seconds.
    #[arg(long, default_value_t = 620.0)]
    idle_timeout: f64,
    /// Largest request head accepted, in bytes (431 beyond).
    #[arg(long, default_value_t = 32 * 1024)]
    max_head_bytes: usize,
    /// X-Forwarded-Proto sent upstream (https behind a TLS terminator).
    #[arg(long, default_value = "http")]
    forwarded_proto: String,
}

fn main() -> anyhow::Result<()> {
    let filter = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Proxy(args) => run_proxy(args),
    }
}

fn seconds(value: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{what} must be a non-negative number of seconds"))
}

fn agent_token(file: Option<&Path>) -> anyhow::Result<Option<Secret>> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading agent token file {}", path.display()))?,
        None => match std::env::var("WARREN_AGENT_TOKEN") {
            Ok(token) => token,
            Err(_) => return Ok(None),
        },
    };
    let token = token.trim();
    anyhow::ensure!(!token.is_empty(), "the agent token is empty");
    Ok(Some(Secret::new(token)))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let table = RouteTable::from_file(&args.routes)?;
    tracing::info!(capsules = table.len(), routes = %args.routes.display(), "routes loaded");
    let mut config = ProxyConfig {
        listen: args.listen,
        domain: args.domain,
        agent_token: agent_token(args.agent_token_file.as_deref())?,
        header_timeout: seconds(args.header_timeout, "header-timeout")?,
        idle_timeout: seconds(args.idle_timeout, "idle-timeout")?,
        max_head_bytes: args.max_head_bytes,
        forwarded_proto: args.forwarded_proto,
        ..ProxyConfig::default()
    };
    if let Some(cores) = args.cores {
        anyhow::ensure!(cores > 0, "--cores must be at least 1");
        config.cores = cores;
    }
    let proxy = Arc::new(Proxy::start(config, Arc::new(Routes::new(table)))?);
    let admin = TcpListener::bind(args.admin)
        .with_context(|| format!("binding admin address {}", args.admin))?;
    let for_admin = Arc::clone(&proxy);
    metrics::serve_admin(admin, Arc::new(move || for_admin.render_metrics()))?;
    tracing::info!(listen = %proxy.local_addr(), admin = %args.admin, "warren-agent proxy running");

    let reload = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGHUP, Arc::clone(&reload))?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(SIGINT, Arc::clone(&stop))?;
    let mut seen = modified(&args.routes);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let now = modified(&args.routes);
        if reload.swap(false, Ordering::Relaxed) || now != seen {
            seen = now;
            match RouteTable::from_file(&args.routes) {
                Ok(table) => {
                    tracing::info!(capsules = table.len(), "routes reloaded");
                    proxy.routes().publish(table);
                }
                Err(error) => tracing::error!(%error, "keeping the previous routes"),
            }
        }
    }
    tracing::info!("shutting down");
    proxy.shutdown();
    Ok(())
}
