//! `warren-control`: the Warren control plane server.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use warren_control::Server;
use warren_control::config::ControlConfig;

/// The Warren control plane: Wrenn-compatible REST API on Postgres.
#[derive(Debug, Parser)]
#[command(name = "warren-control", version)]
struct Cli {
    /// Data directory: the log is written to `logs/control.log` in it.
    #[arg(long, env = "WARREN_DIR", default_value = "/var/lib/warren")]
    dir: PathBuf,
    #[command(flatten)]
    config: ControlConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    warren_control::logging::init(&cli.dir)
        .with_context(|| format!("opening the log file under {}", cli.dir.display()))?;
    Server::builder(cli.config).build().await?.run().await
}
