//! `warren`: the Warren command line.

use clap::Parser;
use warren_cli::{Cli, main as run};

#[tokio::main]
async fn main() {
    // Warnings only unless `LOG_LEVEL` says otherwise.
    warren_control::logging::init("warn", None);
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("warren: {e:#}");
            std::process::exit(1);
        }
    }
}
