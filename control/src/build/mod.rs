//! Template builds: a recipe (parsed and planned by the `warren-recipe`
//! crate) run step by step in a build capsule, its result registered as a
//! team template.
//!
//! Builds are queued by [`crate::domain::builds`] (which checks
//! everything it can first); their rows, the queue's claim and lease and
//! the fenced writes are [`crate::db::builds`].
//!
//! - [`worker`]: each replica's workers, taking builds from the queue;
//!   [`runner`]: one build attempt from capsule to template; [`exec`]: the
//!   steps through envd; [`cache`]: the per-step layer cache.
//! - [`notify`]: wake-ups between replicas (queued, cancel, new log lines).

pub mod cache;
pub mod exec;
pub mod notify;
pub mod runner;
pub mod worker;
