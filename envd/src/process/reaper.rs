//! Collects the exit status of every child envd spawned, and of orphans it
//! inherits when it runs as a capsule's init (pid 1).
//!
//! One task owns `waitpid(-1)`: on every SIGCHLD it reaps until nothing is
//! left, hands each status to whoever registered that pid, and keeps
//! statuses nobody asked for yet (a child can exit before its spawner
//! registers it) until they are claimed. Orphans are simply reaped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::{
    sys::{
        signal::Signal,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal { signal: i32, core_dumped: bool },
}

impl Exit {
    /// The exit code, or -1 when a signal ended the process (as Go reports it).
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal { .. } => -1,
        }
    }

    pub fn exited(self) -> bool {
        matches!(self, Exit::Code(_))
    }

    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// `exit status 1`, `signal: killed`: the status strings E2B's envd sends.
    pub fn status(self) -> String {
        match self {
            Exit::Code(c) => format!("exit status {c}"),
            Exit::Signal {
                signal,
                core_dumped,
            } => {
                let name = match Signal::try_from(signal) {
                    Ok(Signal::SIGKILL) => "killed".to_owned(),
                    Ok(Signal::SIGTERM) => "terminated".to_owned(),
                    Ok(Signal::SIGINT) => "interrupt".to_owned(),
                    Ok(Signal::SIGHUP) => "hangup".to_owned(),
                    Ok(Signal::SIGQUIT) => "quit".to_owned(),
                    Ok(Signal::SIGABRT) => "aborted".to_owned(),
                    Ok(Signal::SIGSEGV) => "segmentation fault".to_owned(),
                    Ok(Signal::SIGPIPE) => "broken pipe".to_owned(),
                    Ok(Signal::SIGBUS) => "bus error".to_owned(),
                    Ok(Signal::SIGFPE) => "floating point exception".to_owned(),
                    Ok(Signal::SIGUSR1) => "user defined signal 1".to_owned(),
                    Ok(Signal::SIGUSR2) => "user defined signal 2".to_owned(),
                    _ => format!("signal {signal}"),
                };
                if core_dumped {
                    format!("signal: {name} (core dumped)")
                } else {
                    format!("signal: {name}")
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, Exit>,
}

/// The reaper. Create it once, before spawning anything.
#[derive(Debug, Default)]
pub struct Reaper {
    table: Mutex<Table>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD (and, as a safety net, every second).
    pub fn start() -> std::io::Result<Arc<Self>> {
        let reaper = Arc::new(Self::default());
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = sweep.tick() => {}
                }
                r.reap();
            }
        });
        Ok(reaper)
    }

    /// The exit status of `pid`, when it comes. Call right after spawning.
    pub fn watch(&self, pid: Pid) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match table.unclaimed.remove(&pid.as_raw()) {
            Some(exit) => {
                let _ = tx.send(exit);
            }
            None => {
                table.waiting.insert(pid.as_raw(), tx);
            }
        }
        rx
    }

    /// Reaps every child that has exited.
    pub fn reap(&self) {
        loop {
            let exit = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, core_dumped)) => (
                    pid,
                    Exit::Signal {
                        signal: sig as i32,
                        core_dumped,
                    },
                ),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let (pid, exit) = exit;
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            match table.waiting.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                // Either an orphan we inherited as init, or a child that beat
                // its spawner to registration. Keep a bounded record.
                None if table.unclaimed.len() < 4096 => {
                    table.unclaimed.insert(pid.as_raw(), exit);
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings_match_go() {
        assert_eq!(Exit::Code(1).status(), "exit status 1");
        assert_eq!(
            Exit::Signal {
                signal: libc::SIGKILL,
                core_dumped: false
            }
            .status(),
            "signal: killed"
        );
        assert_eq!(
            Exit::Signal {
                signal: 15,
                core_dumped: true
            }
            .status(),
            "signal: terminated (core dumped)"
        );
        assert_eq!(
            Exit::Signal {
                signal: 9,
                core_dumped: false
            }
            .code(),
            -1
        );
    }
}
