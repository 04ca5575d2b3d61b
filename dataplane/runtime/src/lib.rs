//! `warren-runtime`: the data-plane cores, and the thin seam between the data
//! plane and its io_uring runtime (compio). The edge (`warren-edge`) relays on
//! these cores; the Firecracker backend's page server runs on them too
//! ([`Cores`]).
//!
//! Everything the proxy needs from a runtime goes through here: starting one
//! single-threaded runtime per core, spawning local tasks, timers, and waiting
//! for a socket to become readable or writable (an io_uring `POLL_ADD`).
//! Bytes then move with direct non-blocking syscalls (`recv`, `send`,
//! `splice`) issued once the ring reports readiness: an idle connection holds
//! no buffer and no pipe, a splice never parks an io-wq kernel thread, and a
//! task never waits a loop turn for a send that could complete at once
//! (io_uring sends were measured and added latency per request). Swapping
//! compio for another runtime means rewriting this module only.

mod net;
mod pipe;

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use compio::driver::op::{Interest, PollOnce};

pub use net::{Listener, Socket, local_addr, shutdown_both};
pub use pipe::{Pipe, PipePool};

/// Work for a data-plane core: run on the core's own thread, inside its
/// runtime, so it may spawn tasks there (e.g. a page server).
pub type CoreJob = Box<dyn FnOnce() + Send>;

/// The data-plane cores, as other parts of the agent see them: a place to
/// run work next to the proxy's relays (the proxy's cores in the agent).
pub trait Cores: Send + Sync {
    /// Queues `job` on one of the cores (they take turns); `false` when no
    /// core is running any more.
    fn submit(&self, job: CoreJob) -> bool;
}

/// Starts a named OS thread running one runtime; `main` builds the thread's
/// root future inside it (futures of a thread-per-core runtime are not `Send`).
pub fn spawn_core<F, Fut>(name: String, main: F) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        // One thread owns each ring: completions are processed when it asks
        // for them (DEFER_TASKRUN) instead of interrupting it.
        let mut proactor = compio::driver::ProactorBuilder::new();
        proactor
            .capacity(4096)
            .single_issuer(true)
            .defer_taskrun(true);
        let runtime = match compio::runtime::RuntimeBuilder::new()
            .with_proactor(proactor)
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start an io_uring runtime on this core");
                return;
            }
        };
        runtime.block_on(main());
    })
}

/// Runs `future` on the current core as a detached task.
pub fn spawn<F: Future<Output = ()> + 'static>(future: F) {
    compio::runtime::spawn(future).detach();
}

/// Sleeps on the current core's timer.
pub async fn sleep(duration: Duration) {
    compio::time::sleep(duration).await;
}

/// Runs `future` for at most `duration`; `None` when the time ran out (the
/// future is dropped, cancelling whatever it was waiting for).
pub async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    compio::time::timeout(duration, future).await.ok()
}

/// Waits until `fd` is readable (or hung up / in error).
pub async fn readable(fd: &Rc<OwnedFd>) -> io::Result<()> {
    poll(fd, Interest::Readable).await
}

/// Waits until `fd` is writable (or hung up / in error).
pub async fn writable(fd: &Rc<OwnedFd>) -> io::Result<()> {
    poll(fd, Interest::Writable).await
}

async fn poll(fd: &Rc<OwnedFd>, interest: Interest) -> io::Result<()> {
    // The op holds its own reference, so the descriptor stays open until the
    // kernel is done with it even if this future is dropped mid-flight.
    let compio::BufResult(result, _) =
        compio::runtime::submit(PollOnce::new(Rc::clone(fd), interest)).await;
    result.map(drop)
}
