//! A private Postgres cluster in a directory: `initdb` once, `pg_ctl`
//! start and stop, reachable over a Unix socket in the same directory (no
//! TCP port to collide with). Used by `warren up` when `DATABASE_URL` is
//! unset, and by the tests for their throwaway databases.
//!
//! Postgres refuses to run as root; as root, the cluster runs as the
//! `postgres` system user (Debian's `postgresql` package makes it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Where Debian installs each Postgres version's binaries.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

#[derive(Debug, Clone)]
pub struct PgCluster {
    /// Holds `data/` and the socket.
    pub dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    pub port: u16,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn newest_debian_bin() -> Option<PathBuf> {
    std::fs::read_dir(DEBIAN_ROOT)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin)
}

/// The Postgres binaries directory: `WARREN_PG_BIN`, else Debian's newest.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("WARREN_PG_BIN")
        .map(PathBuf::from)
        .or_else(newest_debian_bin)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_ROOT));
    if !bin.join("initdb").exists() {
        bail!(
            "Postgres binaries not found in {} (install postgresql, or set WARREN_PG_BIN or DATABASE_URL)",
            bin.display()
        );
    }
    Ok(bin)
}

impl PgCluster {
    /// A cluster in `dir` (created by [`Self::init`] if new).
    pub fn new(dir: &Path, port: u16) -> anyhow::Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            bin: bin_dir()?,
            run_as: is_root().then(|| "postgres".to_string()),
            port,
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .cmd(tool)
            .args(args)
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub fn initialized(&self) -> bool {
        self.data().join("PG_VERSION").exists()
    }

    /// `initdb` (trust auth over the socket only; the directory is private).
    pub fn init(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        if let Some(user) = &self.run_as {
            let st = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&self.dir)
                .status()?;
            if !st.success() {
                bail!("chown {} to {user} failed", self.dir.display());
            }
        }
        let data = self.data();
        self.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        )
    }

    /// Starts the server (`fast`: no fsync, for throwaway clusters).
    pub fn start(&self, fast: bool) -> anyhow::Result<()> {
        let sock = self.dir.to_string_lossy().to_string();
        let mut opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{sock}' -p {} -c max_connections=300",
            self.port
        );
        if fast {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let log = self.dir.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    pub fn running(&self) -> bool {
        self.cmd("pg_ctl")
            .args(["-D", &self.data().to_string_lossy(), "status"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    pub fn stop(&self, immediate: bool) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                if immediate { "immediate" } else { "fast" },
                "-w",
                "stop",
            ],
        )
    }

    /// Connection URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost/{db}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }
}
