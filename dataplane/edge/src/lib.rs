//! `warren-edge`: the public entry of a Warren host. Every request reaches
//! the fleet through an edge: capsule traffic (`{port}-{id}.{domain}`,
//! `/proxy/{id}/{port}/…`, `E2b-Sandbox-Id`/`-Port`) goes to the capsule, on
//! this host or through the edge of the host it runs on; everything else
//! (the REST API, its WebSockets and event streams, the console) goes to the
//! control plane, which listens only privately.
//!
//! It is Warren's [`Policy`](warren_relay::Policy) on the relay engine
//! (`warren-relay`, which moves the bytes on the data-plane cores of
//! `warren-runtime`). Where a request is routed: [`target`] (which capsule
//! port it names) and [`table`] (where that capsule is: this host's routes
//! from the sandbox manager merged with the fleet's from the control plane).
//! Where it is admitted: [`access`] (traffic tokens, the agent's token,
//! envd's internal routes), [`wake`] (paused capsules resumed by traffic),
//! [`apirate`] (requests per API key). Where its heads change:
//! [`policy`] (forwarding headers, tokens) and [`location`] (path routes).
//! [`Edge`] is the running edge the agent keeps.

pub mod access;
pub mod apirate;
pub mod config;
pub mod location;
pub mod policy;
pub mod table;
pub mod target;
pub mod wake;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use warren_relay::{Relay, TlsAcceptor};
use warren_runtime::{CoreJob, Cores};

pub use apirate::ApiRateConfig;
pub use config::EdgeConfig;
pub use table::{CapsuleState, FleetEntry, Place, Route, RouteBook, RouteTable, Routes, Secret};
pub use wake::Waker;
pub use warren_relay::{
    BucketConfig, CapsuleStats, CertFiles, CertWatch, Limits, RelayConfig, StartError,
    StatsSnapshot, TlsError, metrics,
};

/// A running edge: the relay engine under Warren's policy, and the routes
/// it reads.
pub struct Edge {
    relay: Relay,
    book: Arc<RouteBook>,
}

impl Edge {
    /// Starts relaying on `config.relay.listen` (TLS with `tls`), routing by
    /// `book`, waking paused capsules through `waker`.
    pub fn start(
        config: EdgeConfig,
        tls: Option<Vec<CertFiles>>,
        book: Arc<RouteBook>,
        waker: Option<Arc<dyn Waker>>,
    ) -> Result<Self, StartError> {
        let tls = tls.map(TlsAcceptor::new).transpose()?;
        let relay_config = config.relay.clone();
        let cores = relay_config.cores.max(1);
        let shared = Arc::new(policy::Shared::new(
            config,
            Arc::clone(book.routes()),
            waker,
        ));
        let relay = Relay::start(relay_config, tls, move |_core| {
            policy::EdgePolicy::new(Arc::clone(&shared), cores)
        })?;
        Ok(Self { relay, book })
    }

    /// The address the edge listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.relay.local_addr()
    }

    /// The routes it reads: publish this host's or the fleet's through it.
    pub fn routes(&self) -> &Arc<RouteBook> {
        &self.book
    }

    /// The live counters of capsule `id` (created empty if it had no traffic).
    pub fn capsule(&self, id: &str) -> Arc<CapsuleStats> {
        self.relay.capsule(id)
    }

    /// A snapshot of capsule `id`'s counters, if it had traffic.
    pub fn stats(&self, id: &str) -> Option<StatsSnapshot> {
        self.relay.stats(id)
    }

    /// Stops public traffic to `id` and closes its connections (see
    /// [`Relay::drain`]).
    pub async fn drain(&self, id: &str, grace: Duration) {
        self.relay.drain(id, grace).await;
    }

    /// Lets public traffic reach `id` again after a drain.
    pub fn reopen(&self, id: &str) {
        self.relay.reopen(id);
    }

    /// Closes every connection of `id` and forgets its counters.
    pub async fn evict(&self, id: &str) {
        self.relay.evict(id).await;
    }

    /// Reads the TLS certificate files again (no-op without TLS).
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.relay.reload_tls()
    }

    /// Reloads the TLS certificates when `watch` saw them change or
    /// `forced`; logs the outcome.
    pub fn reload_tls_if(&self, watch: &mut CertWatch, forced: bool) {
        if !(watch.changed() || forced) || self.tls_files().is_empty() {
            return;
        }
        match self.reload_tls() {
            Ok(()) => tracing::info!("TLS certificates reloaded"),
            Err(error) => tracing::error!(%error, "keeping the previous TLS certificates"),
        }
    }

    /// The TLS certificate files served, if any.
    pub fn tls_files(&self) -> &[CertFiles] {
        self.relay.tls_files()
    }

    /// Counters in the OpenMetrics text format ([`metrics::CONTENT_TYPE`]).
    pub fn render_metrics(&self) -> String {
        self.relay.render_metrics()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.relay.open_connections()
    }

    /// Stops accepting, closes every connection and joins the cores.
    pub fn shutdown(&self) {
        self.relay.shutdown();
    }
}

impl Cores for Edge {
    fn submit(&self, job: CoreJob) -> bool {
        self.relay.submit(job)
    }
}
