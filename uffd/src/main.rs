//! `warren-uffd`: run the page server by hand, or play Firecracker against it.
//!
//! `serve` runs one VM's page server on a compio runtime, as `warren-agent`
//! does on each core; useful to serve a Firecracker started by hand.
//! `sparsify` makes the zero pages of a memory file holes. `guest`
//! does what Firecracker does with the `Uffd` memory backend (map memory,
//! register a userfaultfd, send the handshake) and then runs a script of memory
//! accesses, checking every byte: the integration tests drive the server with it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use warren_uffd::guest::{Guest, GuestOptions, features, script};
use warren_uffd::{PageServer, PageSize, ServerConfig, Snapshot, WorkingSet};

#[derive(Parser)]
#[command(
    version,
    about = "Warren's userfaultfd page server for Firecracker snapshots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one VM's memory from a snapshot until Firecracker exits or SIGTERM.
    Serve {
        /// Unix socket to listen on (Firecracker's mem_backend.backend_path).
        #[arg(long)]
        socket: PathBuf,
        /// The snapshot's memory file.
        #[arg(long)]
        memory: PathBuf,
        /// Diff snapshot memory files layered on top, oldest first.
        #[arg(long)]
        layer: Vec<PathBuf>,
        /// Working-set file to prefetch.
        #[arg(long)]
        prefetch: Option<PathBuf>,
        /// Where to save this restore's working set.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Bytes filled around each fault (power of two; 4096 = off).
        #[arg(long, default_value_t = warren_uffd::server::DEFAULT_FAULT_AROUND)]
        fault_around: u64,
    },
    /// Make the pages of zeros of a memory file holes (it reads the same).
    Sparsify {
        /// The memory file (not while a VM is served from it).
        #[arg(long)]
        memory: PathBuf,
    },
    /// Act as Firecracker: map memory, send the handshake, run a script of accesses.
    Guest {
        /// The page server's socket.
        #[arg(long)]
        socket: PathBuf,
        /// The memory image the guest must see (the memory file, or base plus diffs).
        #[arg(long)]
        expect: PathBuf,
        #[arg(long, value_enum, default_value = "4k")]
        page_size: GuestPageSize,
        /// Number of memory regions.
        #[arg(long, default_value_t = 1)]
        regions: usize,
        /// Extra userfaultfd events to enable (REMOVE is always on, as with a balloon).
        #[arg(long, value_delimiter = ',')]
        events: Vec<GuestEvent>,
        /// Steps, e.g. "touch:random,dontneed:0:64k,touch:seq" (see guest::script).
        #[arg(long)]
        script: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GuestPageSize {
    #[value(name = "4k")]
    Base,
    #[value(name = "2m")]
    Huge,
}

#[derive(Clone, Copy, ValueEnum)]
enum GuestEvent {
    Fork,
    Remap,
    Unmap,
}

/// Exit code when the page server closed the connection under the guest.
const EXIT_SERVER_GONE: i32 = 3;

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve {
            socket,
            memory,
            layer,
            prefetch,
            record,
            fault_around,
        } => serve(socket, memory, layer, prefetch, record, fault_around),
        Command::Sparsify { memory } => sparsify(&memory),
        Command::Guest {
            socket,
            expect,
            page_size,
            regions,
            events,
            script,
        } => guest(socket, expect, page_size, regions, events, &script),
    };
    if let Err(e) = result {
        eprintln!("warren-uffd: {e:#}");
        std::process::exit(1);
    }
}

fn serve(
    socket: PathBuf,
    memory: PathBuf,
    layers: Vec<PathBuf>,
    prefetch: Option<PathBuf>,
    record: Option<PathBuf>,
    fault_around: u64,
) -> anyhow::Result<()> {
    let snapshot = Arc::new(Snapshot::open_layered(&memory, &layers)?);
    let mut config = ServerConfig::new(&socket, snapshot);
    config.fault_around = fault_around;
    config.prefetch = prefetch
        .map(|p| WorkingSet::load(&p))
        .transpose()?
        .map(Arc::new);
    config.record = record;
    let runtime = compio::runtime::Runtime::new().context("cannot start the io_uring runtime")?;
    runtime.block_on(async move {
        let server = PageServer::spawn(config)?;
        let mut signals = std::pin::pin!(async {
            let term = std::pin::pin!(compio::signal::unix::signal(libc::SIGTERM));
            let int = std::pin::pin!(compio::signal::ctrl_c());
            futures_util::future::select(term, int).await;
        });
        // Polling once installs the signal handlers, before anyone learns we listen.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = signals.as_mut().poll(&mut cx);
        println!("listening on {}", socket.display());
        let done = std::pin::pin!(server.wait());
        if let futures_util::future::Either::Right(_) =
            futures_util::future::select(done, signals).await
        {
            tracing::info!("signal received; stopping");
            server.stop();
        }
        let outcome = server.wait().await;
        let s = &outcome.stats;
        let p = |q| s.latency.quantile(q).unwrap_or_default();
        println!(
            "end={:?} faults={} copied={} zeroed={} prefetched={} p50={:?} p99={:?}",
            outcome.end,
            s.faults,
            s.pages_copied,
            s.pages_zeroed,
            s.prefetch_hits,
            p(0.5),
            p(0.99)
        );
        if let Some(Err(e)) = outcome.working_set {
            anyhow::bail!("saving the working set failed: {e}");
        }
        Ok(())
    })
}

fn sparsify(memory: &std::path::Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(memory)
        .with_context(|| format!("opening {}", memory.display()))?;
    let done = warren_uffd::sparse::punch_zero_blocks(&file)
        .with_context(|| format!("punching holes in {}", memory.display()))?;
    println!(
        "data={} MiB zero_pages_punched={} MiB",
        done.data >> 20,
        done.holes >> 20
    );
    Ok(())
}

fn guest(
    socket: PathBuf,
    expect: PathBuf,
    page_size: GuestPageSize,
    regions: usize,
    events: Vec<GuestEvent>,
    script_text: &str,
) -> anyhow::Result<()> {
    let steps = script::parse(script_text).map_err(anyhow::Error::msg)?;
    let mut expected =
        std::fs::read(&expect).with_context(|| format!("reading {}", expect.display()))?;
    let options = GuestOptions {
        page_size: match page_size {
            GuestPageSize::Base => PageSize::Base,
            GuestPageSize::Huge => PageSize::Huge2M,
        },
        regions,
        features: events.iter().fold(features::REMOVE, |f, e| {
            f | match e {
                GuestEvent::Fork => features::FORK,
                GuestEvent::Remap => features::REMAP,
                GuestEvent::Unmap => features::UNMAP,
            }
        }),
    };
    let mut guest = Guest::connect(&socket, expected.len() as u64, options)
        .context("setting up guest memory")?;
    // Like a watchdog on Firecracker's side: if the page server goes away, faults
    // would wait forever, so report it and exit instead.
    let mut watch = guest.socket().try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        loop {
            match std::io::Read::read(&mut watch, &mut buf) {
                Ok(n) if n > 0 => continue,
                _ => {
                    // Not eprintln!: with nobody reading stderr it panics, and
                    // this thread would die without ending the process.
                    let msg = b"warren-uffd guest: page server closed the connection\n";
                    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg);
                    std::process::exit(EXIT_SERVER_GONE);
                }
            }
        }
    });
    let checked = script::run(&mut guest, &mut expected, &steps).map_err(anyhow::Error::msg)?;
    println!("ok pages_checked={checked}");
    Ok(())
}
