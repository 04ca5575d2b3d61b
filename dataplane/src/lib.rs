//! `warren-dataplane`: the host agent (`warren-agent`). One per host, it owns
//! that host's capsules: backends, network slots, copy-on-write root
//! filesystems, snapshots, the page server, and the thread-per-core io_uring
//! data plane that relays user traffic and envd calls into capsules.
//! See DESIGN.md ("The data plane").

pub mod cow_disk;
pub mod netslot;
