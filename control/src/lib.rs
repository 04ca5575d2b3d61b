//! `warren-control`: the control plane. It serves the public REST API
//! (Wrenn-compatible), authenticates users and keys, schedules capsules
//! onto hosts, runs template builds and keeps all state in Postgres; the
//! agents (`dataplane/`) run the capsules. How the processes fit together
//! is in `docs/architecture.md`.
//!
//! It is a library first: [`Server::builder`] makes a replica, with
//! extensions (routes, background workers, hooks on capsule events);
//! `src/bin/warren-control.rs` is that with none. The schema is embedded
//! ([`MIGRATOR`]).
//!
//! Map, from the request inwards:
//! - [`api`]: the REST routes (one module per family), the OpenAPI doc,
//!   authentication and audit layers, and the only place errors become
//!   HTTP ([`api::error`]).
//! - [`domain`]: who may do what (permission checks, validation), one
//!   module and error type per resource family; [`auth`]: credentials
//!   into a [`auth::Principal`].
//! - [`lifecycle`]: create / destroy / pause / resume / snapshot, driving
//!   the agent; [`reconciler`] finishes what a dead replica left half-done
//!   and keeps each host's capsules in sync; [`monitor`] watches
//!   heartbeats; [`scheduler`]: placement (pure function).
//! - [`build`]: template builds (queue workers, runner, layer cache) of
//!   recipes (the `warren-recipe` crate).
//! - [`db`]: every query, the pool and the migrations.
//! - [`agent_client`], [`envd_client`] over [`rpc`] (Connect, from
//!   `warren_proto::connect`) and [`transfer`] (envd's `/files`).
//! - [`events`]: LISTEN/NOTIFY fan-out for the SSE stream; [`extension`]:
//!   hooks on capsule events; [`server`]: the builder, the HTTP server and
//!   the background loops; [`logging`]: the log file.
//!
//! The request and response types are the `warren-api-types` crate's,
//! shared with the `warren` CLI (`cli/`).

pub mod agent_client;
pub mod api;
pub mod app;
pub mod auth;
pub mod build;
pub mod config;
pub mod db;
pub mod domain;
pub mod envd_client;
pub mod events;
pub mod extension;
pub mod ids;
pub mod lifecycle;
pub mod logging;
pub mod monitor;
pub mod reconciler;
pub mod rpc;
pub mod scheduler;
pub mod server;
pub mod transfer;

pub use db::MIGRATOR;
pub use server::{Server, ServerBuilder};
