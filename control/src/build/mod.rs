//! Template builds: a recipe ([`crate::recipe`]) run step by step in a
//! build capsule, its result registered as a team template.
//!
//! - [`submit`]: checks a build request (name, base, recipe, archive) and
//!   queues it; everything wrong is a typed error before anything is
//!   stored.
//! - [`store`]: the build rows, steps and logs in Postgres, the queue's
//!   claim and lease, and fenced writes.
//! - [`worker`]: each replica's workers, taking builds from the queue;
//!   [`runner`]: one build attempt from capsule to template; [`exec`]: the
//!   steps through envd; [`plan`]: the recipe resolved into steps;
//!   [`archive`]: the files COPY reads; [`cache`]: the per-step layer cache.
//! - [`notify`]: wake-ups between replicas (queued, cancel, new log lines);
//!   [`status`]: the build and step states.

pub mod archive;
pub mod cache;
pub mod exec;
pub mod notify;
pub mod plan;
pub mod runner;
pub mod status;
pub mod store;
pub mod submit;
pub mod worker;
