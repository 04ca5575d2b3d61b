//! The engine's settings, with the defaults an operator would expect.

use std::net::SocketAddr;
use std::time::Duration;

/// How the relay listens and behaves, whatever the policy.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address every core listens on (`SO_REUSEPORT`). Port 0 picks one.
    pub listen: SocketAddr,
    /// Number of cores (runtimes, each with its own listener); at least 1.
    pub cores: usize,
    /// Time allowed for a whole request head, and for a TLS handshake
    /// (slowloris guard).
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request, and any
    /// relay may wait for bytes, before it is closed.
    pub idle_timeout: Duration,
    /// Time an upgraded (WebSocket) tunnel may carry no byte either way
    /// before it is closed.
    pub tunnel_idle_timeout: Duration,
    /// Time allowed for one upstream connect attempt.
    pub connect_timeout: Duration,
    /// Waits between dial attempts after "connection refused" (one attempt
    /// more than waits).
    pub dial_backoff: Vec<Duration>,
    /// Largest request head accepted (431 beyond).
    pub max_head_bytes: usize,
    /// Idle upstream connections kept per pool key and core.
    pub upstream_idle_max: usize,
    /// How long an idle upstream connection is kept for reuse.
    pub upstream_idle_timeout: Duration,
    /// Wait for the upstream's `100 Continue` before sending our own.
    pub expect_continue_timeout: Duration,
    /// Listen backlog per core.
    pub backlog: i32,
    /// Client connections open at once, over all cores (beyond: closed at
    /// accept with a 503 page).
    pub max_connections: usize,
    /// Client connections open at once from one IP address.
    pub max_connections_per_ip: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5007)),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(620),
            tunnel_idle_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            dial_backoff: vec![Duration::from_millis(100), Duration::from_millis(200)],
            max_head_bytes: 32 << 10,
            upstream_idle_max: 64,
            upstream_idle_timeout: Duration::from_secs(60),
            expect_continue_timeout: Duration::from_secs(1),
            backlog: 4096,
            max_connections: 200_000,
            max_connections_per_ip: 20_000,
        }
    }
}
