//! Pseudo-terminals: allocation with a size, the master side as an async
//! reader/writer, and resizing.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::{
    fcntl::{FcntlArg, FdFlag, OFlag, fcntl},
    pty::{Winsize, openpty},
};
use tokio::io::unix::AsyncFd;

/// A terminal size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub cols: u16,
    pub rows: u16,
}

impl Size {
    /// Validates a requested size: both dimensions between 1 and 65535.
    pub fn new(cols: u32, rows: u32) -> Option<Self> {
        let cols = u16::try_from(cols).ok().filter(|c| *c > 0)?;
        let rows = u16::try_from(rows).ok().filter(|r| *r > 0)?;
        Some(Self { cols, rows })
    }

    fn winsize(self) -> Winsize {
        Winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// A fresh pseudo-terminal pair.
pub struct Pair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

pub fn open(size: Size) -> nix::Result<Pair> {
    let pty = openpty(Some(&size.winsize()), None)?;
    // The master must not leak into the child; the slave becomes its stdio.
    fcntl(&pty.master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    fcntl(&pty.slave, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(Pair {
        master: pty.master,
        slave: pty.slave,
    })
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// The master side of a terminal, non-blocking and registered with tokio.
#[derive(Debug)]
pub struct Master {
    fd: AsyncFd<OwnedFd>,
}

impl Master {
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: `fd` is an open descriptor we own; the AsyncFd takes
        // ownership, so it stays open and unchanged for the AsyncFd's life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
        Ok(Self { fd })
    }

    /// Reads output; `Ok(0)` once the terminal is closed (EIO after the last
    /// slave descriptor is gone).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what is available now without waiting.
    pub fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match nix::unistd::read(self.fd.get_ref(), buf) {
            Err(nix::errno::Errno::EIO) => Ok(0),
            other => other.map_err(std::io::Error::from),
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    pub fn resize(&self, size: Size) -> nix::Result<()> {
        let ws = size.winsize();
        // SAFETY: TIOCSWINSZ reads one `Winsize` from the pointer, which is
        // valid for the duration of the call; the fd is our open master.
        unsafe { set_winsize(self.fd.get_ref().as_raw_fd(), &ws) }.map(drop)
    }
}
