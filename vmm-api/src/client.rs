//! HTTP/1.1 client for Firecracker's API socket.
//!
//! Each call opens its own connection (a Unix socket connect costs
//! microseconds), so a connection Firecracker closed meanwhile — or a new
//! Firecracker process behind the same socket path — can never swallow a
//! request. Every call has a deadline covering connect, request and the
//! whole response.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::error::Error;
use crate::model::*;
use crate::request::Request;

/// Deadline of a call unless set otherwise. Generous: a full snapshot of a
/// large VM and a uffd-backed load are synchronous calls.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest response body read (the MMDS store is the largest answer).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// A client for one Firecracker process's API socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for the API socket at `socket`. Nothing is connected yet.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the deadline of each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request` and returns the body of a successful answer (empty for
    /// `204 No Content`). Invalid input is refused before sending;
    /// Firecracker's refusals become [`Error::Fault`] with its message.
    pub async fn send(&self, request: &Request<'_>) -> Result<Bytes, Error> {
        self.send_with_timeout(request, self.timeout).await
    }

    /// [`send`](Self::send) with a deadline for this call only.
    pub async fn send_with_timeout(
        &self,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        request.validate()?;
        let op = request.describe();
        let body = request.body();
        let has_body = body.is_some();
        let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
        let mut builder = hyper::Request::builder()
            .method(request.method())
            .uri(request.path())
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json");
        if has_body {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let http_request = builder
            .body(Full::new(body))
            .map_err(|e| crate::error::InvalidInput::new("request", e.to_string()))?;
        tracing::debug!(socket = %self.socket.display(), %op, "firecracker API call");
        match tokio::time::timeout(timeout, self.round_trip(&op, http_request)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout { op, after: timeout }),
        }
    }

    async fn round_trip(
        &self,
        op: &str,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<Bytes, Error> {
        let mut sender = self.connect().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| Error::Transport {
                op: op.to_string(),
                source,
            })?;
        let status = response.status();
        let body = match Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return Err(Error::UnexpectedResponse {
                    op: op.to_string(),
                    status,
                    body: format!("reading the body: {e}"),
                });
            }
        };
        map_status(op, status, body)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| Error::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|source| Error::Transport {
                    op: "HTTP handshake".into(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("firecracker API connection ended: {e}");
            }
        });
        Ok(sender)
    }

    async fn send_json<T: DeserializeOwned>(&self, request: &Request<'_>) -> Result<T, Error> {
        let body = self.send(request).await?;
        serde_json::from_slice(&body).map_err(|source| Error::Decode {
            op: request.describe(),
            source,
        })
    }

    async fn send_empty(&self, request: &Request<'_>) -> Result<(), Error> {
        self.send(request).await.map(drop)
    }

    // Typed calls, one per endpoint.

    /// `GET /`: id, state and version of the instance.
    pub async fn describe_instance(&self) -> Result<InstanceInfo, Error> {
        self.send_json(&Request::DescribeInstance).await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<FirecrackerVersion, Error> {
        self.send_json(&Request::GetVersion).await
    }

    /// `GET /machine-config`.
    pub async fn machine_config(&self) -> Result<MachineConfig, Error> {
        self.send_json(&Request::GetMachineConfig).await
    }

    /// `PUT /machine-config` (pre-boot).
    pub async fn put_machine_config(&self, config: &MachineConfig) -> Result<(), Error> {
        self.send_empty(&Request::PutMachineConfig(config)).await
    }

    /// `PUT /boot-source` (pre-boot).
    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<(), Error> {
        self.send_empty(&Request::PutBootSource(boot)).await
    }

    /// `PUT /drives/{drive_id}` (pre-boot).
    pub async fn put_drive(&self, drive: &Drive) -> Result<(), Error> {
        self.send_empty(&Request::PutDrive(drive)).await
    }

    /// `PATCH /drives/{drive_id}` (post-boot): new backing file or limits.
    pub async fn patch_drive(&self, drive: &PartialDrive) -> Result<(), Error> {
        self.send_empty(&Request::PatchDrive(drive)).await
    }

    /// `PUT /network-interfaces/{iface_id}` (pre-boot).
    pub async fn put_network_interface(&self, iface: &NetworkInterface) -> Result<(), Error> {
        self.send_empty(&Request::PutNetworkInterface(iface)).await
    }

    /// `PATCH /network-interfaces/{iface_id}`: change rx/tx limits live.
    pub async fn patch_network_interface(
        &self,
        iface: &PartialNetworkInterface,
    ) -> Result<(), Error> {
        self.send_empty(&Request::PatchNetworkInterface(iface))
            .await
    }

    /// `PUT /mmds/config` (pre-boot).
    pub async fn put_mmds_config(&self, config: &MmdsConfig) -> Result<(), Error> {
        self.send_empty(&Request::PutMmdsConfig(config)).await
    }

    /// `PUT /mmds`: replace the metadata store.
    pub async fn put_mmds(&self, contents: &MmdsContents) -> Result<(), Error> {
        self.send_empty(&Request::PutMmds(contents)).await
    }

    /// `PATCH /mmds`: JSON merge patch of the metadata store.
    pub async fn patch_mmds(&self, patch: &MmdsContents) -> Result<(), Error> {
        self.send_empty(&Request::PatchMmds(patch)).await
    }

    /// `GET /mmds`.
    pub async fn mmds(&self) -> Result<serde_json::Value, Error> {
        self.send_json(&Request::GetMmds).await
    }

    /// `PUT /actions`.
    pub async fn action(&self, action_type: ActionType) -> Result<(), Error> {
        self.send_empty(&Request::Action(&InstanceAction { action_type }))
            .await
    }

    /// Boots the configured microVM.
    pub async fn start(&self) -> Result<(), Error> {
        self.action(ActionType::InstanceStart).await
    }

    /// `PATCH /vm {"state": "Paused"}`: stop the vCPUs.
    pub async fn pause(&self) -> Result<(), Error> {
        self.send_empty(&Request::PatchVm(&Vm {
            state: VmState::Paused,
        }))
        .await
    }

    /// `PATCH /vm {"state": "Resumed"}`.
    pub async fn resume(&self) -> Result<(), Error> {
        self.send_empty(&Request::PatchVm(&Vm {
            state: VmState::Resumed,
        }))
        .await
    }

    /// `PUT /snapshot/create` (VM paused).
    pub async fn create_snapshot(&self, params: &SnapshotCreate) -> Result<(), Error> {
        self.send_empty(&Request::CreateSnapshot(params)).await
    }

    /// `PUT /snapshot/load` (fresh process). With a `Uffd` backend this
    /// returns only after the page server served the first fault.
    pub async fn load_snapshot(&self, params: &SnapshotLoad) -> Result<(), Error> {
        self.send_empty(&Request::LoadSnapshot(params)).await
    }

    /// `PUT /balloon` (pre-boot).
    pub async fn put_balloon(&self, balloon: &Balloon) -> Result<(), Error> {
        self.send_empty(&Request::PutBalloon(balloon)).await
    }

    /// `PATCH /balloon`: new target size.
    pub async fn patch_balloon(&self, update: &BalloonUpdate) -> Result<(), Error> {
        self.send_empty(&Request::PatchBalloon(update)).await
    }

    /// `GET /balloon`.
    pub async fn balloon(&self) -> Result<Balloon, Error> {
        self.send_json(&Request::GetBalloon).await
    }

    /// `GET /balloon/statistics`.
    pub async fn balloon_stats(&self) -> Result<BalloonStats, Error> {
        self.send_json(&Request::GetBalloonStats).await
    }

    /// `PATCH /balloon/statistics`.
    pub async fn patch_balloon_stats(&self, update: &BalloonStatsUpdate) -> Result<(), Error> {
        self.send_empty(&Request::PatchBalloonStats(update)).await
    }

    /// `PUT /metrics`.
    pub async fn put_metrics(&self, metrics: &Metrics) -> Result<(), Error> {
        self.send_empty(&Request::PutMetrics(metrics)).await
    }

    /// `PUT /logger`.
    pub async fn put_logger(&self, logger: &Logger) -> Result<(), Error> {
        self.send_empty(&Request::PutLogger(logger)).await
    }

    /// `PUT /entropy` (pre-boot).
    pub async fn put_entropy(&self, entropy: &EntropyDevice) -> Result<(), Error> {
        self.send_empty(&Request::PutEntropy(entropy)).await
    }

    /// `PUT /vsock` (pre-boot).
    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), Error> {
        self.send_empty(&Request::PutVsock(vsock)).await
    }
}

/// 2xx is success; Firecracker's errors carry `{"fault_message": ...}`.
fn map_status(op: &str, status: StatusCode, body: Bytes) -> Result<Bytes, Error> {
    if status.is_success() {
        return Ok(body);
    }
    #[derive(serde::Deserialize)]
    struct Fault {
        fault_message: String,
    }
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) => Err(Error::Fault {
            op: op.to_string(),
            status,
            fault_message: f.fault_message,
        }),
        Err(_) => Err(Error::UnexpectedResponse {
            op: op.to_string(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(512).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_keep_firecracker_message() {
        let e = map_status(
            "PATCH /vm",
            StatusCode::BAD_REQUEST,
            Bytes::from_static(br#"{"fault_message":"not supported before starting the microVM"}"#),
        )
        .expect_err("400 is an error");
        assert_eq!(
            e.fault_message(),
            Some("not supported before starting the microVM")
        );
        let e = map_status(
            "GET /",
            StatusCode::BAD_GATEWAY,
            Bytes::from_static(b"oops"),
        )
        .expect_err("502 is an error");
        assert!(matches!(e, Error::UnexpectedResponse { .. }), "{e}");
        assert!(map_status("PUT /vm", StatusCode::NO_CONTENT, Bytes::new()).is_ok());
    }
}
