//! `warren-control`: the control plane (`warren-control`) and the `warren` CLI.
//! It serves the public REST API (Wrenn-compatible), authenticates users and
//! keys, schedules capsules onto hosts and keeps all state in Postgres.
//! See DESIGN.md ("Processes and how they talk").
//!
//! Not built yet: this crate holds only its description.

pub mod recipe;
