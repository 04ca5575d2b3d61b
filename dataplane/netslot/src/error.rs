//! The one error type of the network-slot module: every failure names what was
//! being done (the slot, the command, the file) so an operator can act on it.

use std::io;
use std::path::PathBuf;

/// What went wrong while managing network slots.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The configuration cannot work (bad prefix, overlapping ranges, ...).
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// A capsule id the slot manager refuses to record.
    #[error("invalid capsule id {id:?}: {reason}")]
    InvalidCapsuleId {
        /// The id as given.
        id: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A tx rate limit that `tc` cannot express.
    #[error("invalid tx rate limit: {0}")]
    InvalidTxLimit(String),
    /// The capsule already holds a slot.
    #[error("capsule {0:?} already has a network slot")]
    AlreadyAllocated(String),
    /// The capsule holds no slot (never had one, or it was released).
    #[error("capsule {0:?} has no network slot")]
    NotAllocated(String),
    /// Every address of the configured ranges is in use.
    #[error("no free network slot: all {0} slots are in use")]
    Exhausted(u32),
    /// The state file exists but does not describe this configuration.
    #[error("network state file {path}: {reason}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A netlink request failed.
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The kernel's (or the library's) answer.
        source: rtnetlink::Error,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An external tool (`nft`, `tc`) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl NetError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        Self::Netlink {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = NetError> = std::result::Result<T, E>;
