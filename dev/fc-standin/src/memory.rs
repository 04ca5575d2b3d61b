//! The stand-in's guest memory, so snapshots and restores carry real bytes:
//! an anonymous private mapping of the configured size in which the
//! "guest" writes a few pages when it boots and each time it runs
//! ([`Memory::run`]: one page stamped, another zeroed, as a guest dirties
//! and clears memory).
//!
//! Snapshots are written as Firecracker writes them: a full one holds every
//! page (holes where the guest never wrote), a diff only the pages written
//! since the last snapshot or restore, zeroed ones included, over the
//! existing file. The state file records a digest of the memory, and a
//! load checks the memory it ends up with against it, so a page server
//! that serves a wrong byte fails the load.
//!
//! A load with the `Uffd` backend does Firecracker's side of the handshake
//! (`warren_uffd::guest::hand_over`: a userfaultfd with every region
//! registered for missing faults, the region list as JSON with the
//! userfaultfd in `SCM_RIGHTS`); both are kept for the life of the process. The load returns once the first page is served (as
//! Firecracker's does); then a "guest" thread reads the rest of the memory
//! at a guest's pace, faulting each page in through the page server, and
//! checks it against the snapshot's digest. It prints the outcome on
//! stdout (the console log); anything that changes or saves the memory
//! waits for it first and fails if the memory differs.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

pub const PAGE: usize = 4096;

/// Guest memory.
pub struct Memory {
    addr: usize,
    len: usize,
    /// Pages that may hold data (written since boot, or found non-zero
    /// after a load); every other page is zero.
    used: BTreeSet<usize>,
    /// Pages written since the last snapshot or load.
    dirty: BTreeSet<usize>,
    /// Times the guest has run.
    pub generation: u64,
    /// A restore's userfaultfd and page-server connection, kept open.
    _uffd: Option<(OwnedFd, UnixStream)>,
    /// The guest thread reading the memory after a lazy restore: the pages
    /// with data, or why the memory is wrong.
    reader: Option<JoinHandle<Result<BTreeSet<usize>, String>>>,
    /// Runs of the guest to apply once the reader is done.
    pending_runs: u64,
}

/// The address and size of the mapping, for the reader thread.
#[derive(Clone, Copy)]
struct Span {
    addr: usize,
    len: usize,
}

impl Span {
    fn page(&self, n: usize) -> &[u8] {
        // SAFETY: page `n` < len / PAGE lies inside the mapping, which is
        // never unmapped while a reader runs (see `Drop for Memory`).
        unsafe { std::slice::from_raw_parts((self.addr + n * PAGE) as *const u8, PAGE) }
    }

    fn has_data(&self, n: usize) -> bool {
        static ZERO: [u8; PAGE] = [0; PAGE];
        self.page(n) != ZERO
    }

    /// Digest of the given pages that hold data, with their numbers.
    fn digest(&self, pages: impl Iterator<Item = usize>) -> u64 {
        pages
            .filter(|&n| self.has_data(n))
            .fold(0xcbf2_9ce4_8422_2325, |h, n| {
                fnv(fnv(h, &(n as u64).to_le_bytes()), self.page(n))
            })
    }
}

// SAFETY: the mapping belongs to this value alone and is only touched
// through `&self`/`&mut self`; the raw address is plain data.
unsafe impl Send for Memory {}

impl Drop for Memory {
    fn drop(&mut self) {
        if self.reader.is_some() {
            // The reader may wait on a fault forever; leave it the mapping.
            return;
        }
        // SAFETY: [addr, addr + len) is the mapping this value owns.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

impl Memory {
    /// `mib` MiB of zeroed memory.
    pub fn new(mib: u64) -> io::Result<Self> {
        let len = usize::try_from(mib << 20).map_err(io::Error::other)?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            addr: addr as usize,
            len,
            used: BTreeSet::new(),
            dirty: BTreeSet::new(),
            generation: 0,
            _uffd: None,
            reader: None,
            pending_runs: 0,
        })
    }

    fn span(&self) -> Span {
        Span {
            addr: self.addr,
            len: self.len,
        }
    }

    pub fn mib(&self) -> u64 {
        (self.len >> 20) as u64
    }

    fn pages(&self) -> usize {
        self.len / PAGE
    }

    fn write(&mut self, n: usize, fill: impl Fn(usize) -> u8) {
        let n = n % self.pages();
        // SAFETY: as in `page`, and `&mut self` makes this the only access.
        let page =
            unsafe { std::slice::from_raw_parts_mut((self.addr + n * PAGE) as *mut u8, PAGE) };
        for (i, b) in page.iter_mut().enumerate() {
            *b = fill(i);
        }
        self.used.insert(n);
        self.dirty.insert(n);
    }

    /// The guest boots: a few pages of "kernel" named after the instance.
    pub fn boot(&mut self, id: &str) {
        let seed = fnv(0xcbf2_9ce4_8422_2325, id.as_bytes());
        for n in 0..8 {
            self.write(n, |i| (seed as usize).wrapping_add(n * 131 + i) as u8 | 1);
        }
    }

    /// The guest runs: it stamps one page and zeroes another it wrote
    /// earlier (once a lazy restore's reader is done).
    pub fn run(&mut self) {
        if self.reader.is_some() {
            self.pending_runs += 1;
            return;
        }
        self.generation += 1;
        let g = self.generation as usize;
        self.write(16 + g % 4, |i| (g + i) as u8 | 1);
        // The page stamped the time before.
        self.write(16 + (g + 3) % 4, |_| 0);
    }

    /// Digest of the memory: every page with data, with its number.
    pub fn digest(&mut self) -> Result<u64, String> {
        self.settle()?;
        Ok(self.span().digest(self.used.iter().copied()))
    }

    /// Waits for a lazy restore's reader, then applies the runs that
    /// waited for it. Fails when the restored memory was wrong.
    fn settle(&mut self) -> Result<(), String> {
        if let Some(reader) = self.reader.take() {
            self.used = reader
                .join()
                .map_err(|_| "the guest reader panicked".to_string())??;
            for _ in 0..std::mem::take(&mut self.pending_runs) {
                self.run();
            }
        }
        Ok(())
    }

    /// Writes a snapshot's memory file: every page, or (`diff`) the pages
    /// written since the last snapshot, over the file as it is.
    pub fn save(&mut self, path: &Path, diff: bool) -> Result<(), String> {
        self.settle()?;
        self.write_file(path, diff)
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }

    fn write_file(&mut self, path: &Path, diff: bool) -> io::Result<()> {
        let span = self.span();
        let file = if diff {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?
        } else {
            File::create(path)?
        };
        file.set_len(self.len as u64)?;
        let pages: Vec<usize> = if diff {
            self.dirty.iter().copied().collect()
        } else {
            // Zero pages stay holes, as untouched guest memory reads.
            self.used
                .iter()
                .copied()
                .filter(|&n| span.has_data(n))
                .collect()
        };
        for n in pages {
            file.write_all_at(span.page(n), (n * PAGE) as u64)?;
        }
        file.sync_all()?;
        self.dirty.clear();
        Ok(())
    }

    /// Fills the memory from a memory file (the `File` backend) and checks
    /// it against the snapshot's `digest`.
    pub fn load_file(&mut self, path: &Path, digest: u64) -> Result<(), String> {
        let read = || -> io::Result<()> {
            let file = File::open(path)?;
            // SAFETY: the whole mapping, owned by `self`, borrowed mutably.
            let all = unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) };
            let n = usize::try_from(file.metadata()?.len())
                .map_err(io::Error::other)?
                .min(self.len);
            file.read_exact_at(&mut all[..n], 0)
        };
        read().map_err(|e| format!("reading {}: {e}", path.display()))?;
        self.used = check(self.span(), digest, Duration::ZERO)?;
        Ok(())
    }

    /// Hands the memory to the page server at `socket` (the `Uffd`
    /// backend), waits for the first page, and starts the guest reader that
    /// checks the rest against `digest`; `id` names it in its report.
    pub fn load_from_page_server(
        &mut self,
        socket: &Path,
        digest: u64,
        id: &str,
    ) -> Result<(), String> {
        self.connect_page_server(socket)
            .map_err(|e| format!("userfaultfd handshake with {}: {e}", socket.display()))?;
        // Firecracker writes into guest memory during the load, which
        // faults at once: the load waits for the page server.
        std::hint::black_box(self.span().has_data(0));
        let (span, id) = (self.span(), id.to_owned());
        self.reader = Some(std::thread::spawn(move || {
            // A guest's pace: a MiB, then a breath.
            let result = check(span, digest, Duration::from_millis(5));
            match &result {
                Ok(used) => println!(
                    "mock-firecracker {id}: guest memory verified after restore ({} pages with data)",
                    used.len()
                ),
                Err(e) => println!("mock-firecracker {id}: {e}"),
            }
            result
        }));
        Ok(())
    }

    fn connect_page_server(&mut self, socket: &Path) -> io::Result<()> {
        // Firecracker asks for no events when the VM has no balloon.
        self._uffd = Some(warren_uffd::guest::hand_over(
            socket,
            self.addr as u64,
            self.len as u64,
            0,
        )?);
        Ok(())
    }
}

/// Reads every page of `span` (pausing `pace` after each MiB), and checks
/// the memory against `digest`; returns the pages holding data.
fn check(span: Span, digest: u64, pace: Duration) -> Result<BTreeSet<usize>, String> {
    let mut used = BTreeSet::new();
    for n in 0..span.len / PAGE {
        if span.has_data(n) {
            used.insert(n);
        }
        if !pace.is_zero() && n % 256 == 255 {
            std::thread::sleep(pace);
        }
    }
    let found = span.digest(used.iter().copied());
    if found == digest {
        Ok(used)
    } else {
        Err(format!(
            "guest memory differs from the snapshot's (digest {found}, recorded {digest})"
        ))
    }
}

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
