//! Integration tests of warren-control against a real throwaway Postgres.
//! One test binary (one cluster); each test gets its own database.

mod common;
mod stub_agent;

mod admin;
mod auth;
mod bad_input;
mod hosts;
mod in_capsule;
mod isolation;
mod lifecycle;
mod replicas;
mod sdk;
mod ws;
