//! `warren-relay`: the data plane's HTTP/1.1 relay engine, policy-agnostic.
//!
//! It accepts client connections on every data-plane core
//! (`warren-runtime`), terminates TLS when configured ([`tls`]), reads and
//! checks request heads ([`head`]), asks a [`Policy`] where each request
//! goes ([`policy`]: the seam; Warren's own policy is `warren-edge`), then
//! relays ([`exchange`]): upstream connections pooled per key
//! ([`upstream`]), bodies spliced between plain sockets ([`body`], [`buf`]),
//! `Upgrade` tunnels, `100-continue`, dial retry. Around it: connection caps
//! and the open-file limit ([`limits`]), per-key counters with drain and
//! evict ([`tracking`]), token buckets ([`ratelimit`]), typed error pages
//! ([`errors`]) and OpenMetrics counters ([`metrics`]). [`Relay`] is the
//! running engine.

pub mod body;
pub mod buf;
pub mod config;
pub mod errors;
mod exchange;
pub mod head;
pub mod limits;
pub mod metrics;
pub mod policy;
mod proxy;
pub mod ratelimit;
pub mod tls;
pub mod tracking;
pub mod upstream;

pub use config::RelayConfig;
pub use errors::{ErrorCode, ProxyError};
pub use policy::{Admitted, End, Policy, Request, View};
pub use proxy::{Relay, StartError};
pub use ratelimit::{BucketConfig, Limits};
pub use tls::{CertFiles, CertWatch, TlsAcceptor, TlsError};
pub use tracking::{CapsuleStats, StatsSnapshot};
