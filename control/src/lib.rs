//! `warren-control`: the control plane (`warren-control`) and the `warren`
//! CLI. It serves the public REST API (Wrenn-compatible), authenticates
//! users and keys, schedules capsules onto hosts and keeps all state in
//! Postgres. See DESIGN.md ("Processes and how they talk").
//!
//! Map:
//! - [`api`]: the REST routes, one module per family, and the OpenAPI doc.
//! - [`auth`]: API keys, passwords, JWT sessions, roles.
//! - [`db`]: the pool, migrations and the queries that hold invariants.
//! - [`lifecycle`]: create / destroy / pause / resume / snapshot, driving
//!   the agent; [`reconciler`] finishes what a dead replica left half-done
//!   and keeps each host's capsules in sync; [`monitor`] watches heartbeats.
//! - [`scheduler`]: placement (pure function).
//! - [`agent_client`], [`envd_client`] over [`rpc`] (Connect, from
//!   `warren_proto::connect`) and [`transfer`] (envd's `/files`).
//! - [`events`]: LISTEN/NOTIFY fan-out for the SSE stream; [`audit`]: the
//!   audit trail middleware.
//! - [`server`]: wiring and the background loops; [`cli`]: `warren`.

pub mod agent_client;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod envd_client;
pub mod error;
pub mod events;
pub mod ids;
pub mod lifecycle;
pub mod monitor;
pub mod reconciler;
pub mod rpc;
pub mod scheduler;
pub mod server;
pub mod status;
pub mod transfer;
