//! A process handle that cannot be confused with a later process reusing the
//! same pid: signals go through `pidfd_send_signal`, exit is awaited by
//! polling the pidfd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;

#[derive(Debug)]
pub(crate) struct PidFd {
    pid: u32,
    fd: AsyncFd<OwnedFd>,
}

impl PidFd {
    /// Opens a pidfd for `pid`. Fails with `ESRCH` when it is gone.
    pub(crate) fn open(pid: u32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
        // no memory is passed.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        // SAFETY: `OwnedFd` always returns the same open fd until it is
        // dropped together with the `AsyncFd`.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(Self { pid, fd })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal`. `Ok(false)` when the process has already exited.
    pub(crate) fn signal(&self, signal: Signal) -> io::Result<bool> {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, a
        // null siginfo (the kernel fills it in) and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.get_ref().as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(false)
        } else {
            Err(e)
        }
    }

    /// Whether the process has exited (a pidfd polls readable then).
    pub(crate) fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Waits until the process exits; `false` if `timeout` passed first.
    pub(crate) async fn wait_exit(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                match self.fd.readable().await {
                    Ok(mut guard) => {
                        if self.has_exited() {
                            return;
                        }
                        guard.clear_ready();
                    }
                    // Cannot poll: fall back to checking now and then.
                    Err(_) => {
                        if self.has_exited() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}
