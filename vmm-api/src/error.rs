//! Errors of the Firecracker client: invalid input caught before sending,
//! transport failures, and Firecracker's own faults (its `fault_message` is
//! the only diagnosis it gives, so it is always kept).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;

/// A request body or argument that Firecracker would reject (or that would
/// silently mean something else); caught before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidInput {
    /// The offending field, e.g. `machine-config.vcpu_count`.
    pub field: &'static str,
    /// Why it is rejected.
    pub reason: String,
}

impl InvalidInput {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Everything a call to Firecracker's API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was not sent: its input is invalid.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The API socket could not be connected.
    #[error("connecting to Firecracker's API socket {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// HTTP-level failure (connection reset, malformed response, ...).
    #[error("{op}: HTTP transport: {source}")]
    Transport {
        op: String,
        #[source]
        source: hyper::Error,
    },
    /// No complete response within the deadline.
    #[error("{op}: no response within {after:?}")]
    Timeout { op: String, after: Duration },
    /// Firecracker refused the request and said why.
    #[error("{op}: Firecracker answered {status}: {fault_message}")]
    Fault {
        op: String,
        status: StatusCode,
        fault_message: String,
    },
    /// A status or body that Firecracker's API does not define.
    #[error("{op}: unexpected answer {status}: {body}")]
    UnexpectedResponse {
        op: String,
        status: StatusCode,
        body: String,
    },
    /// A 200 body that does not match the documented model.
    #[error("{op}: decoding the response: {source}")]
    Decode {
        op: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Firecracker's `fault_message`, when this is a fault it reported.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            Error::Fault { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }
}

/// Everything starting, stopping or cleaning up Firecracker processes can
/// fail with.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The capsule id cannot name a Firecracker instance.
    #[error("invalid instance id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    /// Unix socket paths are limited to 107 bytes.
    #[error("API socket path {0} is longer than a Unix socket path may be (107 bytes)")]
    SocketPathTooLong(PathBuf),
    /// A live Firecracker already serves this instance's socket.
    #[error("instance {id} is already running (API socket {socket} answers)")]
    AlreadyRunning { id: String, socket: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The binary could not be started at all.
    #[error("starting {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The process exited before its API socket accepted connections.
    #[error(
        "firecracker for {id} exited before serving its API ({status}); console: {console_tail}"
    )]
    Exited {
        id: String,
        status: String,
        console_tail: String,
    },
    /// The API socket did not accept connections in time (the process was killed).
    #[error("firecracker for {id} did not serve its API within {after:?}; console: {console_tail}")]
    SocketTimeout {
        id: String,
        after: Duration,
        console_tail: String,
    },
    /// Even SIGKILL did not end the process (stuck in the kernel).
    #[error("process {pid} is still alive after SIGKILL")]
    StillAlive { pid: u32 },
}

impl LaunchError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
