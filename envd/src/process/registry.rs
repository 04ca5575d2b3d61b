//! The processes envd runs: started here, found by pid or tag, fed input,
//! signalled, and forgotten once they have ended and their end event has
//! been delivered. A process outlives the stream that started it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    net::unix::pipe,
    sync::{mpsc, watch},
};
use warren_proto::process::{ProcessConfig, process_event::EndEvent};

use super::{
    output::{Fanout, Output, Subscription},
    pty::{Master, Size},
    reaper::{Exit, Reaper},
    spawn::{self, Command, Io},
};

const CHUNK: usize = 32 * 1024;

/// How a process takes input.
#[derive(Debug)]
enum Input {
    Pipe(tokio::sync::Mutex<Option<pipe::Sender>>),
    Terminal(Arc<Master>),
}

/// Why input or a resize could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("process {0} runs on a terminal: send terminal input, not stdin")]
    IsTerminal(u32),
    #[error("process {0} has no terminal: send stdin, not terminal input")]
    NotTerminal(u32),
    #[error("stdin of process {0} is not open (started without stdin, or closed)")]
    StdinClosed(u32),
    #[error("writing to process {pid}: {source}")]
    Io { pid: u32, source: std::io::Error },
}

/// A running (or just ended) process.
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    pub config: ProcessConfig,
    pub tag: Option<String>,
    input: Input,
    pub fanout: Fanout,
}

impl Proc {
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), InputError> {
        use tokio::io::AsyncWriteExt;
        match &self.input {
            Input::Terminal(_) => Err(InputError::IsTerminal(self.pid)),
            Input::Pipe(stdin) => {
                let mut stdin = stdin.lock().await;
                let pipe = stdin.as_mut().ok_or(InputError::StdinClosed(self.pid))?;
                pipe.write_all(data).await.map_err(|source| InputError::Io {
                    pid: self.pid,
                    source,
                })
            }
        }
    }

    pub async fn write_terminal(&self, data: &[u8]) -> Result<(), InputError> {
        match &self.input {
            Input::Pipe(_) => Err(InputError::NotTerminal(self.pid)),
            Input::Terminal(master) => {
                master
                    .write_all(data)
                    .await
                    .map_err(|source| InputError::Io {
                        pid: self.pid,
                        source,
                    })
            }
        }
    }

    /// Closes stdin (EOF for the process). Closing a closed stdin is fine.
    pub async fn close_stdin(&self) -> Result<(), InputError> {
        match &self.input {
            Input::Terminal(_) => Err(InputError::IsTerminal(self.pid)),
            Input::Pipe(stdin) => {
                stdin.lock().await.take();
                Ok(())
            }
        }
    }

    pub fn resize(&self, size: Size) -> Result<(), InputError> {
        match &self.input {
            Input::Pipe(_) => Err(InputError::NotTerminal(self.pid)),
            Input::Terminal(master) => master.resize(size).map_err(|e| InputError::Io {
                pid: self.pid,
                source: e.into(),
            }),
        }
    }

    /// Signals the process's whole group (a shell and what it started).
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        match killpg(Pid::from_raw(self.pid as i32), signal) {
            // Already gone: its end event is on its way.
            Err(nix::errno::Errno::ESRCH) => Ok(()),
            other => other,
        }
    }
}

/// Finds a process.
#[derive(Clone, Debug)]
pub enum Selector {
    Pid(u32),
    Tag(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Pid(pid) => write!(f, "process with pid {pid}"),
            Selector::Tag(tag) => write!(f, "process with tag {tag:?}"),
        }
    }
}

type Table = Arc<Mutex<HashMap<u32, Arc<Proc>>>>;

#[derive(Debug)]
pub struct Registry {
    procs: Table,
    reaper: Arc<Reaper>,
}

impl Registry {
    /// Must be called inside the tokio runtime (it starts the reaper).
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            procs: Arc::default(),
            reaper: Reaper::start()?,
        })
    }

    /// Starts a process and subscribes to its output before any is produced.
    /// With a `deadline`, the process group is killed when it passes.
    pub fn start(
        &self,
        cmd: &Command,
        config: ProcessConfig,
        tag: Option<String>,
        deadline: Option<Instant>,
    ) -> std::io::Result<(Arc<Proc>, Subscription)> {
        let child = spawn::spawn(cmd)?;
        let exit = self.reaper.watch(child.pid);
        let pid = child.pid.as_raw() as u32;
        let (exited_tx, exited_rx) = watch::channel(None::<Exit>);
        let (out_tx, out_rx) = mpsc::channel::<Output>(16);
        let input = match child.io {
            Io::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                tokio::spawn(read_pipe(
                    stdout,
                    Output::Stdout,
                    out_tx.clone(),
                    exited_rx.clone(),
                ));
                tokio::spawn(read_pipe(stderr, Output::Stderr, out_tx, exited_rx.clone()));
                Input::Pipe(tokio::sync::Mutex::new(stdin))
            }
            Io::Terminal(master) => {
                let master = Arc::new(master);
                tokio::spawn(read_terminal(master.clone(), out_tx, exited_rx.clone()));
                Input::Terminal(master)
            }
        };
        let proc = Arc::new(Proc {
            pid,
            config,
            tag,
            input,
            fanout: Fanout::default(),
        });
        let subscription = proc.fanout.subscribe();
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, proc.clone());

        tokio::spawn(async move {
            // The reaper always answers; a dropped sender would mean envd is
            // shutting down, when no one is listening any more.
            if let Ok(status) = exit.await {
                let _ = exited_tx.send(Some(status));
            }
        });
        if let Some(deadline) = deadline {
            tokio::spawn(kill_at(pid, deadline, exited_rx.clone()));
        }
        tokio::spawn(pump(proc.clone(), out_rx, exited_rx, self.procs.clone()));
        Ok((proc, subscription))
    }

    pub fn get(&self, selector: &Selector) -> Option<Arc<Proc>> {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        match selector {
            Selector::Pid(pid) => procs.get(pid).cloned(),
            Selector::Tag(tag) => procs
                .values()
                .find(|p| p.tag.as_ref() == Some(tag))
                .cloned(),
        }
    }

    pub fn list(&self) -> Vec<Arc<Proc>> {
        let mut procs: Vec<_> = self
            .procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        procs.sort_by_key(|p| p.pid);
        procs
    }
}

/// Moves output into the fan-out until every reader is done, then sends the
/// end event and forgets the process.
async fn pump(
    proc: Arc<Proc>,
    mut outputs: mpsc::Receiver<Output>,
    mut exited: watch::Receiver<Option<Exit>>,
    table: Table,
) {
    while let Some(out) = outputs.recv().await {
        proc.fanout.publish(out).await;
    }
    let exit = match exited.wait_for(Option::is_some).await {
        Ok(status) => status.unwrap_or(Exit::Code(-1)),
        Err(_) => Exit::Code(-1),
    };
    let end = EndEvent {
        exit_code: exit.code(),
        exited: exit.exited(),
        status: exit.status(),
        error: (!exit.success()).then(|| exit.status()),
    };
    table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&proc.pid);
    proc.fanout.finish(end).await;
}

async fn kill_at(pid: u32, deadline: Instant, mut exited: watch::Receiver<Option<Exit>>) {
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => {
            tracing::info!(pid, "process deadline passed: killing its process group");
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        () = has_exited(&mut exited) => {}
    }
}

/// Resolves once the process has exited.
async fn has_exited(exited: &mut watch::Receiver<Option<Exit>>) {
    // An error means the sender is gone, which only happens after exit.
    let _ = exited.wait_for(Option::is_some).await.map(|_| ());
}

/// Reads a pipe until EOF; once the process has exited, reads only what is
/// already buffered (a backgrounded grandchild may hold the pipe open).
async fn read_pipe(
    mut pipe: pipe::Receiver,
    wrap: fn(Bytes) -> Output,
    tx: mpsc::Sender<Output>,
    mut exited: watch::Receiver<Option<Exit>>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            biased;
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if tx.send(wrap(Bytes::copy_from_slice(&buf[..n]))).await.is_err() { return },
            },
            () = has_exited(&mut exited) => {
                while let Ok(n) = pipe.try_read(&mut buf) {
                    if n == 0 || tx.send(wrap(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
}

async fn read_terminal(
    master: Arc<Master>,
    tx: mpsc::Sender<Output>,
    mut exited: watch::Receiver<Option<Exit>>,
) {
    let mut buf = vec![0u8; CHUNK / 2];
    loop {
        tokio::select! {
            biased;
            read = master.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if tx.send(Output::Pty(Bytes::copy_from_slice(&buf[..n]))).await.is_err() { return },
            },
            () = has_exited(&mut exited) => {
                while let Ok(n) = master.try_read(&mut buf) {
                    if n == 0 || tx.send(Output::Pty(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
}
