//! The agent's own calls to a capsule's envd (direct, on the host side of
//! the capsule's network slot): waiting for it to answer, `/init` with the
//! capsule's defaults and token, starting a template's start command, and
//! `/snapshot/prepare` before a microVM snapshot.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::record::EnvdDefaults;

/// Failures talking to envd.
#[derive(Debug, thiserror::Error)]
pub enum EnvdError {
    #[error("envd at {addr} did not answer within {waited:?}: {last}")]
    NotReady {
        addr: String,
        waited: Duration,
        last: String,
    },
    #[error("envd at {addr} refused {route}: HTTP {status}: {body}")]
    Refused {
        addr: String,
        route: &'static str,
        status: u16,
        body: String,
    },
    #[error("envd at {addr}: {route}: {error}")]
    Transport {
        addr: String,
        route: &'static str,
        error: String,
    },
}

#[derive(Clone, Debug)]
pub struct EnvdClient {
    http: Client<HttpConnector, Full<Bytes>>,
    port: u16,
}

impl EnvdClient {
    pub fn new(port: u16) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Self { http, port }
    }

    fn url(&self, addr: IpAddr, route: &str) -> String {
        format!("http://{addr}:{}{route}", self.port)
    }

    async fn request(
        &self,
        addr: IpAddr,
        method: http::Method,
        route: &'static str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Bytes), EnvdError> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(self.url(addr, route));
        if let Some(token) = token {
            req = req.header("x-access-token", token);
        }
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let transport = |error: String| EnvdError::Transport {
            addr: addr.to_string(),
            route,
            error,
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| transport(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
            .await
            .map_err(|_| transport("timed out".into()))?
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }

    /// Polls `/health` until envd answers; returns the version it reports.
    pub async fn wait_ready(&self, addr: IpAddr, timeout: Duration) -> Result<String, EnvdError> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            let last = match self
                .request(addr, http::Method::GET, "/health", None, None)
                .await
            {
                Ok((200..=299, body)) => {
                    let version = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("version")?.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    return Ok(version);
                }
                Ok((status, _)) => format!("HTTP {status}"),
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= timeout {
                return Err(EnvdError::NotReady {
                    addr: addr.to_string(),
                    waited: timeout,
                    last,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// `/init`: defaults for every later operation, and the access token.
    /// `current_token` is the token envd already holds (after a restore).
    pub async fn init(
        &self,
        addr: IpAddr,
        current_token: Option<&str>,
        defaults: &EnvdDefaults,
        token: Option<&str>,
    ) -> Result<(), EnvdError> {
        let mut body = serde_json::json!({ "envVars": defaults.env });
        if !defaults.user.is_empty() {
            body["defaultUser"] = defaults.user.clone().into();
        }
        if !defaults.workdir.is_empty() {
            body["defaultWorkdir"] = defaults.workdir.clone().into();
        }
        if let Some(token) = token {
            body["accessToken"] = token.into();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        body["timestamp"] = rfc3339(now).into();
        match self
            .request(addr, http::Method::POST, "/init", current_token, Some(body))
            .await?
        {
            (200..=299, _) => Ok(()),
            (status, body) => Err(EnvdError::Refused {
                addr: addr.to_string(),
                route: "/init",
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }),
        }
    }

    /// Starts `cmd` (`/bin/sh -c cmd`, as envd's default user, in its
    /// default workdir, tagged `start`) and returns once envd reports it
    /// running; the process lives on after this call (a template's `START`).
    pub async fn start_daemon(
        &self,
        addr: IpAddr,
        token: Option<&str>,
        cmd: &str,
    ) -> Result<(), EnvdError> {
        use futures_util::StreamExt;
        use warren_proto::process::{ProcessClient, ProcessConfig, StartRequest, process_event};
        let failed = |error: String| EnvdError::Transport {
            addr: addr.to_string(),
            route: "process.Process/Start",
            error,
        };
        let mut builder = warren_proto::connect::Client::builder(self.url(addr, ""));
        if let Some(token) = token {
            let value = http::HeaderValue::from_str(token).map_err(|e| failed(e.to_string()))?;
            builder = builder.header(http::HeaderName::from_static("x-access-token"), value);
        }
        let client = ProcessClient::new(builder.build().map_err(|e| failed(e.to_string()))?);
        let req = StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/sh".into(),
                args: vec!["-c".into(), cmd.into()],
                ..Default::default()
            }),
            tag: Some("start".into()),
            stdin: Some(false),
            ..Default::default()
        };
        let mut events = client
            .start(&req)
            .await
            .map_err(|e| failed(e.to_string()))?;
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(Ok(ev)))
                if matches!(
                    ev.event.as_ref().and_then(|e| e.event.as_ref()),
                    Some(process_event::Event::Start(_))
                ) =>
            {
                Ok(())
            }
            Ok(Some(Err(e))) => Err(failed(e.to_string())),
            Ok(_) => Err(failed("no start event".into())),
            Err(_) => Err(failed("timed out".into())),
        }
    }

    /// `/snapshot/prepare`: envd closes idle connections, keep-alive off.
    pub async fn prepare_snapshot(
        &self,
        addr: IpAddr,
        token: Option<&str>,
    ) -> Result<(), EnvdError> {
        match self
            .request(addr, http::Method::POST, "/snapshot/prepare", token, None)
            .await?
        {
            (200..=299, _) => Ok(()),
            (status, body) => Err(EnvdError::Refused {
                addr: addr.to_string(),
                route: "/snapshot/prepare",
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }),
        }
    }
}

/// `2026-11-23T15:45:42Z` for seconds since the epoch.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_448_742), "2026-11-23T15:45:42Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
