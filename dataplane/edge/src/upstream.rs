//! Upstream connections: dialing a capsule port with retry (ports that are
//! just coming up refuse for a moment), and each core's pool of idle
//! keep-alive connections, keyed by capsule and address so that a reused
//! network slot never inherits another capsule's connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::ProxyConfig;
use warren_runtime::{self as runtime, Socket};

/// Why no upstream connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Every attempt failed (refused, unreachable, reset…).
    #[error("{attempts} attempt(s) failed: {source}")]
    Failed {
        /// Attempts made.
        attempts: usize,
        /// The last failure.
        source: io::Error,
    },
    /// An attempt did not complete within the connect timeout.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// Connects to `addr`, retrying after "connection refused" with the
/// configured backoff (100 ms then 200 ms by default: 3 attempts).
pub async fn dial(addr: SocketAddr, config: &ProxyConfig) -> Result<Socket, DialError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match runtime::timeout(config.connect_timeout, Socket::connect(addr)).await {
            None => return Err(DialError::TimedOut(config.connect_timeout)),
            Some(Ok(socket)) => return Ok(socket),
            Some(Err(error)) => match config.dial_backoff.get(attempt - 1) {
                Some(wait) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::debug!(%addr, attempt, "connection refused; retrying");
                    runtime::sleep(*wait).await;
                }
                _ => {
                    return Err(DialError::Failed {
                        attempts: attempt,
                        source: error,
                    });
                }
            },
        }
    }
}

type Key = (Rc<str>, SocketAddr);

/// One core's idle upstream connections.
#[derive(Default)]
pub struct UpstreamPool {
    idle: RefCell<HashMap<Key, Vec<(Socket, Instant)>>>,
}

impl UpstreamPool {
    /// An idle connection to `addr` of capsule `id`, if any. With `probe`,
    /// one the upstream has closed meanwhile is skipped (a syscall); without,
    /// the caller must be able to retry on a fresh connection.
    pub fn take(
        &self,
        id: &Rc<str>,
        addr: SocketAddr,
        max_idle: Duration,
        probe: bool,
    ) -> Option<Socket> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&(Rc::clone(id), addr))?;
        while let Some((socket, since)) = list.pop() {
            if since.elapsed() < max_idle && !(probe && socket.is_stale()) {
                return Some(socket);
            }
        }
        None
    }

    /// Keeps `socket` for reuse (dropped when the pool for that key is full).
    pub fn put(&self, id: &Rc<str>, addr: SocketAddr, socket: Socket, max: usize) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry((Rc::clone(id), addr)).or_default();
        if list.len() < max {
            list.push((socket, Instant::now()));
        }
    }

    /// Closes every idle connection of capsule `id`.
    pub fn purge(&self, id: &str) {
        self.idle
            .borrow_mut()
            .retain(|(capsule, _), _| &**capsule != id);
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }
}
