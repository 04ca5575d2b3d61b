//! `vmm-api`: a typed client for Firecracker's REST API over its Unix socket,
//! and the launcher that starts Firecracker processes for the agent's
//! microVM backend. See DESIGN.md ("Backends").
//!
//! Not built yet: this crate holds only its description.
