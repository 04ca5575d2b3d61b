//! The agent's side of the control plane's host protocol (see
//! `control/src/api/hosts.rs`): registering once with a one-time token, then
//! heartbeats, so the control plane keeps the host online. Everything else
//! (capacity, templates, capsules) the control plane pulls over the RPC.
//!
//! The host's credentials from a registration are kept in
//! `<data_dir>/agent/host.json` (mode 0600), so a restarted agent heartbeats
//! as the same host without a new token.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the agent knows the control plane.
#[derive(Debug, Clone)]
pub struct ControlLink {
    /// The control plane's base URL (`http://…`).
    pub url: String,
    /// Who this host is to the control plane.
    pub host: HostAuth,
    /// Where the control plane reaches this agent's RPC (`ip:port`).
    pub rpc_advertise: String,
    /// Time between heartbeats (well under the control plane's timeout).
    pub heartbeat_every: Duration,
}

/// This host's identity at the control plane.
#[derive(Debug, Clone)]
pub enum HostAuth {
    /// Registered already (by an operator or `warren up`).
    Known { host_id: String, host_token: String },
    /// Register with this one-time token unless credentials were saved by
    /// an earlier registration.
    Register { token: String },
}

/// What a registration yields, as saved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostCredentials {
    pub host_id: String,
    pub host_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("control plane {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("control plane {url} refused the registration ({status}): {body}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("host credentials {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the agent tells the control plane when it registers.
#[derive(Debug, Serialize)]
struct RegisterBody<'a> {
    token: &'a str,
    address: &'a str,
    proxy_address: &'a str,
    agent_token: &'a str,
    arch: &'static str,
}

#[derive(Debug, Deserialize)]
struct RegisterAnswer {
    host: RegisteredHost,
    token: String,
}

#[derive(Debug, Deserialize)]
struct RegisteredHost {
    id: String,
}

fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("host.json")
}

fn read_credentials(path: &Path) -> Option<HostCredentials> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn save_credentials(path: &Path, creds: &HostCredentials) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut file, &serde_json::to_vec_pretty(creds)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl ControlLink {
    /// This host's credentials: as configured, as saved by an earlier
    /// registration, or from registering now (and saved).
    pub async fn credentials(
        &self,
        data_dir: &Path,
        agent_token: &str,
        proxy_address: &str,
    ) -> Result<HostCredentials, LinkError> {
        let token = match &self.host {
            HostAuth::Known {
                host_id,
                host_token,
            } => {
                return Ok(HostCredentials {
                    host_id: host_id.clone(),
                    host_token: host_token.clone(),
                });
            }
            HostAuth::Register { token } => token,
        };
        let path = credentials_path(data_dir);
        if let Some(saved) = read_credentials(&path) {
            tracing::info!(host = %saved.host_id, "registered earlier; using the saved host credentials");
            return Ok(saved);
        }
        let url = format!("{}/v1/hosts/register", self.url.trim_end_matches('/'));
        let http = |source| LinkError::Http {
            url: url.clone(),
            source,
        };
        let resp = reqwest::Client::new()
            .post(&url)
            .timeout(Duration::from_secs(30))
            .json(&RegisterBody {
                token,
                address: &self.rpc_advertise,
                proxy_address,
                agent_token,
                arch: std::env::consts::ARCH,
            })
            .send()
            .await
            .map_err(http)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(LinkError::Refused { url, status, body });
        }
        let answer: RegisterAnswer = resp.json().await.map_err(http)?;
        let creds = HostCredentials {
            host_id: answer.host.id,
            host_token: answer.token,
        };
        save_credentials(&path, &creds).map_err(|source| LinkError::Credentials {
            path: path.clone(),
            source,
        })?;
        tracing::info!(host = %creds.host_id, "registered with the control plane");
        Ok(creds)
    }

    /// Heartbeats forever (the caller aborts the task). Failures are
    /// logged when the link changes state, not on every beat.
    pub async fn heartbeat(self, creds: HostCredentials) {
        let url = format!(
            "{}/v1/hosts/{}/heartbeat",
            self.url.trim_end_matches('/'),
            creds.host_id
        );
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(self.heartbeat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut healthy: Option<bool> = None;
        loop {
            tick.tick().await;
            let outcome = client
                .post(&url)
                .header("X-Host-Token", &creds.host_token)
                .timeout(self.heartbeat_every.max(Duration::from_secs(1)))
                .send()
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| match r.status() {
                    s if s.is_success() => Ok(()),
                    s => Err(format!("answered {s}")),
                });
            match (&outcome, healthy) {
                (Ok(()), Some(true)) | (Err(_), Some(false)) => {}
                (Ok(()), _) => {
                    tracing::info!(control = %self.url, "heartbeats reach the control plane")
                }
                (Err(e), _) => tracing::warn!(control = %self.url, error = %e, "heartbeat failed"),
            }
            healthy = Some(outcome.is_ok());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_credentials_are_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = credentials_path(dir.path());
        assert_eq!(read_credentials(&path), None);
        let creds = HostCredentials {
            host_id: "h1".into(),
            host_token: "secret".into(),
        };
        save_credentials(&path, &creds).expect("save");
        assert_eq!(read_credentials(&path), Some(creds));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
