//! The routing table: capsule id → where its traffic goes and under which
//! rules. The sandbox manager (or, standalone, a routes file) builds a whole
//! new [`RouteTable`] and publishes it with [`Routes::publish`]; cores read
//! the current one without locks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// What the proxy does with a capsule's traffic, by the capsule's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapsuleState {
    /// Traffic is relayed.
    Running,
    /// Traffic gets a `409 capsule_paused` naming the capsule.
    Paused,
    /// Starting, stopping or otherwise in transition: `503 capsule_unavailable`.
    Unavailable,
}

/// A secret compared in constant time and never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for headers sent to the capsule.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One token bucket, with Firecracker's `TokenBucket` semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct BucketConfig {
    /// Tokens the bucket holds when full (bytes or operations).
    pub size: u64,
    /// Extra tokens available once, at the start, that never refill.
    #[serde(default)]
    pub one_time_burst: u64,
    /// Milliseconds to refill `size` tokens from empty.
    pub refill_time: u64,
}

/// A capsule's rate limits; each absent bucket means "unlimited".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Limits {
    /// Relayed bytes (both directions count against it).
    pub bandwidth: Option<BucketConfig>,
    /// Operations: one per relayed request, one per read on an upgraded tunnel.
    pub ops: Option<BucketConfig>,
}

impl Limits {
    /// True when neither bucket is configured.
    pub fn is_unlimited(&self) -> bool {
        self.bandwidth.is_none() && self.ops.is_none()
    }
}

/// Where a capsule's traffic goes and under which rules.
#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    /// The capsule's address; the port comes from each request.
    pub address: IpAddr,
    /// Whether traffic is relayed now.
    pub state: CapsuleState,
    /// A private capsule's traffic must carry this token (`X-Access-Token` or
    /// `e2b-traffic-access-token`); `None` makes the capsule public.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// envd's own access token: injected as `X-Access-Token` into internal
    /// (agent-token) requests toward envd's port.
    #[serde(default)]
    pub envd_access_token: Option<Secret>,
    /// Rate limits, off unless configured.
    #[serde(default)]
    pub limits: Limits,
}

/// An immutable routing table; build a new one and publish it to change routes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RouteTable {
    capsules: HashMap<String, Route>,
}

impl RouteTable {
    /// A table from `(capsule id, route)` pairs.
    pub fn new(routes: impl IntoIterator<Item = (String, Route)>) -> Self {
        Self {
            capsules: routes.into_iter().collect(),
        }
    }

    /// The route of capsule `id`.
    pub fn get(&self, id: &str) -> Option<&Route> {
        self.capsules.get(id)
    }

    /// Number of capsules.
    pub fn len(&self) -> usize {
        self.capsules.len()
    }

    /// True when no capsule is routed.
    pub fn is_empty(&self) -> bool {
        self.capsules.is_empty()
    }

    /// Reads a routes file: JSON `{"capsules": {"<id>": {"address": "10.11.0.2",
    /// "state": "running", "access_token": null, "limits": {...}}}}`.
    pub fn from_file(path: &Path) -> Result<Self, RoutesFileError> {
        let text = std::fs::read(path).map_err(|source| RoutesFileError::Read {
            path: path.into(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| RoutesFileError::Parse {
            path: path.into(),
            source,
        })
    }
}

/// A routes file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFileError {
    /// The file cannot be read.
    #[error("cannot read routes file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file is not a valid routing table.
    #[error("invalid routes file {path}: {source}")]
    Parse {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
}

/// The published routing table, swapped atomically as a whole.
#[derive(Debug, Default)]
pub struct Routes {
    current: ArcSwap<RouteTable>,
}

impl Routes {
    /// Starts with `table`.
    pub fn new(table: RouteTable) -> Self {
        Self {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// Replaces the whole table; requests routed from now on see the new one.
    pub fn publish(&self, table: RouteTable) {
        self.current.store(Arc::new(table));
    }

    /// The current table (cheap; no lock).
    pub fn load_full(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }
}
