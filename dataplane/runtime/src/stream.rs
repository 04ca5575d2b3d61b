//! What the relays need of a client or upstream connection, whatever carries
//! it: a plain [`Socket`] (bytes can be spliced through the kernel) or a
//! stream that transforms them in user space (TLS).

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use crate::Socket;

/// A connected byte stream on a data-plane core.
pub trait Stream {
    /// The descriptor underneath, for force-closing from the core's registry.
    fn fd(&self) -> &Rc<OwnedFd>;

    /// The socket itself when bytes cross it unchanged, so a relay may
    /// `splice` them; `None` when they must pass through user space.
    fn plain(&self) -> Option<&Socket>;

    /// Bytes already waiting, without blocking: `None` when nothing is yet,
    /// `Some(0)` at end of stream.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// Waits until [`Stream::try_recv`] can make progress.
    fn readable(&self) -> impl Future<Output = io::Result<()>>;

    /// Sends all of `buf`.
    fn send_all(&self, buf: &[u8]) -> impl Future<Output = io::Result<()>>;

    /// Ends our direction (the peer reads end of stream; we can still read).
    fn shutdown_write(&self) -> impl Future<Output = ()>;
}

impl Stream for Socket {
    fn fd(&self) -> &Rc<OwnedFd> {
        Socket::fd(self)
    }

    fn plain(&self) -> Option<&Socket> {
        Some(self)
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Socket::try_recv(self, buf)
    }

    async fn readable(&self) -> io::Result<()> {
        Socket::readable(self).await
    }

    async fn send_all(&self, buf: &[u8]) -> io::Result<()> {
        Socket::send_all(self, buf).await
    }

    async fn shutdown_write(&self) {
        Socket::shutdown_write(self);
    }
}
