//! envd: the daemon inside every capsule, compatible with E2B's envd so the
//! `e2b` SDKs (and Warren's control plane, an envd client) drive capsules
//! unchanged.
//!
//! It serves, on one port (49983), over HTTP/1.1 and HTTP/2 with prior
//! knowledge:
//! - Connect RPC `process.Process` ([`process`]) and `filesystem.Filesystem`
//!   ([`fs`]);
//! - `/health`, `/init`, `/envs`, `/metrics`, `/files` ([`http`]), and the
//!   agent-only `/snapshot/prepare` ([`conns`]).
//!
//! It runs as root and acts as the user each request names. When it is a
//! capsule's init (pid 1) it reaps every orphan.

pub mod auth;
pub mod conns;
pub mod fs;
pub mod http;
pub mod paths;
pub mod process;
pub mod server;
pub mod state;
pub mod users;
