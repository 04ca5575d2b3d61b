//! Pipes for zero-copy relays: socket → pipe → socket with `splice(2)`, so
//! body bytes never enter user space. Each core keeps a small pool so an idle
//! connection holds no pipe; a pipe goes back to the pool only when empty.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};

use super::{Socket, writable};

/// Pipe buffer size asked for (the default 64 KiB means more syscalls per MiB);
/// the kernel may cap it (`/proc/sys/fs/pipe-max-size`), in which case the
/// default stays.
const PIPE_SIZE: i32 = 1 << 20;

/// Idle pipes kept per core.
const POOL_MAX: usize = 64;

/// A non-blocking pipe used as the in-kernel buffer of one splice relay.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// Creates a non-blocking pipe, as large as the kernel allows up to 1 MiB.
    pub fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let capacity = match fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
            Ok(size) => usize::try_from(size).unwrap_or(64 << 10),
            Err(_) => 64 << 10,
        };
        Ok(Self {
            read,
            write,
            capacity,
        })
    }

    /// How many bytes one fill can move.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `max` bytes that are already waiting on `from` into the
    /// pipe. `None`: nothing there yet (wait for readability); `Some(0)`: end
    /// of stream. The pipe must be empty.
    pub fn fill_from(&self, from: &Socket, max: usize) -> io::Result<Option<usize>> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        loop {
            match splice(
                from.fd().as_ref(),
                None,
                &self.write,
                None,
                max.min(self.capacity),
                flags,
            ) {
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Moves exactly `len` bytes from the pipe to `to`, waiting for room as needed.
    pub async fn drain_to(&self, to: &Socket, mut len: usize) -> io::Result<()> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        while len > 0 {
            match splice(&self.read, None, to.fd().as_ref(), None, len, flags) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => len -= n,
                Err(Errno::EAGAIN) => writable(to.fd()).await?,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(())
    }
}

/// A core's idle pipes.
#[derive(Default)]
pub struct PipePool {
    idle: RefCell<Vec<Pipe>>,
}

impl PipePool {
    /// An idle pipe, or a new one.
    pub fn take(&self) -> io::Result<Pipe> {
        match self.idle.borrow_mut().pop() {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(),
        }
    }

    /// Returns an empty pipe (callers drop a pipe that may hold bytes instead).
    pub fn put(&self, pipe: Pipe) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < POOL_MAX {
            idle.push(pipe);
        }
    }
}
