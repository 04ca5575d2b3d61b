//! `warren`: the Warren command line.

use clap::Parser;
use warren_control::cli::{Cli, main as run};

#[tokio::main]
async fn main() {
    warren_control::server::init_logging_quiet();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("warren: {e:#}");
            std::process::exit(1);
        }
    }
}
