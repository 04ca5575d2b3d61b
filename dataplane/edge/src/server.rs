//! The running proxy: one runtime per core, each with its own `SO_REUSEPORT`
//! listener, upstream pool, pipes and buffers, sharing only the routing
//! table, the capsule counters and the metrics. [`Proxy`] is the handle the
//! sandbox manager keeps: counters, `drain`, `evict`, `reopen`, shutdown.
//! Drain and evict travel to every core as commands, because only a core may
//! touch its own connections.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;

use crate::buf::BufPool;
use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::relay;
use crate::table::Routes;
use crate::tracking::{CapsuleStats, CoreConns, StatsSnapshot, Tracker};
use crate::upstream::UpstreamPool;
use warren_runtime::{self as runtime, CoreJob, Cores, Listener, PipePool, shutdown_both};

/// What every core shares.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) routes: Arc<Routes>,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) metrics: Metrics,
}

/// One core's state; lives on that core's thread only.
pub(crate) struct Core {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conns: Rc<CoreConns>,
    pub(crate) upstreams: UpstreamPool,
    pub(crate) pipes: PipePool,
    pub(crate) bufs: BufPool,
}

enum Command {
    Drain {
        id: String,
        grace: Duration,
        done: oneshot::Sender<()>,
    },
    Evict {
        id: String,
        done: oneshot::Sender<()>,
    },
    /// Other work that belongs on the data-plane cores (see [`Cores`]).
    Run(CoreJob),
    Shutdown,
}

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A core thread cannot be started.
    #[error("cannot start core thread: {0}")]
    Thread(std::io::Error),
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    cores: Vec<mpsc::UnboundedSender<Command>>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    addr: SocketAddr,
    /// The core the next [`Cores::submit`] goes to.
    next_core: AtomicUsize,
}

/// Longest wait for connections to end after they were shut down.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How often a drain looks at its capsule's connections.
const DRAIN_TICK: Duration = Duration::from_millis(10);

impl Proxy {
    /// Binds `config.listen` on every core and starts relaying with `routes`.
    pub fn start(config: ProxyConfig, routes: Arc<Routes>) -> Result<Self, StartError> {
        let cores = config.cores.max(1);
        let bind = |addr| {
            Listener::bind_reuseport(addr, config.backlog)
                .map_err(|source| StartError::Bind { addr, source })
        };
        let first = bind(config.listen)?;
        let addr = runtime::local_addr(&first).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let mut listeners = vec![first];
        for _ in 1..cores {
            listeners.push(bind(addr)?);
        }
        let tracker = Arc::new(Tracker::default());
        let shared = Arc::new(Shared {
            config,
            routes,
            metrics: Metrics::new(Arc::clone(&tracker)),
            tracker,
        });
        let mut senders = Vec::with_capacity(cores);
        let mut threads = Vec::with_capacity(cores);
        for (index, listener) in listeners.into_iter().enumerate() {
            let (tx, rx) = mpsc::unbounded();
            let shared = Arc::clone(&shared);
            let thread = runtime::spawn_core(format!("warren-proxy-{index}"), move || {
                run_core(shared, listener, rx)
            })
            .map_err(StartError::Thread)?;
            senders.push(tx);
            threads.push(thread);
        }
        tracing::info!(%addr, cores, "proxy listening");
        Ok(Self {
            shared,
            cores: senders,
            threads: std::sync::Mutex::new(threads),
            addr,
            next_core: AtomicUsize::new(0),
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The routing table the proxy reads; publish a new one to change routes.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.shared.routes
    }

    /// The live counters of capsule `id` (atomics; read them any time),
    /// created empty if it had no traffic yet.
    pub fn capsule(&self, id: &str) -> Arc<CapsuleStats> {
        self.shared.tracker.get_or_create(id)
    }

    /// A snapshot of capsule `id`'s counters, if it had traffic.
    pub fn stats(&self, id: &str) -> Option<StatsSnapshot> {
        self.shared.tracker.get(id).map(|s| s.snapshot())
    }

    /// Snapshots of every capsule that had traffic.
    pub fn all_stats(&self) -> Vec<(String, StatsSnapshot)> {
        self.shared
            .tracker
            .all()
            .into_iter()
            .map(|(id, s)| (id, s.snapshot()))
            .collect()
    }

    /// The relay's and every capsule's counters, in the OpenMetrics text
    /// format ([`crate::metrics::CONTENT_TYPE`]).
    pub fn render_metrics(&self) -> String {
        self.shared.metrics.render()
    }

    async fn broadcast(&self, make: impl Fn(oneshot::Sender<()>) -> Command) {
        let mut waits = Vec::with_capacity(self.cores.len());
        for core in &self.cores {
            let (done, wait) = oneshot::channel();
            if core.unbounded_send(make(done)).is_ok() {
                waits.push(wait);
            }
        }
        for wait in waits {
            // A core that is gone has no connections left to wait for.
            let _ = wait.await;
        }
    }

    /// Stops new public traffic to `id` (503 `capsule_unavailable`; internal
    /// requests still pass), closes its idle keep-alive connections, waits up
    /// to `grace` for requests in flight, then force-closes every remaining
    /// connection of the capsule. Returns when they are all closed. The
    /// capsule stays closed to public traffic until [`Proxy::reopen`] or
    /// [`Proxy::evict`]. Runtime-agnostic: await it from any executor.
    pub async fn drain(&self, id: &str, grace: Duration) {
        self.capsule(id).set_draining(true);
        self.broadcast(|done| Command::Drain {
            id: id.to_owned(),
            grace,
            done,
        })
        .await;
    }

    /// Lets public traffic reach `id` again after a drain (on resume).
    pub fn reopen(&self, id: &str) {
        if let Some(stats) = self.shared.tracker.get(id) {
            stats.set_draining(false);
        }
    }

    /// Closes every connection of `id` now and forgets its counters (the
    /// capsule is gone; remove it from the routing table too).
    pub async fn evict(&self, id: &str) {
        self.capsule(id).set_draining(true);
        self.broadcast(|done| Command::Evict {
            id: id.to_owned(),
            done,
        })
        .await;
        self.shared.tracker.remove(id);
    }

    /// Stops accepting, closes every connection and joins the core threads.
    pub fn shutdown(&self) {
        let cores = self.cores.clone();
        let send = move || {
            for core in &cores {
                let _ = core.unbounded_send(Command::Shutdown);
            }
        };
        if std::thread::panicking() {
            // compio aborts the process when a panicking thread wakes one of
            // its tasks; wake the cores from a thread that is not unwinding.
            let _ = std::thread::spawn(send).join();
        } else {
            send();
        }
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Cores for Proxy {
    fn submit(&self, job: CoreJob) -> bool {
        let first = self.next_core.fetch_add(1, Ordering::Relaxed);
        let mut command = Command::Run(job);
        // A core that has stopped hands the command back: try the next one.
        for i in 0..self.cores.len() {
            match self.cores[(first + i) % self.cores.len()].unbounded_send(command) {
                Ok(()) => return true,
                Err(e) => command = e.into_inner(),
            }
        }
        false
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn run_core(
    shared: Arc<Shared>,
    listener: OwnedFd,
    commands: mpsc::UnboundedReceiver<Command>,
) {
    let core = Rc::new(Core {
        bufs: BufPool::new(shared.config.max_head_bytes.max(16 << 10)),
        shared,
        conns: Rc::default(),
        upstreams: UpstreamPool::default(),
        pipes: PipePool::default(),
    });
    let listener = Listener::new(listener);
    runtime::spawn(control(
        Rc::clone(&core),
        Rc::clone(listener.fd()),
        commands,
    ));
    runtime::spawn(sweep_idle(Rc::clone(&core)));
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                Metrics::add(&core.shared.metrics.connections_accepted);
                runtime::spawn(relay::serve_client(Rc::clone(&core), client, peer));
            }
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => break,
            Err(error) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                runtime::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // Shutting down: close every connection and let their tasks finish.
    core.conns.close_all();
    core.upstreams.clear();
    let deadline = Instant::now() + CLOSE_WAIT;
    while !core.conns.is_empty() && Instant::now() < deadline {
        runtime::sleep(DRAIN_TICK).await;
    }
}

/// Closes this core's connections that sat idle too long (see [`CoreConns::sweep`]).
async fn sweep_idle(core: Rc<Core>) {
    let config = &core.shared.config;
    let tick = (config.header_timeout.min(config.idle_timeout) / 4)
        .clamp(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        runtime::sleep(tick).await;
        core.conns
            .sweep(Instant::now(), config.header_timeout, config.idle_timeout);
    }
}

async fn control(
    core: Rc<Core>,
    listener: Rc<OwnedFd>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    while let Some(command) = commands.next().await {
        match command {
            Command::Drain { id, grace, done } => {
                runtime::spawn(drain(Rc::clone(&core), id, Some(grace), done))
            }
            Command::Evict { id, done } => runtime::spawn(drain(Rc::clone(&core), id, None, done)),
            Command::Run(job) => job(),
            Command::Shutdown => break,
        }
    }
    // Shutting a listening socket down wakes its accept with EINVAL.
    shutdown_both(&listener);
}

/// Closes capsule `id`'s connections on this core: idle ones at once, busy
/// ones after `grace` (all at once when `None`), then waits for them to end.
async fn drain(core: Rc<Core>, id: String, grace: Option<Duration>, done: oneshot::Sender<()>) {
    if let Some(grace) = grace {
        let deadline = Instant::now() + grace;
        while core.conns.close(&id, true) < core.conns.count(&id) && Instant::now() < deadline {
            runtime::sleep(DRAIN_TICK).await;
        }
    }
    core.conns.close(&id, false);
    core.upstreams.purge(&id);
    let deadline = Instant::now() + CLOSE_WAIT;
    while core.conns.count(&id) > 0 && Instant::now() < deadline {
        runtime::sleep(DRAIN_TICK).await;
    }
    if grace.is_none() {
        core.conns.forget(&id);
    }
    let _ = done.send(());
}
