//! Proxy counters and their Prometheus text exposition, plus a tiny admin
//! HTTP server (`GET /metrics`, `GET /healthz`) for the standalone proxy.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use super::errors::ErrorCode;
use super::tracking::Tracker;

/// Process-wide proxy counters (relaxed atomics; cores only add).
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) upstream_dials: AtomicU64,
    pub(crate) upstream_reused: AtomicU64,
    pub(crate) tunnels: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            Self::add(&self.errors[i]);
        }
    }

    /// Prometheus text format: these counters and every capsule's.
    pub fn render(&self, tracker: &Tracker) -> String {
        let mut out = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let simple = [
            (
                "warren_proxy_connections_accepted_total",
                "counter",
                "Client connections accepted.",
                get(&self.connections_accepted),
            ),
            (
                "warren_proxy_connections_open",
                "gauge",
                "Client connections open now.",
                get(&self.connections_open),
            ),
            (
                "warren_proxy_requests_total",
                "counter",
                "Requests routed to a capsule.",
                get(&self.requests),
            ),
            (
                "warren_proxy_upstream_dials_total",
                "counter",
                "New upstream connections.",
                get(&self.upstream_dials),
            ),
            (
                "warren_proxy_upstream_reused_total",
                "counter",
                "Requests sent on a pooled upstream connection.",
                get(&self.upstream_reused),
            ),
            (
                "warren_proxy_tunnels_total",
                "counter",
                "Upgraded (WebSocket) connections relayed.",
                get(&self.tunnels),
            ),
        ];
        // Writing to a String cannot fail.
        for (name, kind, help, value) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP warren_proxy_errors_total Error answers by code.\n# TYPE warren_proxy_errors_total counter"
        );
        for (code, counter) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "warren_proxy_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                get(counter)
            );
        }
        let capsules = tracker.all();
        let families = [
            (
                "warren_capsule_open_connections",
                "gauge",
                "Client connections bound to the capsule.",
            ),
            (
                "warren_capsule_requests_total",
                "counter",
                "Requests routed to the capsule.",
            ),
            (
                "warren_capsule_bytes_total",
                "counter",
                "Bytes relayed, by direction (in: to the capsule).",
            ),
            (
                "warren_capsule_last_activity_seconds",
                "gauge",
                "Unix time of the capsule's last proxied activity.",
            ),
        ];
        for (name, kind, help) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (id, stats) in &capsules {
                let s = stats.snapshot();
                match name {
                    "warren_capsule_open_connections" => {
                        let _ = writeln!(out, "{name}{{capsule=\"{id}\"}} {}", s.open_connections);
                    }
                    "warren_capsule_requests_total" => {
                        let _ = writeln!(out, "{name}{{capsule=\"{id}\"}} {}", s.requests);
                    }
                    "warren_capsule_bytes_total" => {
                        let _ = writeln!(
                            out,
                            "{name}{{capsule=\"{id}\",direction=\"in\"}} {}",
                            s.bytes_to_capsule
                        );
                        let _ = writeln!(
                            out,
                            "{name}{{capsule=\"{id}\",direction=\"out\"}} {}",
                            s.bytes_from_capsule
                        );
                    }
                    _ => {
                        let secs = s
                            .last_activity
                            .duration_since(UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64());
                        let _ = writeln!(out, "{name}{{capsule=\"{id}\"}} {secs:.3}");
                    }
                }
            }
        }
        out
    }
}

/// Serves `GET /metrics` (from `render`) and `GET /healthz` on `listener`,
/// one short request per connection, on a background thread.
pub fn serve_admin(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("warren-admin".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the rest of the head.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, content_type, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", render()),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                _ => ("404 Not Found", "text/plain", "not found: try /metrics or /healthz\n".to_owned()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(())
}
