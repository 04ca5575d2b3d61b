//! The `warren` command line: `up` / `down` / `status` for a local
//! installation, and user commands against any control plane.

pub mod pg;
