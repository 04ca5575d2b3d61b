//! `warren-control`: the Warren control plane server.

use clap::Parser;
use warren_control::config::ControlConfig;

/// The Warren control plane: Wrenn-compatible REST API on Postgres.
#[derive(Debug, Parser)]
#[command(name = "warren-control", version)]
struct Cli {
    #[command(flatten)]
    config: ControlConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    warren_control::server::init_logging();
    let cli = Cli::parse();
    warren_control::server::run(cli.config).await
}
