//! The edge's settings: the engine's, plus what the policy decides with.

use std::net::SocketAddr;
use std::time::Duration;

use warren_relay::RelayConfig;

use crate::apirate::ApiRateConfig;
use crate::table::Secret;

/// How the edge routes and admits.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The engine: listen address, cores, timeouts, connection caps.
    pub relay: RelayConfig,
    /// Host routing: `{port}-{id}.{domain}`; `None` takes any
    /// `{port}-{id}.…` host (the name an SDK composes from the API address).
    pub domain: Option<String>,
    /// The agent's internal token: requests carrying it as
    /// `X-Warren-Agent-Token` are the control plane's (envd calls).
    pub agent_token: Option<Secret>,
    /// Where every request that names no capsule goes (the control plane's
    /// private address); `None` answers them with `no_route`.
    pub control: Option<SocketAddr>,
    /// `X-Forwarded-Proto` for upstreams; `None`: `https` on TLS
    /// connections, `http` otherwise (set it behind a TLS terminator).
    pub forwarded_proto: Option<String>,
    /// Longest a request waits for a capsule it woke up.
    pub resume_wait: Duration,
    /// Request rate per API key on the API passthrough (`None`: unlimited).
    pub api_rate: Option<ApiRateConfig>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            relay: RelayConfig::default(),
            domain: None,
            agent_token: None,
            control: None,
            forwarded_proto: None,
            resume_wait: Duration::from_secs(30),
            api_rate: Some(ApiRateConfig::default()),
        }
    }
}
