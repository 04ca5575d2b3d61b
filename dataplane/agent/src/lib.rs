//! `warren-agent`: the host agent, one per host. It owns that host's
//! capsules and ties the data plane's crates together:
//!
//! - [`manager`]: the sandbox manager, each capsule an explicit state machine
//!   with serialised operations, persisted and re-adopted after a restart; it
//!   drives a backend (`warren-backend`), claims network slots
//!   (`warren-netslot`), publishes routes to the edge (`warren-edge`) and
//!   talks to each capsule's envd.
//! - [`agent`]: the process around it: the lifecycle RPC the control plane
//!   calls, the link to the control plane (registration, heartbeats), logging,
//!   and the wiring `src/bin/warren-agent.rs` runs.
//!
//! Capsule traffic never passes through here: the edge relays it on the
//! data-plane cores.

pub mod agent;
pub mod manager;
