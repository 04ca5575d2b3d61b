//! `warren-cli`: the `warren` command line. `up` / `down` / `status` run a
//! whole installation on one machine ([`up`]: a private Postgres,
//! `warren-control` and the local `warren-agent`); the other commands are
//! an ordinary client of any control plane's REST API ([`commands`],
//! [`terminal`] for `capsule pty`, [`build`] for `template build`), typed
//! with the server's own request and response types (the
//! `warren-api-types` crate) through [`client`]. It sits on top of the
//! map (`docs/architecture.md`): it uses the control plane's library only
//! for `up`'s first-run setup and its Postgres cluster.

pub mod build;
pub mod client;
pub mod commands;
pub mod progress;
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
            let api = client::Api::resolve(&cli.dir, cli.url, cli.api_key)?;
            commands::capsule(&api, cmd).await
        }
        Command::Template(cmd) => {
            let api = client::Api::resolve(&cli.dir, cli.url, cli.api_key)?;
            commands::template(&api, cmd).await
        }
    }
}
