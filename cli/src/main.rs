//! `warren`: the Warren command line.

use clap::Parser;
use warren_cli::{Cli, main as run};

#[tokio::main]
async fn main() {
    // Warnings only unless `LOG_LEVEL` says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("warren: {e:#}");
            std::process::exit(1);
        }
    }
}
