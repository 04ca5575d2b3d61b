//! The page server for one VM, as a task on the current compio (io_uring) runtime.
//!
//! [`PageServer::spawn`] binds the Unix socket Firecracker will connect to and
//! spawns a task on the calling core's runtime. The task accepts connections,
//! one at a time, each with [`ServerConfig::handshake_timeout`] to deliver its
//! handshake, until one carries a valid handshake (an invalid one is logged,
//! counted, closed, and the next connection is accepted); it then removes the
//! socket path and serves that VM: it waits for userfaultfd readiness with
//! io_uring polls, lets the engine serve every queued fault, and only then
//! copies prefetch pieces (the faults queued meanwhile served before each)
//! for at most half a millisecond before yielding to the runtime, so faults
//! (of this VM and of every other VM on the core) come before prefetch. It ends when Firecracker closes its end of the
//! socket, when its process is gone, or on [`PageServer::stop`]; then it saves
//! the recorded working set and closes every descriptor and mapping it holds.
//!
//! The handle is `Send + Sync`: the agent may stop or inspect a VM's server
//! from any thread.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use compio::runtime::fd::PollFd;
use futures_util::task::AtomicWaker;

use crate::engine::{self, Engine, EngineError, EngineOptions, Service};
use crate::handshake::{self, Assembler, Chunk, HandshakeError, Region};
use crate::memory::Snapshot;
use crate::prefetch::Plan;
use crate::stats::{Counters, Stats};
use crate::working_set::{WorkingSet, WorkingSetError};

/// Longest prefetch waits for a restore's first fault (see
/// [`Engine::prefetch_held`]).
const PREFETCH_HOLD: Duration = Duration::from_millis(2);
/// Longest a VM prefetches before the other VMs on its core get a turn.
const PREFETCH_SLICE: Duration = Duration::from_micros(500);

/// Default fault-around window (see the benchmark in `benches/benches/uffd_compare.rs`).
pub const DEFAULT_FAULT_AROUND: u64 = 64 << 10;

/// What to serve and how.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Unix socket path Firecracker's `mem_backend.backend_path` points at.
    pub socket: PathBuf,
    /// The memory snapshot (may be shared by several VMs).
    pub snapshot: Arc<Snapshot>,
    /// Bytes filled around each fault, an aligned window (power of two); 4096
    /// (or less) turns fault-around off. 2 MiB pages are always filled whole.
    pub fault_around: u64,
    /// A working set recorded by an earlier restore, prefetched eagerly in
    /// its order while faults are served first.
    pub prefetch: Option<Arc<WorkingSet>>,
    /// Where to save this restore's working set when serving ends (see
    /// [`crate::working_set::Refresh::record_to`]): every page it filled,
    /// in order, then what it did not reach of `prefetch`.
    pub record: Option<PathBuf>,
    /// Pages filled are recorded for this long after the first one.
    pub record_window: Duration,
    /// A connection must deliver its whole handshake within this time.
    pub handshake_timeout: Duration,
}

impl ServerConfig {
    /// Defaults: 64 KiB fault-around, no prefetch, no recording, 30 s
    /// recording window, 5 s handshake timeout.
    pub fn new(socket: impl Into<PathBuf>, snapshot: Arc<Snapshot>) -> Self {
        ServerConfig {
            socket: socket.into(),
            snapshot,
            fault_around: DEFAULT_FAULT_AROUND,
            prefetch: None,
            record: None,
            record_window: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a page server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the page server must be started on a compio runtime thread")]
    NoRuntime,
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error(transparent)]
    WorkingSet(#[from] WorkingSetError),
}

/// Where a page server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for Firecracker's handshake.
    Listening,
    /// Serving the VM whose Firecracker has this pid (from `SO_PEERCRED`).
    Serving { pid: Option<i32> },
    /// Done; see [`PageServer::wait`].
    Finished,
}

/// Why serving ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// [`PageServer::stop`] was called.
    Stopped,
    /// Firecracker closed its end of the socket (it exited).
    PeerClosed,
    /// The faulting process's address space is gone.
    ProcessGone,
    /// The userfaultfd or socket failed; the message says how.
    Failed(String),
}

/// The result of a finished page server.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub end: End,
    pub stats: Stats,
    /// Where the recorded working set was saved, or why it was not.
    pub working_set: Option<Result<PathBuf, Arc<WorkingSetError>>>,
}

struct Shared {
    counters: Arc<Counters>,
    stop: AtomicBool,
    stop_waker: AtomicWaker,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    outcome: Option<Outcome>,
    waiters: Vec<Waker>,
    last_handshake_error: Option<Arc<HandshakeError>>,
}

impl Shared {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Handle to one VM's page server. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct PageServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PageServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageServer")
            .field("state", &self.state())
            .finish()
    }
}

impl PageServer {
    /// Binds `config.socket` and starts serving on the current compio runtime.
    ///
    /// A stale socket file at the path (left by a crash) is replaced; any other
    /// file there is an error.
    pub fn spawn(config: ServerConfig) -> Result<Self, ServerError> {
        if compio::runtime::Runtime::try_current().is_none() {
            return Err(ServerError::NoRuntime);
        }
        if let Some(ws) = &config.prefetch {
            ws.check_memory_len(config.snapshot.len())?;
        }
        let listener = bind(&config.socket)?;
        let shared = Arc::new(Shared {
            counters: Arc::new(Counters::default()),
            stop: AtomicBool::new(false),
            stop_waker: AtomicWaker::new(),
            inner: Mutex::new(Inner {
                state: State::Listening,
                outcome: None,
                waiters: Vec::new(),
                last_handshake_error: None,
            }),
        });
        let task_shared = shared.clone();
        compio::runtime::spawn(async move {
            let socket = config.socket.clone();
            let (end, working_set) = run(listener, config, &task_shared).await;
            // Never leave the socket path behind (stopped while listening).
            let _ = std::fs::remove_file(&socket);
            let outcome = Outcome { end, stats: task_shared.counters.snapshot(), working_set };
            tracing::info!(socket = %socket.display(), end = ?outcome.end, faults = outcome.stats.faults, "page server finished");
            let waiters = {
                let mut inner = task_shared.inner();
                inner.state = State::Finished;
                inner.outcome = Some(outcome);
                std::mem::take(&mut inner.waiters)
            };
            waiters.into_iter().for_each(Waker::wake);
        })
        .detach();
        Ok(PageServer { shared })
    }

    /// The VM's counters now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    pub fn state(&self) -> State {
        self.shared.inner().state
    }

    /// The most recent refused handshake, if any.
    pub fn last_handshake_error(&self) -> Option<Arc<HandshakeError>> {
        self.shared.inner().last_handshake_error.clone()
    }

    /// Asks the server to stop. It closes the userfaultfd, the socket and its
    /// mappings, and saves the recorded working set. Idempotent; returns at once.
    ///
    /// Stop the VM first: its Firecracker keeps its own copy of the
    /// userfaultfd, and its guest would wait forever on the next fault.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if std::thread::panicking() {
            // compio's executor aborts the process when a task is woken from a
            // thread that is unwinding (e.g. a Drop calling stop during a
            // panic): wake it from a fresh thread instead.
            let shared = self.shared.clone();
            std::thread::spawn(move || shared.stop_waker.wake());
        } else {
            self.shared.stop_waker.wake();
        }
    }

    /// Completes when the server has finished, with why and its final counters.
    pub fn wait(&self) -> impl Future<Output = Outcome> + Send + 'static {
        let shared = self.shared.clone();
        poll_fn(move |cx| {
            let mut inner = shared.inner();
            match &inner.outcome {
                Some(outcome) => Poll::Ready(outcome.clone()),
                None => {
                    inner.waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<Outcome> {
        self.shared.inner().outcome.clone()
    }
}

fn bind(path: &std::path::Path) -> Result<PollFd<UnixListener>, ServerError> {
    let bind_err = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(bind_err)?,
        Ok(_) => return Err(ServerError::NotASocket(path.to_owned())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    PollFd::new(listener).map_err(bind_err)
}

/// Runs `fut` unless the server is asked to stop first.
async fn unless_stopped<F: Future>(shared: &Shared, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        shared.stop_waker.register(cx.waker());
        if shared.stopped() {
            return Poll::Ready(None);
        }
        fut.as_mut().poll(cx).map(Some)
    })
    .await
}

type Connected = (PollFd<UnixStream>, Vec<Region>, OwnedFd);

async fn run(
    listener: PollFd<UnixListener>,
    config: ServerConfig,
    shared: &Shared,
) -> (End, Option<Result<PathBuf, Arc<WorkingSetError>>>) {
    // Planned while Firecracker has not connected yet: the first fault
    // (which the snapshot load waits for) must not wait for planning.
    let plan = config
        .prefetch
        .clone()
        .map(|set| Plan::new(set, config.snapshot.blocks(), engine::PREFETCH_STEP_BLOCKS));
    let Some(accepted) = unless_stopped(shared, accept_vm(&listener, &config, shared)).await else {
        return (End::Stopped, None);
    };
    // The socket path is only for the handshake: nobody else may connect now.
    drop(listener);
    let _ = std::fs::remove_file(&config.socket);
    let (sock, regions, uffd) = match accepted {
        Ok(c) => c,
        Err(e) => {
            return (
                End::Failed(format!("accepting on the socket failed: {e}")),
                None,
            );
        }
    };
    let pid =
        nix::sys::socket::getsockopt(&sock.as_fd(), nix::sys::socket::sockopt::PeerCredentials)
            .ok()
            .map(|c| c.pid());
    shared.inner().state = State::Serving { pid };
    tracing::info!(?pid, regions = regions.len(), memory = %config.snapshot.path().display(), "serving a VM");
    let options = EngineOptions {
        fault_around: config.fault_around,
        prefetch: plan,
        record: config.record.as_ref().map(|_| config.record_window),
    };
    let mut engine = Engine::new(
        config.snapshot.clone(),
        &regions,
        uffd,
        options,
        shared.counters.clone(),
    );
    let end = serve(&mut engine, &sock, shared).await;
    let working_set = config.record.map(|path| {
        let recorded = engine.take_recording().unwrap_or_default();
        recorded.save(&path).map(|()| path).map_err(Arc::new)
    });
    (end, working_set)
}

/// Accepts connections until one delivers a valid handshake.
async fn accept_vm(
    listener: &PollFd<UnixListener>,
    config: &ServerConfig,
    shared: &Shared,
) -> io::Result<Connected> {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                listener.accept_ready().await?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let sock = PollFd::new(stream)?;
        let memory_len = config.snapshot.len();
        let result = match compio::time::timeout(
            config.handshake_timeout,
            read_handshake(&sock, memory_len),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(HandshakeError::Timeout(config.handshake_timeout)),
        };
        match result {
            Ok((regions, uffd)) => return Ok((sock, regions, uffd)),
            Err(e) => {
                // The connection (and any descriptor it sent) is closed on drop.
                tracing::warn!(socket = %config.socket.display(), error = %e, "refused a handshake");
                Counters::add(&shared.counters.handshake_failures, 1);
                shared.inner().last_handshake_error = Some(Arc::new(e));
            }
        }
    }
}

async fn read_handshake(
    sock: &PollFd<UnixStream>,
    memory_len: u64,
) -> Result<(Vec<Region>, OwnedFd), HandshakeError> {
    let mut asm = Assembler::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match handshake::read_chunk(sock.as_fd(), &mut buf)? {
            Chunk::Eof => return Err(HandshakeError::Closed),
            Chunk::Data { len: 0, fds } if fds.is_empty() => sock.read_ready().await?,
            Chunk::Data { len, fds } => {
                if let Some(done) = asm.push(&buf[..len], fds, memory_len)? {
                    return Ok(done);
                }
            }
        }
    }
}

/// Why the wait in the serving loop ended.
enum Wake {
    /// A userfaultfd is readable, or the runtime came round (yield).
    Work,
    Stop,
    /// The socket is readable: Firecracker closed it, or sent something.
    Socket,
}

async fn serve(engine: &mut Engine, sock: &PollFd<UnixStream>, shared: &Shared) -> End {
    let mut polls: Vec<(u64, PollFd<OwnedFd>)> = Vec::new();
    let mut blocked_rounds = 0u32;
    let connected = Instant::now();
    loop {
        if shared.stopped() {
            return End::Stopped;
        }
        let blocked = match engine.service() {
            Ok(service) => service == Service::Blocked,
            Err(e) => return ended(e),
        };
        blocked_rounds = if blocked { blocked_rounds + 1 } else { 0 };
        if !blocked && let Err(e) = prefetch_slice(engine) {
            return ended(e);
        }
        if let Err(e) = sync_polls(engine, &mut polls) {
            return End::Failed(format!("cannot poll a userfaultfd: {e}"));
        }
        if blocked_rounds > 64 {
            // The kernel is slow to queue the event we wait for: back off.
            compio::time::sleep(Duration::from_millis(1)).await;
        }
        let hold = PREFETCH_HOLD.saturating_sub(connected.elapsed());
        if hold.is_zero() {
            // No fault came: prefetch anyway.
            engine.release_prefetch();
        }
        let yield_now = blocked || engine.prefetching();
        let woken = wait(&polls, sock, shared, yield_now);
        let woken = if engine.prefetch_held() {
            compio::time::timeout(hold, woken)
                .await
                .unwrap_or(Wake::Work)
        } else {
            woken.await
        };
        match woken {
            Wake::Work => {}
            Wake::Stop => return End::Stopped,
            Wake::Socket => match peer_closed(sock) {
                Ok(true) => return End::PeerClosed,
                Ok(false) => {}
                Err(e) => return End::Failed(format!("socket error: {e}")),
            },
        }
    }
}

fn ended(e: EngineError) -> End {
    match e {
        EngineError::Gone => End::ProcessGone,
        e => End::Failed(e.to_string()),
    }
}

/// Copies prefetch pieces for up to [`PREFETCH_SLICE`], serving the faults
/// queued meanwhile before each piece; stops early when a fault must wait
/// for an address-space event.
fn prefetch_slice(engine: &mut Engine) -> Result<(), EngineError> {
    let until = Instant::now() + PREFETCH_SLICE;
    while engine.prefetching() {
        engine.prefetch_step()?;
        if Instant::now() >= until || engine.service()? == Service::Blocked {
            break;
        }
    }
    Ok(())
}

/// Keeps one io_uring poll handle per userfaultfd the engine serves (a dup of
/// the descriptor, so the engine keeps ownership of the original).
fn sync_polls(engine: &Engine, polls: &mut Vec<(u64, PollFd<OwnedFd>)>) -> io::Result<()> {
    let live: Vec<(u64, _)> = engine.uffds().collect();
    polls.retain(|(id, _)| live.iter().any(|(l, _)| l == id));
    for (id, fd) in live {
        if !polls.iter().any(|(p, _)| *p == id) {
            polls.push((id, PollFd::new(fd.try_clone_to_owned()?)?));
        }
    }
    Ok(())
}

/// Waits until a userfaultfd is readable, the socket is readable, or stop.
/// With `yield_now`, also returns after one trip through the runtime's driver:
/// a Unix stream socket we never write to is always writable, so waiting for
/// write readiness completes on the driver's next poll, after the completions
/// of every other VM on this core have been delivered.
async fn wait(
    polls: &[(u64, PollFd<OwnedFd>)],
    sock: &PollFd<UnixStream>,
    shared: &Shared,
    yield_now: bool,
) -> Wake {
    poll_fn(|cx| {
        shared.stop_waker.register(cx.waker());
        if shared.stopped() {
            return Poll::Ready(Wake::Stop);
        }
        for (_, p) in polls {
            if p.poll_read_ready(cx).is_ready() {
                return Poll::Ready(Wake::Work);
            }
        }
        if sock.poll_read_ready(cx).is_ready() {
            return Poll::Ready(Wake::Socket);
        }
        if yield_now && sock.poll_write_ready(cx).is_ready() {
            return Poll::Ready(Wake::Work);
        }
        Poll::Pending
    })
    .await
}

/// Whether Firecracker closed its end. Anything it sends is read and ignored.
fn peer_closed(sock: &PollFd<UnixStream>) -> io::Result<bool> {
    use nix::sys::socket::{MsgFlags, recv};
    let mut buf = [0u8; 4096];
    match recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
        Ok(0) => Ok(true),
        Ok(n) => {
            tracing::debug!(bytes = n, "ignoring bytes sent after the handshake");
            Ok(false)
        }
        Err(nix::errno::Errno::EAGAIN) => Ok(false),
        Err(nix::errno::Errno::ECONNRESET) => Ok(true),
        Err(e) => Err(e.into()),
    }
}
