//! `vmm-api`: everything the agent needs to drive Firecracker processes.
//!
//! - [`model`]: typed request and response bodies of Firecracker's REST API,
//!   serialised exactly as its OpenAPI spec allows (optional fields are
//!   omitted, never `null`; Firecracker rejects unknown fields).
//! - [`Request`]: the table of every call the agent makes (method, path, body).
//! - [`Client`]: sends those calls over Firecracker's Unix socket (hyper,
//!   HTTP/1.1) and maps `{"fault_message": ...}` errors to [`Error::Fault`].
//! - [`boot`]: the guest kernel command line (fixed guest address).
//! - [`launcher`]: starts Firecracker (optionally under the jailer) inside a
//!   capsule's network namespace with a private mount namespace, waits for the
//!   API socket, stops it (SIGTERM, then SIGKILL) and cleans up processes and
//!   sockets left over from a previous agent run.
//!
//! The Firecracker backend (`dataplane/backend`, crate `warren-backend`)
//! builds on this crate; a stand-in that serves this API for tests lives in
//! `dev/fc-standin`.

pub mod boot;
pub mod client;
pub mod error;
pub mod launcher;
pub mod model;
pub mod request;

pub use client::Client;
pub use error::{Error, InvalidInput, LaunchError};
pub use request::Request;
