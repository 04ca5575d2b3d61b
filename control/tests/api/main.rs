//! Integration tests of warren-control against a real throwaway Postgres.
//! One test binary (one cluster); each test gets its own database.
#![allow(clippy::unwrap_used)] // tests: failing loudly is the point

mod common;
mod local_envd;
mod real_agent;
mod stub_agent;

mod admin;
mod auth;
mod bad_input;
mod build_input;
mod builds;
mod daemon;
mod extension;
mod hosts;
mod in_capsule;
mod isolation;
mod lifecycle;
mod replicas;
mod sdk;
mod ws;
