//! The `warren` command line: `up` / `down` / `status` for a local
//! installation ([`up`]), and user commands against any control plane
//! ([`commands`], [`terminal`] for `capsule pty`).

pub mod commands;
pub mod pg;
pub mod terminal;
pub mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "warren",
    version,
    about = "Warren: run untrusted code in capsules"
)]
pub struct Cli {
    /// Data directory of a local installation.
    #[arg(
        long,
        env = "WARREN_DIR",
        default_value = "/var/lib/warren",
        global = true
    )]
    pub dir: PathBuf,

    /// Control plane URL (default: the local installation's).
    #[arg(long, env = "WARREN_URL", global = true)]
    pub url: Option<String>,

    /// API key (default: the local installation's first key).
    #[arg(long, env = "WARREN_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start Postgres (unless DATABASE_URL is set), the control plane and
    /// the local agent, and keep them running.
    Up(up::UpArgs),
    /// Stop what `warren up` started.
    Down,
    /// Show whether the local installation runs, and its hosts.
    Status,
    /// Work with capsules.
    #[command(subcommand)]
    Capsule(commands::CapsuleCmd),
    /// Work with templates.
    #[command(subcommand)]
    Template(commands::TemplateCmd),
}

pub async fn main(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Up(args) => up::up(&cli.dir, args).await.map(|()| 0),
        Command::Down => up::down(&cli.dir).await.map(|()| 0),
        Command::Status => up::status(&cli.dir, cli.url, cli.api_key).await,
        Command::Capsule(cmd) => {
            let api = commands::Api::resolve(&cli.dir, cli.url, cli.api_key)?;
            commands::capsule(&api, cmd).await
        }
        Command::Template(cmd) => {
            let api = commands::Api::resolve(&cli.dir, cli.url, cli.api_key)?;
            commands::template(&api, cmd).await
        }
    }
}
