//! `warren-uffd`: the userfaultfd page server that restored Firecracker microVMs
//! fault their guest memory in through.
//!
//! It runs inside `warren-agent` on the data plane's io_uring cores: it accepts
//! Firecracker's handshake on a Unix socket, serves page faults from the memory
//! snapshot file, records each restore's working set and prefetches it on the
//! next one. See DESIGN.md ("Page serving").
//!
//! Not built yet: this crate holds only its description.
