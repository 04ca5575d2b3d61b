//! `warren-uffd`: the userfaultfd page server that restored Firecracker microVMs
//! fault their guest memory in through.
//!
//! It runs inside `warren-agent` on the data plane's io_uring cores
//! (`warren-runtime`): for each restore the agent calls
//! [`PageServer::spawn`] on a core with the snapshot's memory file; Firecracker
//! connects to the socket and hands over its userfaultfd; faults are served from
//! the memory file (holes as zero pages, diff layers on top), with fault-around,
//! and the pages the restore touched are recorded so the next restore of that
//! snapshot prefetches them.
//!
//! Module map:
//! - [`handshake`]: Firecracker's JSON + `SCM_RIGHTS` message, parsed and validated.
//! - [`memory`]: the snapshot's memory file and diff layers, mmap'd, with the
//!   block -> layer map from the files' holes.
//! - [`layout`]: memory-file offsets <-> the faulting process's addresses.
//! - [`event`]: decoding of userfaultfd messages.
//! - `engine`: the runtime-free serving core (faults, events, fault-around, prefetch).
//! - `prefetch`: which part of a working set to copy next (2 MiB extents by first touch).
//! - [`server`]: the compio task, the socket, and the agent-facing handle.
//! - [`working_set`]: working-set recording and its file format.
//! - [`stats`]: per-VM counters and the fault latency histogram.
//! - [`guest`]: Firecracker's side of the handshake, for tests, benches and
//!   `warren-uffd guest`.
//! - [`sys`]: safe wrappers of the userfaultfd ioctls; the only `unsafe` besides
//!   `mmap` and the guest stand-in.

mod engine;
pub mod event;
pub mod guest;
pub mod handshake;
pub mod layout;
pub mod memory;
mod prefetch;
pub mod server;
pub mod stats;
pub mod sys;
pub mod working_set;

pub use handshake::{HandshakeError, PageSize, Region};
pub use memory::{MemoryError, Snapshot};
pub use server::{End, Outcome, PageServer, ServerConfig, ServerError, State};
pub use stats::Stats;
pub use working_set::{WorkingSet, WorkingSetError};
