//! What the namespace backend persists per capsule (`backend.json` in the
//! capsule's directory) so a restarted agent can find, adopt and destroy it:
//! the spec, the cgroup name, the loop device and init's pid with its start
//! time (which tells a live init from an unrelated process that reused the
//! pid).

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::CapsuleSpec;

pub const STATE_FILE: &str = "backend.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Persisted {
    pub spec: CapsuleSpec,
    /// Name of the capsule's cgroup under the backend's cgroup parent.
    pub cgroup: String,
    pub disk_image: PathBuf,
    /// `/dev/loopN` holding the disk, once attached.
    pub loop_device: Option<u32>,
    /// Set once init has exec'd.
    pub init: Option<InitProcess>,
}

/// A process identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitProcess {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot).
    pub start_time: u64,
}

impl InitProcess {
    pub fn of(pid: i32) -> io::Result<Self> {
        Ok(Self {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// Whether this very process still exists (a zombie counts as gone).
    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => parse_stat(&stat)
                .is_some_and(|(state, start)| state != 'Z' && start == self.start_time),
            Err(_) => false,
        }
    }
}

impl InitProcess {
    /// A pidfd for this very process, or `None` when it is gone.
    pub fn pidfd(&self) -> io::Result<Option<OwnedFd>> {
        // SAFETY: pidfd_open takes plain integers and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ESRCH) {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Checked after opening: the descriptor now pins this pid, so a
        // matching start time proves it is our process.
        Ok(self.alive().then_some(fd))
    }
}

/// Waits until the process behind `pidfd` has exited (a pid namespace's
/// init exits only after every other process of the namespace).
pub fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let ms =
        PollTimeout::try_from(timeout.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, ms) {
            Ok(n) => return Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat)
        .map(|(_, start)| start)
        .ok_or_else(|| io::Error::other(format!("unparsable /proc/{pid}/stat")))
}

/// (state, start time) from a `/proc/<pid>/stat` line. The command name can
/// hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3 (state); start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Writes the state atomically.
pub fn save(dir: &Path, state: &Persisted) -> io::Result<()> {
    crate::persist::save(dir, STATE_FILE, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_names() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 12345)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive() {
        let me = InitProcess::of(std::process::id() as i32).expect("self");
        assert!(me.alive());
        let other = InitProcess {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
    }
}
