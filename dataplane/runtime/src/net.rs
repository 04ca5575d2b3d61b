//! Non-blocking TCP sockets driven by io_uring readiness: `SO_REUSEPORT`
//! listeners (one per core) and connected streams.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, Shutdown};
use socket2::{Domain, Protocol, SockAddr, Type};

use super::{readable, writable};

/// A listening socket bound with `SO_REUSEPORT`, so every core can bind its
/// own on the same address and the kernel spreads connections across them.
pub struct Listener {
    fd: Rc<OwnedFd>,
}

impl Listener {
    /// Binds `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` (callable from any
    /// thread; the core that will accept on it wraps it with [`Listener::new`]).
    pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
        let socket =
            socket2::Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        Ok(socket.into())
    }

    /// Takes over a listening socket made by [`Listener::bind_reuseport`].
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd: Rc::new(fd) }
    }

    /// The descriptor, so a control task can shut it down to stop accepting.
    pub fn fd(&self) -> &Rc<OwnedFd> {
        &self.fd
    }

    /// Accepts one connection, waiting for one if none is pending.
    pub async fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        loop {
            match sock_ref(&self.fd).accept() {
                Ok((socket, peer)) => {
                    let peer = peer.as_socket().ok_or_else(not_inet)?;
                    return Ok((Socket::from_socket2(socket)?, peer));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    readable(&self.fd).await?
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// A connected, non-blocking TCP stream with `TCP_NODELAY`.
///
/// The descriptor is reference-counted so that in-flight readiness polls and
/// the per-core connection registry (which may shut it down) can hold it.
pub struct Socket {
    fd: Rc<OwnedFd>,
}

impl Socket {
    fn from_socket2(socket: socket2::Socket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        Ok(Self {
            fd: Rc::new(socket.into()),
        })
    }

    /// Takes over an accepted or connected std stream.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<Self> {
        Self::from_socket2(stream.into())
    }

    /// Connects to `addr` without blocking the core.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let socket =
            socket2::Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {
                let socket = Self::from_socket2(socket)?;
                writable(&socket.fd).await?;
                if let Some(error) = sock_ref(&socket.fd).take_error()? {
                    return Err(error);
                }
                return Ok(socket);
            }
            Err(error) => return Err(error),
        }
        Self::from_socket2(socket)
    }

    /// The shared descriptor (for readiness polls, splice and force-close).
    pub fn fd(&self) -> &Rc<OwnedFd> {
        &self.fd
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// One `recv` without waiting: `None` when nothing is there yet.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match nix::sys::socket::recv(self.raw(), buf, MsgFlags::empty()) {
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Receives at least one byte, or 0 at end of stream.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(n) = self.try_recv(buf)? {
                return Ok(n);
            }
            readable(&self.fd).await?;
        }
    }

    /// Waits until there is something to read (or the peer hung up).
    pub async fn readable(&self) -> io::Result<()> {
        readable(&self.fd).await
    }

    /// Sends all of `buf`.
    pub async fn send_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match nix::sys::socket::send(self.raw(), buf, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => buf = &buf[n..],
                Err(Errno::EAGAIN) => writable(&self.fd).await?,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(())
    }

    /// Sends our FIN (half-close): the peer reads end of stream, we can still read.
    pub fn shutdown_write(&self) {
        // Errors only mean the connection is already gone.
        let _ = nix::sys::socket::shutdown(self.raw(), Shutdown::Write);
    }

    /// True when a pooled idle connection can no longer carry a request: the
    /// peer closed it, reset it, or sent bytes nobody asked for.
    pub fn is_stale(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(
            nix::sys::socket::recv(
                self.raw(),
                &mut probe,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
            ),
            Err(Errno::EAGAIN)
        )
    }
}

/// Shuts a socket down in both directions: every pending poll on it wakes up
/// and every later read or write fails, so its owner task winds down. Used to
/// force-close connections from outside the task that owns them.
pub fn shutdown_both(fd: &OwnedFd) {
    // Errors only mean the connection is already gone.
    let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), Shutdown::Both);
}

/// The local address of a socket (useful after binding port 0).
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    sock_ref(fd).local_addr()?.as_socket().ok_or_else(not_inet)
}

fn sock_ref(fd: &OwnedFd) -> socket2::SockRef<'_> {
    socket2::SockRef::from(fd)
}

fn not_inet() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket address")
}
