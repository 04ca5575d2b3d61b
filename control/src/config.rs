//! warren-control's configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ControlConfig {
    /// Address the REST API listens on.
    #[arg(long, env = "WARREN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Postgres connection string.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Maximum Postgres connections of this replica.
    #[arg(long, env = "WARREN_DB_POOL", default_value_t = 20)]
    pub db_pool: u32,

    /// JWT signing secret. Unset: one is made on first start and stored in
    /// the database, so every replica shares it.
    #[arg(long, env = "WARREN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of a login session (JWT), in seconds.
    #[arg(long, env = "WARREN_JWT_TTL", default_value_t = 6 * 3600)]
    pub jwt_ttl_secs: u64,

    /// Template used when a create names none (`warren up` falls back to
    /// `tiny` where `minimal` cannot be built).
    #[arg(long, env = "WARREN_DEFAULT_TEMPLATE", default_value = "minimal")]
    pub default_template: String,

    /// A host is marked unreachable (its capsules missing) after this many
    /// seconds without a heartbeat.
    #[arg(long, env = "WARREN_HEARTBEAT_TIMEOUT", default_value_t = 30)]
    pub heartbeat_timeout_secs: u64,

    /// How often each host's capsules, templates and metrics are pulled.
    #[arg(long, env = "WARREN_SYNC_INTERVAL", default_value_t = 10)]
    pub sync_interval_secs: u64,

    /// How long a lifecycle call to an agent may take before the reconciler
    /// takes the operation over.
    #[arg(long, env = "WARREN_AGENT_TIMEOUT", default_value_t = 60)]
    pub agent_timeout_secs: u64,

    /// vCPUs a host may hand out per physical core.
    #[arg(long, env = "WARREN_CPU_OVERCOMMIT", default_value_t = 4.0)]
    pub cpu_overcommit: f64,

    /// Memory a host may hand out per MiB it has.
    #[arg(long, env = "WARREN_MEMORY_OVERCOMMIT", default_value_t = 1.0)]
    pub memory_overcommit: f64,

    /// Largest vCPU count one capsule may ask for.
    #[arg(long, env = "WARREN_MAX_VCPUS", default_value_t = 16)]
    pub max_vcpus: u32,

    /// Largest memory one capsule may ask for, in MiB.
    #[arg(long, env = "WARREN_MAX_MEMORY_MB", default_value_t = 65536)]
    pub max_memory_mb: u32,

    /// Largest upload through `files/write` (the streamed endpoint has no
    /// limit), in bytes.
    #[arg(long, env = "WARREN_MAX_UPLOAD", default_value_t = 100 << 20)]
    pub max_upload_bytes: u64,

    /// Largest JSON request body, in bytes.
    #[arg(long, env = "WARREN_MAX_BODY", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Builds this replica runs at once (0: this replica runs none).
    #[arg(long, env = "WARREN_BUILD_WORKERS", default_value_t = 2)]
    pub build_workers: usize,

    /// A build worker holds its build for this many seconds and renews the
    /// lease while it works; a dead worker's build is taken over after it.
    #[arg(long, env = "WARREN_BUILD_LEASE", default_value_t = 30)]
    pub build_lease_secs: u64,

    /// Limit of a RUN step that sets no `--timeout`, in seconds.
    #[arg(long, env = "WARREN_BUILD_STEP_TIMEOUT", default_value_t = 3600)]
    pub build_step_timeout_secs: u64,

    /// Largest build archive upload, in bytes.
    #[arg(long, env = "WARREN_MAX_BUILD_ARCHIVE", default_value_t = 256 << 20)]
    pub max_build_archive_bytes: usize,

    /// Cached build layers kept per team (least recently used go first).
    #[arg(long, env = "WARREN_BUILD_CACHE_LAYERS", default_value_t = 200)]
    pub build_cache_layers: i64,

    /// Disable the background loops (host monitor, reconciler). For tests
    /// that drive them by hand.
    #[arg(long, hide = true)]
    pub no_background: bool,
}

impl ControlConfig {
    /// Defaults (and environment) for the database at `url`.
    pub fn for_database(url: &str) -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            cfg: ControlConfig,
        }
        Wrapper::parse_from(["warren-control", "--database-url", url]).cfg
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_timeout_secs)
    }

    pub fn sync_interval(&self) -> Duration {
        Duration::from_secs(self.sync_interval_secs)
    }

    pub fn build_lease(&self) -> Duration {
        Duration::from_secs(self.build_lease_secs.max(3))
    }

    pub fn agent_timeout(&self) -> Duration {
        Duration::from_secs(self.agent_timeout_secs)
    }
}
