//! The routing table: capsule id → where its traffic goes and under which
//! rules. Two sources feed it ([`RouteBook`]): the sandbox manager's capsules
//! on this host (their addresses, envd tokens, limits), and the control
//! plane's view of the whole fleet (each capsule's host edge, state, traffic
//! token). A change to either publishes a whole new merged [`RouteTable`]
//! ([`Routes`]); cores read the current one without locks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use warren_relay::Limits;

/// What the edge does with a capsule's traffic, by the capsule's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapsuleState {
    /// Traffic is relayed.
    Running,
    /// Traffic wakes the capsule when it resumes on traffic, else gets a
    /// `409 capsule_paused` naming it.
    Paused,
    /// Starting, stopping or otherwise in transition: `503 capsule_unavailable`.
    Unavailable,
}

/// A secret compared in constant time and never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
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

/// Where a capsule runs, seen from this edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// On this host, at this address (the port comes from each request).
    Here(IpAddr),
    /// On another host, whose edge listens at this address.
    Host(SocketAddr),
}

/// Where a capsule's traffic goes and under which rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RouteFile")]
pub struct Route {
    /// Where the capsule runs.
    pub place: Place,
    /// Whether traffic is relayed now.
    pub state: CapsuleState,
    /// A private capsule's traffic must carry this token (`X-Access-Token` or
    /// `e2b-traffic-access-token`); `None` makes the capsule public.
    pub access_token: Option<Secret>,
    /// envd's own access token: injected as `X-Access-Token` into internal
    /// (agent-token) requests toward envd's port (capsules on this host).
    pub envd_access_token: Option<Secret>,
    /// Rate limits, off unless configured (capsules on this host).
    pub limits: Limits,
    /// A paused capsule is woken by traffic, which waits for it.
    pub auto_resume: bool,
}

impl Route {
    /// A running capsule on this host at `address`, public and unlimited.
    pub fn here(address: IpAddr) -> Self {
        Self {
            place: Place::Here(address),
            state: CapsuleState::Running,
            access_token: None,
            envd_access_token: None,
            limits: Limits::default(),
            auto_resume: false,
        }
    }
}

/// A route as a routes file writes it: `address` (this host) or `via` (the
/// edge of the host it runs on).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(default)]
    address: Option<IpAddr>,
    #[serde(default)]
    via: Option<SocketAddr>,
    state: CapsuleState,
    #[serde(default)]
    access_token: Option<Secret>,
    #[serde(default)]
    envd_access_token: Option<Secret>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    auto_resume: bool,
}

impl TryFrom<RouteFile> for Route {
    type Error = &'static str;

    fn try_from(f: RouteFile) -> Result<Self, Self::Error> {
        let place = match (f.address, f.via) {
            (Some(address), None) => Place::Here(address),
            (None, Some(edge)) => Place::Host(edge),
            _ => {
                return Err(
                    "a route has exactly one of `address` (this host) or `via` (another host's edge)",
                );
            }
        };
        Ok(Self {
            place,
            state: f.state,
            access_token: f.access_token,
            envd_access_token: f.envd_access_token,
            limits: f.limits,
            auto_resume: f.auto_resume,
        })
    }
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

    /// Every capsule and its route.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Route)> {
        self.capsules.iter()
    }

    /// Reads a routes file: JSON `{"capsules": {"<id>": {"address": "10.11.0.2",
    /// "state": "running", "access_token": null, "limits": {...}}}}` (or
    /// `"via": "10.0.0.2:8080"` for a capsule behind another host's edge).
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

/// A capsule as the control plane sees it.
#[derive(Debug, Clone)]
pub struct FleetEntry {
    /// The edge of the host it runs on; `None` for this host (whose own
    /// routes, from the sandbox manager, say where).
    pub host: Option<SocketAddr>,
    /// Its state, as the control plane last recorded it.
    pub state: CapsuleState,
    /// Its traffic token, if private.
    pub access_token: Option<Secret>,
    /// Traffic wakes it when paused (an API setting only the control plane
    /// holds).
    pub auto_resume: bool,
}

/// The two sources of routes, merged into [`Routes`] on every change: this
/// host's capsules from the sandbox manager (where they are, their envd
/// tokens and limits), and the fleet's from the control plane (the edge of
/// each other host's capsules; whether traffic resumes a capsule).
#[derive(Debug, Default)]
pub struct RouteBook {
    routes: Arc<Routes>,
    sources: Mutex<Sources>,
}

#[derive(Debug, Default)]
struct Sources {
    local: HashMap<String, Route>,
    fleet: HashMap<String, FleetEntry>,
}

impl Sources {
    fn merged(&self) -> RouteTable {
        let mut capsules = HashMap::with_capacity(self.local.len() + self.fleet.len());
        for (id, entry) in &self.fleet {
            if let Some(edge) = entry.host {
                let route = Route {
                    place: Place::Host(edge),
                    state: entry.state,
                    access_token: entry.access_token.clone(),
                    envd_access_token: None,
                    limits: Limits::default(),
                    auto_resume: entry.auto_resume,
                };
                capsules.insert(id.clone(), route);
            }
        }
        for (id, route) in &self.local {
            let mut route = route.clone();
            route.auto_resume = self.fleet.get(id).is_some_and(|e| e.auto_resume);
            capsules.insert(id.clone(), route);
        }
        RouteTable { capsules }
    }
}

impl RouteBook {
    /// A book publishing into a new, empty [`Routes`].
    pub fn new() -> Self {
        Self::default()
    }

    /// What the cores read.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    fn change(&self, f: impl FnOnce(&mut Sources)) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut sources);
        self.routes.publish(sources.merged());
    }

    /// Replaces this host's capsules.
    pub fn set_local(&self, table: RouteTable) {
        self.change(|s| s.local = table.capsules);
    }

    /// Replaces the fleet's capsules (a full snapshot from the control plane).
    pub fn set_fleet(&self, entries: impl IntoIterator<Item = (String, FleetEntry)>) {
        self.change(|s| s.fleet = entries.into_iter().collect());
    }

    /// Changes some of the fleet's capsules: `Some` upserts, `None` removes.
    pub fn update_fleet(&self, changes: impl IntoIterator<Item = (String, Option<FleetEntry>)>) {
        self.change(|s| {
            for (id, entry) in changes {
                match entry {
                    Some(entry) => {
                        s.fleet.insert(id, entry);
                    }
                    None => {
                        s.fleet.remove(&id);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_routes_win_and_take_auto_resume_from_the_fleet() {
        let book = RouteBook::new();
        let edge_b: SocketAddr = "10.0.0.2:8080".parse().expect("addr");
        let on = |host, auto_resume| FleetEntry {
            host,
            state: CapsuleState::Paused,
            access_token: None,
            auto_resume,
        };
        book.set_fleet([
            ("a".to_owned(), on(None, true)),
            ("b".to_owned(), on(Some(edge_b), false)),
            ("gone".to_owned(), on(None, false)),
        ]);
        book.set_local(RouteTable::new([(
            "a".to_owned(),
            Route::here([10, 11, 0, 2].into()),
        )]));
        let table = book.routes().load_full();
        let a = table.get("a").expect("a");
        assert_eq!(a.place, Place::Here([10, 11, 0, 2].into()));
        assert_eq!(a.state, CapsuleState::Running, "this host's state wins");
        assert!(a.auto_resume, "auto-resume comes from the control plane");
        assert_eq!(table.get("b").map(|r| r.place), Some(Place::Host(edge_b)));
        assert!(
            table.get("gone").is_none(),
            "a capsule the control plane puts on this host but the manager does not hold has no route"
        );
        book.update_fleet([("b".to_owned(), None)]);
        assert!(book.routes().load_full().get("b").is_none());
        // The local route survives a fleet snapshot without it.
        book.set_fleet([]);
        let a = book.routes().load_full().get("a").cloned().expect("a");
        assert!(!a.auto_resume);
    }

    #[test]
    fn routes_files_name_one_place() {
        let here: RouteTable = serde_json::from_str(
            r#"{"capsules":{"a":{"address":"10.11.0.2","state":"running"},
                "b":{"via":"10.0.0.2:8080","state":"paused","auto_resume":true}}}"#,
        )
        .expect("parse");
        assert_eq!(
            here.get("a").map(|r| r.place),
            Some(Place::Here([10, 11, 0, 2].into()))
        );
        assert!(here.get("b").is_some_and(|r| r.auto_resume));
        let both =
            r#"{"capsules":{"a":{"address":"10.11.0.2","via":"10.0.0.2:1","state":"running"}}}"#;
        assert!(serde_json::from_str::<RouteTable>(both).is_err());
    }
}
