//! The relay's counters and their exposition in the OpenMetrics text format
//! (`prometheus-client`): process-wide counters the cores bump without locks,
//! and every capsule's counters read from the [`Tracker`] at scrape time.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::errors::ErrorCode;
use crate::tracking::Tracker;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Process-wide relay counters (atomics; cores only add).
#[derive(Debug)]
pub struct Metrics {
    pub(crate) connections_accepted: Counter,
    pub(crate) connections_open: Gauge,
    pub(crate) requests: Counter,
    pub(crate) upstream_dials: Counter,
    pub(crate) upstream_reused: Counter,
    pub(crate) tunnels: Counter,
    /// One counter per [`ErrorCode::ALL`] entry, shared with the registry's
    /// family so the hot path takes no lock.
    errors: Vec<Counter>,
    registry: Registry,
}

type CodeLabel = [(&'static str, &'static str); 1];

impl Metrics {
    /// Counters at zero, registered with a collector reading `tracker`.
    pub(crate) fn new(tracker: Arc<Tracker>) -> Self {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let connections_accepted = counter(
            "warren_proxy_connections_accepted",
            "Client connections accepted.",
        );
        let requests = counter("warren_proxy_requests", "Requests routed to a capsule.");
        let upstream_dials = counter("warren_proxy_upstream_dials", "New upstream connections.");
        let upstream_reused = counter(
            "warren_proxy_upstream_reused",
            "Requests sent on a pooled upstream connection.",
        );
        let tunnels = counter(
            "warren_proxy_tunnels",
            "Upgraded (WebSocket) connections relayed.",
        );
        let connections_open = Gauge::default();
        registry.register(
            "warren_proxy_connections_open",
            "Client connections open now.",
            connections_open.clone(),
        );
        let family = Family::<CodeLabel, Counter>::default();
        let errors = ErrorCode::ALL
            .iter()
            .map(|code| family.get_or_create(&[("code", code.as_str())]).clone())
            .collect();
        registry.register("warren_proxy_errors", "Error answers by code.", family);
        registry.register_collector(Box::new(Capsules(tracker)));
        Self {
            connections_accepted,
            connections_open,
            requests,
            upstream_dials,
            upstream_reused,
            tunnels,
            errors,
            registry,
        }
    }

    pub(crate) fn add(counter: &Counter) {
        counter.inc();
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    /// Every counter, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Per-capsule counters, read from the tracker at each scrape.
#[derive(Debug)]
struct Capsules(Arc<Tracker>);

impl Collector for Capsules {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let capsules: Vec<_> = self
            .0
            .all()
            .into_iter()
            .map(|(id, stats)| (id, stats.snapshot()))
            .collect();
        let gauge = ConstGauge::new(0i64).metric_type();
        let counter = ConstCounter::new(0u64).metric_type();
        let mut family = encoder.encode_descriptor(
            "warren_capsule_open_connections",
            "Client connections bound to the capsule.",
            None,
            gauge,
        )?;
        for (id, s) in &capsules {
            let open = i64::try_from(s.open_connections).unwrap_or(i64::MAX);
            ConstGauge::new(open).encode(family.encode_family(&[("capsule", id.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "warren_capsule_requests",
            "Requests routed to the capsule.",
            None,
            counter,
        )?;
        for (id, s) in &capsules {
            ConstCounter::new(s.requests)
                .encode(family.encode_family(&[("capsule", id.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "warren_capsule_bytes",
            "Bytes relayed, by direction (in: to the capsule).",
            None,
            counter,
        )?;
        for (id, s) in &capsules {
            for (direction, bytes) in [("in", s.bytes_to_capsule), ("out", s.bytes_from_capsule)] {
                let labels = [("capsule", id.as_str()), ("direction", direction)];
                ConstCounter::new(bytes).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "warren_capsule_last_activity_seconds",
            "Unix time of the capsule's last proxied activity.",
            None,
            gauge,
        )?;
        for (id, s) in &capsules {
            let secs = s
                .last_activity
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            ConstGauge::new(secs).encode(family.encode_family(&[("capsule", id.as_str())])?)?;
        }
        Ok(())
    }
}
