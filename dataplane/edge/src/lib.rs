//! `warren-edge`: the data plane's HTTP relay. Every byte a user exchanges
//! with a server inside a capsule (Jupyter, a dev server, a preview app) and
//! every envd call the control plane makes crosses it. The agent starts it and
//! publishes its routing table; it runs on the data-plane cores of
//! `warren-runtime`.
//!
//! Map: [`table`] (routing table, swapped atomically) → [`target`] (which
//! capsule port a request names) → [`access`] (tokens, internal routes) →
//! [`relay`] (one client connection: heads via [`head`], bodies via [`body`]
//! with splice, upstreams via [`upstream`], `Location` via [`location`]) with
//! [`tracking`] (per-capsule counters, drain/evict), [`ratelimit`] (token
//! buckets), [`errors`] (typed pages) and [`metrics`]. [`server`] runs it all
//! on one io_uring runtime per core (see [`warren_runtime`]).

pub mod access;
pub mod body;
pub mod buf;
pub mod config;
pub mod errors;
pub mod head;
pub mod location;
pub mod metrics;
pub mod ratelimit;
mod relay;
pub mod server;
pub mod table;
pub mod target;
pub mod tracking;
pub mod upstream;

pub use config::ProxyConfig;
pub use errors::{ErrorCode, ProxyError};
pub use server::{Proxy, StartError};
pub use table::{BucketConfig, CapsuleState, Limits, Route, RouteTable, Routes, Secret};
pub use tracking::{CapsuleStats, StatsSnapshot};
