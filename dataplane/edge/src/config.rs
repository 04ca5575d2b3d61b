//! The proxy's settings, with the defaults an operator would expect.

use std::net::SocketAddr;
use std::time::Duration;

use crate::table::Secret;

/// How the proxy listens and behaves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address every core listens on (`SO_REUSEPORT`). Port 0 picks one.
    pub listen: SocketAddr,
    /// Number of cores (runtimes, each with its own listener); at least 1.
    pub cores: usize,
    /// Enables host routing: `{port}-{id}.{domain}`.
    pub domain: Option<String>,
    /// The agent's internal token: requests carrying it as
    /// `X-Warren-Agent-Token` are internal (control plane → envd).
    pub agent_token: Option<Secret>,
    /// Time allowed for a whole request head (slowloris guard).
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request, and any
    /// relay may wait for bytes, before it is closed.
    pub idle_timeout: Duration,
    /// Time allowed for one upstream connect attempt.
    pub connect_timeout: Duration,
    /// Waits between dial attempts after "connection refused" (one attempt
    /// more than waits).
    pub dial_backoff: Vec<Duration>,
    /// Largest request head accepted (431 beyond).
    pub max_head_bytes: usize,
    /// Value of `X-Forwarded-Proto` (`https` behind a TLS terminator).
    pub forwarded_proto: String,
    /// Idle upstream connections kept per capsule port and core.
    pub upstream_idle_max: usize,
    /// How long an idle upstream connection is kept for reuse.
    pub upstream_idle_timeout: Duration,
    /// Wait for the upstream's `100 Continue` before sending our own.
    pub expect_continue_timeout: Duration,
    /// Listen backlog per core.
    pub backlog: i32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5007)),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            domain: None,
            agent_token: None,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(620),
            connect_timeout: Duration::from_secs(5),
            dial_backoff: vec![Duration::from_millis(100), Duration::from_millis(200)],
            max_head_bytes: 32 << 10,
            forwarded_proto: "http".into(),
            upstream_idle_max: 64,
            upstream_idle_timeout: Duration::from_secs(60),
            expect_continue_timeout: Duration::from_secs(1),
            backlog: 4096,
        }
    }
}
