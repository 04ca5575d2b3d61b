//! Shared harness of the page-server benchmarks (`uffd.rs`, `uffd_compare.rs`).
//!
//! A "restore" here is what Firecracker's guest does after `PUT /snapshot/load`
//! with a userfaultfd backend: map guest memory, hand the userfaultfd to a page
//! server, then touch pages. The guest is a thread of this process
//! ([`warren_uffd::guest::Guest`]); each page server runs on its own thread.
//! Contenders:
//! - ours: `warren_uffd::PageServer` on a compio runtime with the agent's
//!   settings (64 KiB fault-around), cold or prefetching the working set a
//!   cold restore recorded;
//! - naive: one page read per fault, then `UFFDIO_COPY`, on a dedicated thread
//!   (what Firecracker's example handler does);
//! - kernel: no page server at all, a private mapping of the memory file,
//!   faulted in lazily by the kernel: the floor.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_uffd::event::Event;
use warren_uffd::guest::script::{Order, ordered};
use warren_uffd::guest::{Guest, GuestOptions};
use warren_uffd::handshake::{self, Assembler, Chunk};
use warren_uffd::server::DEFAULT_FAULT_AROUND;
use warren_uffd::{PageServer, ServerConfig, Snapshot, Stats, WorkingSet, sys};

pub const PAGE: u64 = 4096;
pub const MIB: u64 = 1 << 20;

/// A memory file of distinct, non-zero pages (the worst case for a page
/// server: no holes to serve as zero pages), in the page cache.
pub struct MemFile {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub len: u64,
    pub snapshot: Arc<Snapshot>,
}

impl MemFile {
    pub fn new(len: u64) -> MemFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mem");
        let f = File::create(&path).expect("create");
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut chunk = vec![0u8; MIB as usize];
        for off in (0..len).step_by(MIB as usize) {
            for w in chunk.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&(x | 1).to_ne_bytes());
            }
            f.write_all_at(&chunk, off).expect("write");
        }
        let snapshot = Arc::new(Snapshot::open(&path).expect("open snapshot"));
        MemFile {
            dir,
            path,
            len,
            snapshot,
        }
    }

    /// Every page's offset in a fixed random order.
    pub fn random_order(&self) -> Vec<u64> {
        ordered(
            (0..self.len).step_by(PAGE as usize).collect(),
            Order::Random,
        )
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.sock"))
    }
}

/// A contender: runs one restore.
pub type Restore<'a> = Box<dyn Fn() -> Run + 'a>;

/// One timed restore: how long touching every page took, and each touch.
pub struct Run {
    pub total: Duration,
    /// From the start of the restore to the end of the first touch.
    pub first: Duration,
    /// Nanoseconds per touch, in touch order.
    pub touches: Vec<u32>,
    /// The page server's counters (ours only).
    pub stats: Option<Stats>,
}

impl Run {
    /// Touch latency quantile (`q` in 0..=1), from the guest's side.
    pub fn touch_quantile(&self, q: f64) -> Duration {
        let mut sorted = self.touches.clone();
        sorted.sort_unstable();
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        Duration::from_nanos(sorted.get(i).copied().unwrap_or(0).into())
    }
}

/// Touches one word of each page in `order` through `touch`, timing each.
/// Returns the total time and each touch's, in nanoseconds.
fn touch_all(order: &[u64], mut touch: impl FnMut(u64) -> u64) -> (Duration, Vec<u32>) {
    let mut touches = Vec::with_capacity(order.len());
    let mut sink = 0u64;
    let start = Instant::now();
    for &page in order {
        let t = Instant::now();
        sink = sink.wrapping_add(touch(page));
        touches.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    let total = start.elapsed();
    std::hint::black_box(sink);
    (total, touches)
}

/// A restore whose setup took `setup`, then `touch_all`'s result.
fn timed(setup: Duration, (total, touches): (Duration, Vec<u32>), stats: Option<Stats>) -> Run {
    let first = setup + Duration::from_nanos(touches.first().copied().unwrap_or(0).into());
    Run {
        total: setup + total,
        first,
        touches,
        stats,
    }
}

/// Guest side of a uffd restore against `socket`; the clock starts before the
/// guest maps its memory and sends the handshake.
fn guest_restore(socket: &Path, len: u64, order: &[u64]) -> (Duration, (Duration, Vec<u32>)) {
    let start = Instant::now();
    let guest = Guest::connect(socket, len, GuestOptions::default()).expect("guest connects");
    let setup = start.elapsed();
    (
        setup,
        touch_all(order, |p| guest.touch(p).expect("mapped page")),
    )
}

/// Options for our page server in a run.
#[derive(Clone, Default)]
pub struct Ours {
    pub fault_around: u64,
    pub prefetch: Option<Arc<WorkingSet>>,
    pub record: Option<PathBuf>,
}

/// A restore served by our page server on its own compio core.
pub fn run_ours(mem: &MemFile, order: &[u64], ours: &Ours) -> Run {
    let socket = mem.socket("ours");
    let mut config = ServerConfig::new(&socket, mem.snapshot.clone());
    config.fault_around = ours.fault_around.max(PAGE);
    config.prefetch = ours.prefetch.clone();
    config.record = ours.record.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let core = std::thread::spawn(move || {
        let runtime = compio::runtime::Runtime::new().expect("compio runtime");
        runtime.block_on(async move {
            let server = PageServer::spawn(config).expect("spawn page server");
            tx.send(server.clone()).expect("send handle");
            server.wait().await
        })
    });
    let server = rx.recv().expect("server started");
    let (setup, touched) = guest_restore(&socket, mem.len, order);
    // The guest is dropped: its socket closes and the server finishes.
    let outcome = core.join().expect("core thread");
    drop(server);
    timed(setup, touched, Some(outcome.stats))
}

/// The agent's settings for a cold restore (no working set yet).
pub fn agent_cold() -> Ours {
    Ours {
        fault_around: DEFAULT_FAULT_AROUND,
        ..Ours::default()
    }
}

/// Restores once cold with the agent's settings and recording on, as the
/// agent does on a snapshot's first restore; returns the run and the set.
pub fn record_working_set(mem: &MemFile, order: &[u64]) -> (Run, Arc<WorkingSet>) {
    let path = warren_uffd::working_set::path_for(&mem.path);
    let run = run_ours(
        mem,
        order,
        &Ours {
            record: Some(path.clone()),
            ..agent_cold()
        },
    );
    let set = Arc::new(WorkingSet::load(&path).expect("recorded working set"));
    (run, set)
}

/// The agent's settings for a restore that prefetches `set`.
pub fn agent_prefetched(set: Arc<WorkingSet>) -> Ours {
    Ours {
        prefetch: Some(set),
        ..agent_cold()
    }
}

/// A restore served by the naive handler.
pub fn run_naive(mem: &MemFile, order: &[u64]) -> Run {
    let socket = mem.socket("naive");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind");
    let file = File::open(&mem.path).expect("open memory file");
    let len = mem.len;
    let handler = std::thread::spawn(move || naive_handler(&listener, &file, len));
    let (setup, touched) = guest_restore(&socket, mem.len, order);
    handler.join().expect("naive handler");
    timed(setup, touched, None)
}

/// One page read per fault, then copy: no batching, no fault-around, no prefetch.
fn naive_handler(listener: &UnixListener, file: &File, len: u64) {
    let (stream, _) = listener.accept().expect("accept");
    // Blocking reads until the handshake is complete.
    let mut asm = Assembler::default();
    let mut buf = vec![0u8; 4096];
    let (regions, uffd): (_, OwnedFd) = loop {
        let mut pfd = [nix::poll::PollFd::new(
            stream.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut pfd, nix::poll::PollTimeout::NONE).expect("poll");
        match handshake::read_chunk(stream.as_fd(), &mut buf).expect("handshake read") {
            Chunk::Data { len: n, fds } => {
                if let Some(done) = asm.push(&buf[..n], fds, len).expect("valid handshake") {
                    break done;
                }
            }
            Chunk::Eof => return,
        }
    };
    let mut page = vec![0u8; PAGE as usize];
    let mut msg = [0u8; sys::MSG_SIZE];
    loop {
        let mut pfds = [
            nix::poll::PollFd::new(uffd.as_fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(stream.as_fd(), nix::poll::PollFlags::POLLIN),
        ];
        nix::poll::poll(&mut pfds, nix::poll::PollTimeout::NONE).expect("poll");
        if pfds[1].any() == Some(true) {
            return; // The guest is gone.
        }
        if sys::read_messages(uffd.as_fd(), &mut msg).expect("read") != sys::MSG_SIZE {
            continue;
        }
        let Event::PageFault { addr, .. } = Event::decode(&msg) else {
            continue;
        };
        let addr = addr & !(PAGE - 1);
        let Some(r) = regions
            .iter()
            .find(|r| addr >= r.base && addr < r.base + r.size)
        else {
            continue;
        };
        file.read_exact_at(&mut page, r.offset + (addr - r.base))
            .expect("pread");
        match sys::copy(uffd.as_fd(), addr, page.as_ptr(), PAGE, sys::Wake::Waiters) {
            Ok(_) => {}
            Err(nix::errno::Errno::EEXIST) => sys::wake(uffd.as_fd(), addr, PAGE).expect("wake"),
            Err(e) => panic!("UFFDIO_COPY: {e}"),
        }
    }
}

/// The kernel's own lazy loading of a private file mapping (no page server).
pub fn run_kernel(mem: &MemFile, order: &[u64]) -> Run {
    let start = Instant::now();
    let file = File::open(&mem.path).expect("open");
    // SAFETY: a private read-only mapping of a file nobody writes during the run.
    let map = unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) }.expect("mmap");
    let base = map.as_ptr();
    let setup = start.elapsed();
    let touched = touch_all(order, |p| {
        // SAFETY: `p` is a page offset inside the mapping, 8-byte aligned.
        unsafe { std::ptr::read_volatile(base.add(p as usize).cast::<u64>()) }
    });
    drop(map);
    timed(setup, touched, None)
}
