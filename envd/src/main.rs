//! The `envd` binary: flags, logging, signals, and the server.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use envd::{
    server,
    state::{Defaults, Envd},
    users::Accounts,
};
use tokio::signal::unix::{SignalKind, signal};

/// Warren's in-capsule daemon (E2B envd protocol).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Port to listen on.
    #[arg(long, env = "ENVD_PORT", default_value_t = 49983)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "ENVD_HOST", default_value = "0.0.0.0")]
    host: std::net::IpAddr,
    /// User for requests that name none (until `/init` sets another).
    #[arg(long, env = "ENVD_DEFAULT_USER", default_value = "root")]
    default_user: String,
    /// Working directory for requests that name none (else the user's home).
    #[arg(long, env = "ENVD_DEFAULT_WORKDIR")]
    default_workdir: Option<PathBuf>,
    /// Log as JSON lines instead of text (level from LOG_LEVEL).
    #[arg(long)]
    log_json: bool,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    let defaults = Defaults {
        user: args.default_user,
        workdir: args.default_workdir,
        ..Defaults::default()
    };
    let envd = Envd::new(Accounts::default(), defaults).context("starting the process reaper")?;
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let is_init = std::process::id() == 1;
    tracing::info!(%addr, version = envd::http::ENVD_VERSION, is_init, "envd listening");

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
    };
    server::serve(listener, envd, shutdown).await;
    if is_init {
        // As init, take the capsule's processes down with us, politely first.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-1),
            nix::sys::signal::Signal::SIGTERM,
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-1),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    Ok(())
}
