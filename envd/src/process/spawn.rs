//! Starting a process the way envd's clients expect: as a given user (real
//! uid, gid and supplementary groups), with an exact environment and working
//! directory, in its own process group (or its own session with a
//! controlling terminal), and with piped or terminal I/O.

use std::{
    os::{fd::OwnedFd, unix::process::CommandExt},
    path::PathBuf,
    process::Stdio,
};

use nix::unistd::Pid;
use tokio::net::unix::pipe;

use super::pty::{self, Master, Size};
use crate::users::User;

/// What to run.
#[derive(Debug)]
pub struct Command {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub user: User,
    /// Run on a new terminal of this size instead of pipes.
    pub terminal: Option<Size>,
    /// Pipe stdin (else it is `/dev/null`); ignored with a terminal.
    pub stdin: bool,
}

/// A started process's I/O.
#[derive(Debug)]
pub enum Io {
    Pipes {
        stdin: Option<pipe::Sender>,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
    Terminal(Master),
}

/// A started process.
#[derive(Debug)]
pub struct Child {
    pub pid: Pid,
    pub io: Io,
}

/// Starts `cmd`. The caller must register `pid` with the reaper at once.
pub fn spawn(cmd: &Command) -> std::io::Result<Child> {
    let mut command = std::process::Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cmd.cwd);

    let terminal = match cmd.terminal {
        Some(size) => {
            let pair = pty::open(size)?;
            command
                .stdin(Stdio::from(pair.slave.try_clone()?))
                .stdout(Stdio::from(pair.slave.try_clone()?))
                .stderr(Stdio::from(pair.slave));
            Some(pair.master)
        }
        None => {
            command
                .stdin(if cmd.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };

    let uid = cmd.user.uid.as_raw();
    let gid = cmd.user.gid.as_raw();
    let groups: Vec<libc::gid_t> = cmd.user.groups.iter().map(|g| g.as_raw()).collect();
    let as_root = nix::unistd::getuid().is_root();
    if !as_root && nix::unistd::getuid().as_raw() != uid {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "envd is not root and cannot run processes as {}",
                cmd.user.name
            ),
        ));
    }
    let with_terminal = terminal.is_some();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            if with_terminal {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Under memory pressure the workload goes before envd does.
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(fd, b"100".as_ptr().cast(), 3);
                libc::close(fd);
            }
            if as_root
                && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let mut child = command.spawn()?;
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(std::io::Error::other)?);
    let io = match terminal {
        Some(master) => Io::Terminal(Master::new(master)?),
        None => {
            let stdin = match child.stdin.take() {
                Some(s) => Some(pipe::Sender::from_owned_fd(OwnedFd::from(s))?),
                None => None,
            };
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| std::io::Error::other("stdout pipe missing"))?;
            let stderr = child
                .stderr
                .take()
                .ok_or_else(|| std::io::Error::other("stderr pipe missing"))?;
            Io::Pipes {
                stdin,
                stdout: pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?,
                stderr: pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))?,
            }
        }
    };
    // `child` is dropped without waiting: the reaper collects its status.
    Ok(Child { pid, io })
}
