//! Page servers for restored microVMs (`warren-uffd`), run on the data
//! plane's io_uring cores ([`Cores`]).
//!
//! On a restore Firecracker connects to the socket named in the snapshot
//! load and sends its handshake (guest memory regions, and its userfaultfd
//! in `SCM_RIGHTS`). The backend takes that handshake itself, keeps the
//! region list (persisted with the capsule), and hands the regions and the
//! userfaultfd to a [`PageServer`] over the server's own socket. Keeping the
//! regions is what lets a restarted agent give a still-running VM a new
//! page server: it takes the userfaultfd back out of the Firecracker process
//! (`pidfd_getfd`), wakes any fault the old server had read but not served,
//! and hands both over again ([`Pager::reattach`]).
//!
//! The page server serves until the backend closes its connection to it
//! (after stopping the VM), then saves the working set it recorded next to
//! the memory file; the next restore of that snapshot prefetches it.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use warren_uffd::handshake::{self, Assembler, Chunk, HandshakeError};
use warren_uffd::{PageServer, ServerConfig, Snapshot, WorkingSet, working_set};

use warren_runtime::Cores;

/// Starts page servers on the data-plane cores.
#[derive(Clone)]
pub struct Pager {
    cores: Arc<dyn Cores>,
    /// How long Firecracker has to connect and send its handshake.
    pub handshake_timeout: Duration,
    /// How long a page server has to finish (and save its working set)
    /// once its VM is gone.
    pub finish_timeout: Duration,
}

impl std::fmt::Debug for Pager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pager").finish_non_exhaustive()
    }
}

/// A page server waiting for Firecracker's handshake.
#[derive(Debug)]
pub struct Pending {
    listener: UnixListener,
    socket: PathBuf,
    server: PageServer,
    server_socket: PathBuf,
    memory_len: u64,
    timeout: Duration,
    finish_timeout: Duration,
}

/// A page server serving one VM, and the backend's connections for it.
#[derive(Debug)]
pub struct Serving {
    server: PageServer,
    /// Our connection to the page server: closing it ends serving.
    to_server: std::os::unix::net::UnixStream,
    /// Firecracker's connection to us, kept open as Firecracker expects
    /// (none after a re-attach).
    from_firecracker: Option<UnixStream>,
    finish_timeout: Duration,
}

impl Pager {
    pub fn new(cores: Arc<dyn Cores>) -> Self {
        Self {
            cores,
            handshake_timeout: Duration::from_secs(10),
            finish_timeout: Duration::from_secs(10),
        }
    }

    /// Opens the memory file (with the working set its last restore
    /// recorded, to prefetch) and starts a page server for it on a core;
    /// Firecracker is to connect to `socket`.
    pub async fn prepare(&self, memory: &Path, socket: &Path) -> Result<Pending, String> {
        let memory_len = std::fs::metadata(memory)
            .map_err(|e| format!("{}: {e}", memory.display()))?
            .len();
        remove_socket(socket)?;
        let listener = UnixListener::bind(socket)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        let server_socket = server_socket(socket);
        let server = match self.spawn(memory, &server_socket).await {
            Ok(server) => server,
            Err(e) => {
                let _ = std::fs::remove_file(socket);
                return Err(e);
            }
        };
        Ok(Pending {
            listener,
            socket: socket.to_owned(),
            server,
            server_socket,
            memory_len,
            timeout: self.handshake_timeout,
            finish_timeout: self.finish_timeout,
        })
    }

    /// Gives the running Firecracker `pid`, restored earlier with the
    /// `regions` it reported then, a new page server (after an agent
    /// restart: the previous one died with the previous agent).
    pub async fn reattach(
        &self,
        pid: u32,
        regions: &str,
        memory: &Path,
        socket: &Path,
    ) -> Result<Serving, String> {
        let memory_len = std::fs::metadata(memory)
            .map_err(|e| format!("{}: {e}", memory.display()))?
            .len();
        let parsed = handshake::parse(regions.as_bytes(), memory_len)
            .map_err(|e| format!("recorded regions: {e}"))?;
        let uffd = take_userfaultfd(pid)
            .map_err(|e| format!("taking the userfaultfd of firecracker {pid}: {e}"))?;
        let server_socket = server_socket(socket);
        let server = self.spawn(memory, &server_socket).await?;
        let to_server = hand_over(&server_socket, regions.as_bytes(), &uffd)?;
        // A fault the dead server read but never answered would wait
        // forever: wake every waiter, so each faults again and asks the new one.
        for r in &parsed {
            warren_uffd::sys::wake(uffd.as_fd(), r.base, r.size)
                .map_err(|e| format!("waking faults of firecracker {pid}: {e}"))?;
        }
        tracing::info!(pid, regions = parsed.len(), "page server re-attached");
        Ok(Serving {
            server,
            to_server,
            from_firecracker: None,
            finish_timeout: self.finish_timeout,
        })
    }

    async fn spawn(&self, memory: &Path, server_socket: &Path) -> Result<PageServer, String> {
        let memory = memory.to_owned();
        let (snapshot, prefetch) = crate::blocking(move || open_memory(&memory)).await?;
        let recorded = working_set::path_for(snapshot.path());
        let mut config = ServerConfig::new(server_socket, snapshot);
        config.prefetch = prefetch;
        config.record = Some(recorded);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _ = tx.send(PageServer::spawn(config));
        });
        if !self.cores.submit(job) {
            return Err("no data-plane core is running".into());
        }
        rx.await
            .map_err(|_| "the data-plane core dropped the page server".to_string())?
            .map_err(|e| e.to_string())
    }
}

impl Pending {
    /// Waits for Firecracker's handshake and hands it to the page server.
    /// Run it alongside the snapshot load, which waits for the first fault
    /// to be served. Returns the regions Firecracker reported (as JSON).
    /// When the restore fails, [`Pending::abandon`] stops the server.
    pub async fn accept(&self) -> Result<(Serving, String), String> {
        let Pending {
            listener,
            socket,
            server,
            server_socket,
            memory_len,
            timeout,
            finish_timeout,
        } = self;
        let (memory_len, timeout, finish_timeout) = (*memory_len, *timeout, *finish_timeout);
        let received = tokio::time::timeout(timeout, async {
            let (stream, _) = listener
                .accept()
                .await
                .map_err(|e| format!("accepting on {}: {e}", socket.display()))?;
            let (regions, uffd) = read_handshake(&stream, memory_len)
                .await
                .map_err(|e| format!("firecracker's handshake: {e}"))?;
            Ok::<_, String>((stream, regions, uffd))
        })
        .await;
        // Nobody else may connect now.
        let _ = std::fs::remove_file(socket);
        let (stream, regions, uffd) =
            received.map_err(|_| format!("firecracker sent no handshake within {timeout:?}"))??;
        let json = handshake::encode(&regions);
        let to_server = hand_over(server_socket, &json, &uffd)?;
        Ok((
            Serving {
                server: server.clone(),
                to_server,
                from_firecracker: Some(stream),
                finish_timeout,
            },
            String::from_utf8_lossy(&json).into_owned(),
        ))
    }

    /// Gives up: the restore failed.
    pub fn abandon(self) {
        self.server.stop();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Serving {
    /// The page server's counters now.
    pub fn stats(&self) -> warren_uffd::Stats {
        self.server.stats()
    }

    /// Ends serving once the VM is gone (stop it first): the page server
    /// saves the working set it recorded and closes everything it holds.
    pub async fn finish(self) {
        let Serving {
            server,
            to_server,
            from_firecracker,
            finish_timeout,
        } = self;
        drop(to_server);
        drop(from_firecracker);
        let outcome = match tokio::time::timeout(finish_timeout, server.wait()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(?finish_timeout, "page server did not finish; stopping it");
                server.stop();
                server.wait().await
            }
        };
        let s = &outcome.stats;
        tracing::info!(end = ?outcome.end, faults = s.faults, pages_copied = s.pages_copied,
            prefetch_hits = s.prefetch_hits, "page server finished");
        if let Some(Err(e)) = &outcome.working_set {
            tracing::warn!(error = %e, "the working set was not saved");
        }
    }
}

/// The memory file, and the working set its last restore recorded (to
/// prefetch) when there is a usable one. Blocking.
fn open_memory(memory: &Path) -> Result<(Arc<Snapshot>, Option<Arc<WorkingSet>>), String> {
    let snapshot = Snapshot::open(memory).map_err(|e| e.to_string())?;
    let recorded = working_set::path_for(memory);
    let prefetch = match WorkingSet::load(&recorded) {
        Ok(set) if set.check_memory_len(snapshot.len()).is_ok() => Some(Arc::new(set)),
        Ok(_) => {
            tracing::warn!(path = %recorded.display(), "working set of another memory file; not prefetching");
            None
        }
        Err(warren_uffd::WorkingSetError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable working set; not prefetching");
            None
        }
    };
    Ok((Arc::new(snapshot), prefetch))
}

/// Where the page server itself listens (the backend takes Firecracker's
/// connection at `socket`).
fn server_socket(socket: &Path) -> PathBuf {
    socket.with_extension("server.sock")
}

fn remove_socket(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Reads one handshake from `stream` (non-blocking reads as it becomes
/// readable).
async fn read_handshake(
    stream: &UnixStream,
    memory_len: u64,
) -> Result<(Vec<warren_uffd::Region>, OwnedFd), HandshakeError> {
    let mut asm = Assembler::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        stream.readable().await?;
        let chunk = match stream.try_io(Interest::READABLE, || {
            match handshake::read_chunk(stream.as_fd(), &mut buf) {
                // Nothing yet: let tokio clear the readiness it reported.
                Ok(Chunk::Data { len: 0, fds }) if fds.is_empty() => {
                    Err(std::io::ErrorKind::WouldBlock.into())
                }
                other => Ok(other),
            }
        }) {
            Ok(chunk) => chunk?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        match chunk {
            Chunk::Eof => return Err(HandshakeError::Closed),
            Chunk::Data { len, fds } => {
                if let Some(done) = asm.push(&buf[..len], fds, memory_len)? {
                    return Ok(done);
                }
            }
        }
    }
}

/// Sends `regions` and the userfaultfd to the page server at `socket`, as
/// Firecracker would; the returned connection keeps it serving.
fn hand_over(
    socket: &Path,
    regions: &[u8],
    uffd: &OwnedFd,
) -> Result<std::os::unix::net::UnixStream, String> {
    warren_uffd::guest::send_raw_handshake(socket, regions, &[uffd])
        .map_err(|e| format!("handing the userfaultfd to the page server: {e}"))
}

/// A duplicate of the userfaultfd held by process `pid`.
fn take_userfaultfd(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let is_uffd = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:[userfaultfd]");
        let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|_| is_uffd)
        else {
            continue;
        };
        // SAFETY: pidfd_getfd takes a pidfd we own and plain integers, and
        // returns a new descriptor (a duplicate of the target's).
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), number, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(raw as i32) });
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "the process holds no userfaultfd",
    ))
}
