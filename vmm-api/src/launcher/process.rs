//! A running Firecracker process: its API client, liveness, and stopping it
//! (SIGTERM, a grace period, then SIGKILL).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::pidfd::PidFd;
use super::stale::FoundInstance;
use crate::client::Client;
use crate::error::LaunchError;

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was already gone.
    AlreadyExited,
    /// It exited within the grace period after SIGTERM.
    Terminated,
    /// It ignored SIGTERM and was killed.
    Killed,
}

/// How long to wait for the kernel to finish a SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// One Firecracker process (started here or adopted after an agent restart).
#[derive(Debug)]
pub struct Firecracker {
    id: String,
    pidfd: PidFd,
    api_socket: PathBuf,
    dir: PathBuf,
    chroot: Option<PathBuf>,
    /// Our child (reap it) or adopted (someone else reaps it).
    own_child: bool,
}

impl Firecracker {
    pub(super) fn spawned(
        id: String,
        pidfd: PidFd,
        api_socket: PathBuf,
        dir: PathBuf,
        chroot: Option<PathBuf>,
    ) -> Self {
        Self {
            id,
            pidfd,
            api_socket,
            dir,
            chroot,
            own_child: true,
        }
    }

    pub(super) fn adopt(found: &FoundInstance, dir: PathBuf) -> Result<Self, LaunchError> {
        let pidfd = PidFd::open(found.pid)
            .map_err(|e| LaunchError::io(format!("pidfd_open({})", found.pid), e))?;
        // The pid could have been reused between the scan and pidfd_open.
        if !found.still_matches() {
            return Err(LaunchError::io(
                format!("adopting instance {}", found.id),
                std::io::Error::new(std::io::ErrorKind::NotFound, "process is gone"),
            ));
        }
        Ok(Self {
            id: found.id.clone(),
            pidfd,
            api_socket: found.api_socket.clone(),
            chroot: found.chroot.clone(),
            dir,
            own_child: false,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn pid(&self) -> u32 {
        self.pidfd.pid()
    }

    /// The API socket's host path.
    pub fn api_socket(&self) -> &Path {
        &self.api_socket
    }

    /// The jailer chroot, when jailed: files Firecracker opens go here.
    pub fn chroot(&self) -> Option<&Path> {
        self.chroot.as_deref()
    }

    /// A client for this instance's API.
    pub fn client(&self) -> Client {
        Client::new(&self.api_socket)
    }

    pub fn is_running(&self) -> bool {
        !self.pidfd.has_exited()
    }

    /// Waits up to `timeout` for the process to exit by itself (e.g. after
    /// `SendCtrlAltDel`). `true` if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let exited = self.pidfd.wait_exit(timeout).await;
        if exited && self.own_child {
            reap(self.pid());
        }
        exited
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. The instance directory
    /// (API socket, jail) is removed afterwards.
    pub async fn stop(self, grace: Duration) -> Result<StopOutcome, LaunchError> {
        let pid = self.pid();
        let signal = |s: Signal| {
            self.pidfd
                .signal(s)
                .map_err(|e| LaunchError::io(format!("sending {s} to {pid}"), e))
        };
        let outcome = if !signal(Signal::SIGTERM)? {
            StopOutcome::AlreadyExited
        } else if self.pidfd.wait_exit(grace).await {
            StopOutcome::Terminated
        } else {
            tracing::warn!(id = %self.id, pid, ?grace, "firecracker ignored SIGTERM; killing it");
            signal(Signal::SIGKILL)?;
            if !self.pidfd.wait_exit(KILL_WAIT).await {
                return Err(LaunchError::StillAlive { pid });
            }
            StopOutcome::Killed
        };
        if self.own_child {
            reap(pid);
        }
        remove_instance_dir(&self.dir)?;
        tracing::info!(id = %self.id, pid, ?outcome, "firecracker stopped");
        Ok(outcome)
    }
}

/// Collects our exited child's status; returns it as text for messages.
pub(super) fn reap(pid: u32) -> String {
    match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => format!("exit code {code}"),
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("status unknown ({e})"),
    }
}

pub(super) fn remove_instance_dir(dir: &Path) -> Result<(), LaunchError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LaunchError::io(format!("removing {}", dir.display()), e)),
    }
}
