//! The runtime-free core of one VM's page server: events in, pages out.
//!
//! An [`Engine`] owns the VM's userfaultfd (and those of any forked children),
//! reads their messages without blocking, fills faulting pages from the
//! [`Snapshot`] with fault-around, applies address-space events, records the
//! working set and runs the prefetcher one bounded step at a time. It never
//! waits: the driver in [`crate::server`] decides when to call it (on uffd
//! readiness from io_uring) and calls [`Engine::service`] before every prefetch
//! step, which is what gives faults priority over prefetch.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::MmapMut;
use nix::errno::Errno;

use crate::event::Event;
use crate::handshake::{PageSize, Region};
use crate::layout::{Layout, Mapping};
use crate::memory::{BLOCK, Snapshot, Source};
use crate::prefetch::Plan;
use crate::stats::Counters;
use crate::sys::{self, MSG_SIZE, Wake};
use crate::working_set::{BlockSet, Recorder, WorkingSet};

/// Messages read per `read` call.
const READ_BATCH: usize = 64;
/// Forked children served at once; later forks get their fd closed (their
/// memory then behaves as plain anonymous memory).
const MAX_FORKS: usize = 16;
const HUGE: u64 = PageSize::Huge2M.bytes();
/// Blocks one prefetch step copies at most (256 KiB): bounds how long a fault
/// waits behind prefetch. Also the most one piece of the plan holds.
pub const PREFETCH_STEP_BLOCKS: u64 = 64;

/// What the engine needs to know besides the handshake.
#[derive(Debug)]
pub struct EngineOptions {
    /// Bytes filled around each fault (aligned window); the page size disables it.
    pub fault_around: u64,
    /// Working set to prefetch, if any, planned before the VM connects.
    pub prefetch: Option<Plan>,
    /// Record the pages filled during this long after the first fill.
    pub record: Option<Duration>,
}

/// Why serving stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the faulting process is gone (its address space no longer exists)")]
    Gone,
    #[error("reading the userfaultfd failed: {0}")]
    Read(Errno),
}

/// Outcome of [`Engine::service`].
#[derive(Debug, PartialEq, Eq)]
pub enum Service {
    /// Every fault read so far is served.
    Idle,
    /// A fault could not be served because the address space is changing and
    /// the kernel has not queued the event yet: call again shortly.
    Blocked,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Content {
    Zero,
    File(u8),
    /// A huge page whose blocks come from several sources.
    Mixed,
}

/// A fill stopped early.
enum Stop {
    /// `EAGAIN`: an address-space event is pending; read events, then retry.
    Again,
    /// `ESRCH`: the process is gone.
    Gone,
}

struct Pending {
    addr: u64,
    since: Instant,
}

/// One userfaultfd being served: the VM's own or a forked child's.
struct Uffd {
    fd: OwnedFd,
    id: u64,
    primary: bool,
    layout: Layout,
    /// Blocks we have filled (a hint for fault-around and prefetch; demand
    /// faults never trust it).
    present: BlockSet,
    /// Blocks dropped by `MADV_DONTNEED` (balloon): they read as zeros from now on.
    removed: BlockSet,
    pending: VecDeque<Pending>,
}

/// Scratch buffers for huge pages: zeros and assembly of mixed-source pages.
#[derive(Default)]
struct Scratch {
    zeros: Option<MmapMut>,
    bounce: Option<MmapMut>,
}

impl Scratch {
    fn buffer(slot: &mut Option<MmapMut>) -> Option<&mut MmapMut> {
        if slot.is_none() {
            *slot = MmapMut::map_anon(HUGE as usize).ok();
        }
        slot.as_mut()
    }
}

/// The serving state of one VM.
pub struct Engine {
    snapshot: Arc<Snapshot>,
    counters: Arc<Counters>,
    fault_around: u64,
    uffds: Vec<Uffd>,
    next_id: u64,
    prefetch: Option<Plan>,
    /// Prefetch waits for the first fault to be served (see
    /// [`Engine::prefetch_held`]).
    prefetch_held: bool,
    recorder: Option<Recorder>,
    scratch: Scratch,
    msgs: Vec<u8>,
}

impl Engine {
    pub fn new(
        snapshot: Arc<Snapshot>,
        regions: &[Region],
        uffd: OwnedFd,
        options: EngineOptions,
        counters: Arc<Counters>,
    ) -> Self {
        let blocks = snapshot.blocks();
        let recorder = options.record.map(|window| {
            let previous = options.prefetch.as_ref().map(Plan::set);
            Recorder::new(snapshot.len(), blocks, previous, window)
        });
        let primary = Uffd {
            fd: uffd,
            id: 0,
            primary: true,
            layout: Layout::new(regions),
            present: BlockSet::new(blocks),
            removed: BlockSet::new(blocks),
            pending: VecDeque::new(),
        };
        Engine {
            snapshot,
            counters,
            fault_around: options.fault_around.max(BLOCK).next_power_of_two(),
            uffds: vec![primary],
            next_id: 1,
            prefetch_held: options.prefetch.is_some(),
            prefetch: options.prefetch,
            recorder,
            scratch: Scratch::default(),
            msgs: vec![0; READ_BATCH * MSG_SIZE],
        }
    }

    /// The userfaultfds to wait on, with stable ids (forks come and go).
    pub fn uffds(&self) -> impl Iterator<Item = (u64, BorrowedFd<'_>)> {
        self.uffds.iter().map(|u| (u.id, u.fd.as_fd()))
    }

    /// Whether prefetch work remains and may run now.
    pub fn prefetching(&self) -> bool {
        !self.prefetch_held && self.prefetch.as_ref().is_some_and(|p| !p.done())
    }

    /// Whether prefetch waits for the first fault: the restore's first
    /// access (Firecracker's snapshot load waits for it) must not queue
    /// behind a prefetch piece. [`Engine::release_prefetch`] ends the wait
    /// when no fault comes.
    pub fn prefetch_held(&self) -> bool {
        self.prefetch_held
    }

    pub fn release_prefetch(&mut self) {
        self.prefetch_held = false;
    }

    /// The working set recorded so far (see [`Recorder`]).
    pub fn take_recording(&mut self) -> Option<WorkingSet> {
        self.recorder.take().map(Recorder::finish)
    }

    /// Reads the queued messages and serves the faults among them, without
    /// blocking. Keeps reading while more arrive, except while prefetching:
    /// then it serves what was queued and returns, so that a guest faulting
    /// without pause cannot starve the prefetcher (which would serve those
    /// very pages in bulk), while every fault still goes before the next piece.
    pub fn service(&mut self) -> Result<Service, EngineError> {
        loop {
            let read_any = self.read_all()?;
            let blocked = self.serve_pending()?;
            match (read_any, blocked) {
                (_, true) if !read_any || self.prefetching() => return Ok(Service::Blocked),
                (false, false) => return Ok(Service::Idle),
                (true, false) if self.prefetching() => return Ok(Service::Idle),
                _ => {}
            }
        }
    }

    /// Reads the messages of every uffd; returns whether any were read.
    fn read_all(&mut self) -> Result<bool, EngineError> {
        let mut any = false;
        let mut i = 0;
        while i < self.uffds.len() {
            match sys::read_messages(self.uffds[i].fd.as_fd(), &mut self.msgs) {
                Ok(0) => i += 1,
                Ok(n) => {
                    any = true;
                    let now = Instant::now();
                    let msgs = std::mem::take(&mut self.msgs);
                    for chunk in msgs[..n].chunks_exact(MSG_SIZE) {
                        let mut m = [0u8; MSG_SIZE];
                        m.copy_from_slice(chunk);
                        self.apply(i, Event::decode(&m), now);
                    }
                    self.msgs = msgs;
                    // Read this uffd again: more may be queued than one batch.
                }
                Err(e) if self.uffds[i].primary => return Err(EngineError::Read(e)),
                Err(e) => {
                    tracing::debug!(error = %e, "forked child's userfaultfd failed; dropping it");
                    self.uffds.remove(i);
                }
            }
        }
        Ok(any)
    }

    fn apply(&mut self, i: usize, event: Event, now: Instant) {
        let u = &mut self.uffds[i];
        match event {
            Event::PageFault { addr, .. } => u.pending.push_back(Pending { addr, since: now }),
            Event::Remove { start, end } => {
                Counters::add(&self.counters.removes, 1);
                for m in u.layout.pieces(start, end) {
                    let (first, last) = blocks_of(m.offset, m.len);
                    u.removed.insert_range(first, last);
                    u.present.remove_range(first, last);
                    if let Some(r) = self.recorder.as_mut().filter(|_| u.primary) {
                        r.dropped(first, last);
                    }
                }
            }
            Event::Unmap { start, end } => {
                Counters::add(&self.counters.unmaps, 1);
                for m in u.layout.unmap(start, end) {
                    let (first, last) = blocks_of(m.offset, m.len);
                    u.present.remove_range(first, last);
                }
            }
            Event::Remap { from, to, len } => {
                Counters::add(&self.counters.remaps, 1);
                u.layout.remap(from, to, len);
            }
            Event::Fork { uffd } => {
                Counters::add(&self.counters.forks, 1);
                let forks = self.uffds.len() - 1;
                if forks >= MAX_FORKS {
                    tracing::warn!(
                        forks,
                        "too many forked children; closing the new child's userfaultfd"
                    );
                } else if let Err(e) = sys::set_nonblocking(uffd.as_fd()) {
                    tracing::warn!(error = %e, "cannot use a forked child's userfaultfd");
                } else {
                    // The child starts with the parent's address space and pages.
                    let parent = &self.uffds[i];
                    let child = Uffd {
                        fd: uffd,
                        id: self.next_id,
                        primary: false,
                        layout: parent.layout.clone(),
                        present: parent.present.clone(),
                        removed: parent.removed.clone(),
                        pending: VecDeque::new(),
                    };
                    self.next_id += 1;
                    self.uffds.push(child);
                }
            }
            Event::Unknown(code) => tracing::warn!(code, "unknown userfaultfd message; ignored"),
        }
    }

    /// Serves queued faults. Returns true when one had to wait for an event.
    fn serve_pending(&mut self) -> Result<bool, EngineError> {
        let mut i = 0;
        'uffds: while i < self.uffds.len() {
            while let Some(p) = self.uffds[i].pending.pop_front() {
                match self.serve_fault(i, p.addr) {
                    Ok(()) => {
                        self.counters.latency.record(p.since.elapsed());
                        self.prefetch_held = false;
                    }
                    Err(Stop::Again) => {
                        Counters::add(&self.counters.retries, 1);
                        self.uffds[i].pending.push_front(p);
                        return Ok(true);
                    }
                    Err(Stop::Gone) if self.uffds[i].primary => return Err(EngineError::Gone),
                    Err(Stop::Gone) => {
                        // A forked child exited: forget its userfaultfd.
                        self.uffds.remove(i);
                        continue 'uffds;
                    }
                }
            }
            i += 1;
        }
        Ok(false)
    }

    fn serve_fault(&mut self, i: usize, addr: u64) -> Result<(), Stop> {
        let Some(m) = self.uffds[i].layout.find(addr).copied() else {
            return self.serve_unknown(i, addr);
        };
        Counters::add(&self.counters.faults, 1);
        let ps = m.page_size.bytes();
        let page = m.offset_of(addr & !(ps - 1));
        if self.uffds[i].primary {
            self.note_demand(page);
        }
        let window = self.fault_around.max(ps);
        let start = (page & !(window - 1)).max(m.offset);
        let end = (page & !(window - 1))
            .saturating_add(window)
            .min(m.offset + m.len);
        // A fault inside the working set fills only the set's pages around it:
        // the set says which neighbours the guest will want.
        let only_members = self.uffds[i].primary
            && self
                .prefetch
                .as_ref()
                .is_some_and(|p| p.contains(page / BLOCK));
        self.fill(i, &m, start, end, Some(page), only_members)
    }

    /// A fault outside every known region (e.g. a range that grew by mremap):
    /// anonymous memory, so a zero page; if even that fails, wake the thread so
    /// it retries instead of hanging.
    fn serve_unknown(&mut self, i: usize, addr: u64) -> Result<(), Stop> {
        Counters::add(&self.counters.unknown_address_faults, 1);
        let fd = self.uffds[i].fd.as_fd();
        let page = addr & !(BLOCK - 1);
        match sys::zeropage(fd, page, BLOCK, Wake::Waiters) {
            Ok(_) | Err(Errno::EEXIST) => Ok(()),
            Err(Errno::EAGAIN) => Err(Stop::Again),
            Err(Errno::ESRCH) => Err(Stop::Gone),
            Err(e) => {
                tracing::debug!(addr, error = %e, "fault outside the known regions");
                let _ = sys::wake(fd, page, BLOCK);
                Ok(())
            }
        }
    }

    /// Prefetch accounting and working-set recording for a demand fault.
    fn note_demand(&mut self, page: u64) {
        let block = page / BLOCK;
        if let Some(p) = &self.prefetch {
            let counter = if p.contains(block) {
                &self.counters.prefetch_late
            } else {
                &self.counters.prefetch_unpredicted
            };
            Counters::add(counter, 1);
        }
        if let Some(r) = &mut self.recorder {
            // The faulting page first, then the rest of its window as filled.
            r.filled(block as usize, block as usize + 1);
        }
    }

    /// Copies the next part of the working set: contiguous runs of it, up to
    /// [`PREFETCH_STEP_BLOCKS`] blocks. Call [`Engine::service`] between steps:
    /// that is what lets faults in.
    pub fn prefetch_step(&mut self) -> Result<(), EngineError> {
        let mut budget = PREFETCH_STEP_BLOCKS;
        while budget > 0 {
            let Some(plan) = &mut self.prefetch else {
                return Ok(());
            };
            // Have the kernel read the coming pieces from disk meanwhile.
            for (a, b) in plan.read_ahead() {
                self.snapshot.will_need(a * BLOCK, (b - a) * BLOCK);
            }
            let Some((first, last)) = plan.next_piece(budget) else {
                return Ok(());
            };
            budget -= last - first;
            let (start, end) = (first * BLOCK, last * BLOCK);
            let pieces = self.uffds[0].layout.mappings().iter().filter_map(|m| {
                let ps = m.page_size.bytes();
                let s = (start & !(ps - 1)).max(m.offset);
                let e = end.div_ceil(ps).saturating_mul(ps).min(m.offset + m.len);
                (s < e).then_some((*m, s, e))
            });
            for (m, s, e) in pieces.collect::<Vec<_>>() {
                match self.fill(0, &m, s, e, None, false) {
                    // Pages an event made us skip are demand-faulted later.
                    Ok(()) | Err(Stop::Again) => {}
                    Err(Stop::Gone) => return Err(EngineError::Gone),
                }
            }
        }
        Ok(())
    }

    /// Fills the pages of `m` in file range `[start, end)` (page-aligned) that are
    /// missing (and, with `only_members`, in the working set), in runs of one
    /// content each; the run holding `demand` goes first.
    fn fill(
        &mut self,
        i: usize,
        m: &Mapping,
        start: u64,
        end: u64,
        demand: Option<u64>,
        only_members: bool,
    ) -> Result<(), Stop> {
        let ps = m.page_size.bytes();
        let mut runs: Vec<(u64, u64, Content)> = Vec::new();
        let mut off = start;
        while off < end {
            let block = (off / BLOCK) as usize;
            let u = &self.uffds[i];
            let removed = u.removed.contains(block);
            let wanted = !only_members
                || self
                    .prefetch
                    .as_ref()
                    .is_some_and(|p| p.contains(block as u64));
            if Some(off) == demand || (wanted && !(removed || u.present.contains(block))) {
                let content = if removed {
                    Content::Zero
                } else {
                    match self.snapshot.uniform_source(off, ps) {
                        Some(Source::Zero) => Content::Zero,
                        // A page of zeros is never copied.
                        Some(Source::File(f)) if self.snapshot.is_zero(f, off, ps) => Content::Zero,
                        Some(Source::File(f)) => Content::File(f),
                        None => Content::Mixed,
                    }
                };
                match runs.last_mut() {
                    Some((_, e, c)) if *e == off && *c == content && content != Content::Mixed => {
                        *e += ps
                    }
                    _ => runs.push((off, off + ps, content)),
                }
            }
            off += ps;
        }
        if let Some(d) = demand {
            if let Some(pos) = runs.iter().position(|&(s, e, _)| s <= d && d < e) {
                runs[..=pos].rotate_right(1);
            }
        }
        for (s, e, content) in runs {
            self.install(i, m, s, e, content, demand)?;
        }
        Ok(())
    }

    /// Puts `[start, end)` of `m` in place with as few ioctls as possible.
    /// Pages besides the `demand` one count as fault-around, or as prefetch
    /// when there is no demand.
    fn install(
        &mut self,
        i: usize,
        m: &Mapping,
        start: u64,
        end: u64,
        content: Content,
        demand: Option<u64>,
    ) -> Result<(), Stop> {
        let ps = m.page_size.bytes();
        let wake = if demand.is_some() {
            Wake::Waiters
        } else {
            Wake::No
        };
        let mut off = start;
        while off < end {
            let dst = m.addr_of(off);
            let fd = self.uffds[i].fd.as_fd();
            let result = match content {
                Content::Zero if m.page_size == PageSize::Base => {
                    sys::zeropage(fd, dst, end - off, wake)
                }
                // UFFDIO_ZEROPAGE does not work on hugetlb: copy zeros instead.
                Content::Zero => match Scratch::buffer(&mut self.scratch.zeros) {
                    Some(zeros) => sys::copy(fd, dst, zeros.as_ptr(), ps, wake),
                    None => Err(Errno::ENOMEM),
                },
                Content::File(f) => match self.snapshot.bytes(f, off, end - off) {
                    Some(src) => sys::copy(fd, dst, src.as_ptr(), end - off, wake),
                    None => Err(Errno::EFAULT),
                },
                Content::Mixed => match assemble(&self.snapshot, &mut self.scratch, off, ps) {
                    Some(src) => sys::copy(fd, dst, src, ps, wake),
                    None => Err(Errno::ENOMEM),
                },
            };
            match result {
                Ok(n) if n > 0 && n % ps == 0 => {
                    self.mark_present(i, off, n);
                    if let Some(r) = self.recorder.as_mut().filter(|_| self.uffds[i].primary) {
                        let (first, last) = blocks_of(off, n);
                        r.filled(first, last);
                    }
                    let pages = n / ps;
                    let c = &self.counters;
                    if content == Content::Zero {
                        Counters::add(&c.pages_zeroed, pages);
                    } else {
                        Counters::add(&c.pages_copied, pages);
                        Counters::add(&c.bytes_copied, n);
                    }
                    match demand {
                        Some(d) => {
                            let faulting = u64::from((off..off + n).contains(&d));
                            Counters::add(&c.fault_around_pages, pages - faulting);
                        }
                        None => Counters::add(&c.prefetch_pages, pages),
                    }
                    off += n;
                }
                Err(Errno::EEXIST) => {
                    if demand == Some(off) {
                        // Filled by someone else (prefetch, another vCPU) after
                        // the fault was raised: just wake the thread.
                        Counters::add(&self.counters.already_present, 1);
                        let _ = sys::wake(fd, dst, ps);
                    }
                    self.mark_present(i, off, ps);
                    off += ps;
                }
                Err(Errno::EAGAIN) => return Err(Stop::Again),
                Err(Errno::ESRCH) => return Err(Stop::Gone),
                other => {
                    // No such mapping any more (unmapped while we worked), or the
                    // kernel refused: wake the faulting thread so it retries
                    // rather than hangs, and give up on the rest of this run.
                    Counters::add(&self.counters.errors, 1);
                    tracing::debug!(dst, ?other, "fill refused");
                    if let Some(d) = demand.filter(|&d| (start..end).contains(&d)) {
                        let _ = sys::wake(fd, m.addr_of(d), ps);
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn mark_present(&mut self, i: usize, offset: u64, len: u64) {
        let (first, last) = blocks_of(offset, len);
        self.uffds[i].present.insert_range(first, last);
    }
}

/// Copies the blocks of the huge page at `off` from their sources into the
/// bounce buffer; returns its address.
fn assemble(snapshot: &Snapshot, scratch: &mut Scratch, off: u64, ps: u64) -> Option<*const u8> {
    let buf = Scratch::buffer(&mut scratch.bounce)?;
    for (k, chunk) in buf[..ps as usize]
        .chunks_exact_mut(BLOCK as usize)
        .enumerate()
    {
        let at = off + k as u64 * BLOCK;
        match snapshot.source((at / BLOCK) as usize) {
            Source::Zero => chunk.fill(0),
            Source::File(f) => chunk.copy_from_slice(snapshot.bytes(f, at, BLOCK)?),
        }
    }
    Some(buf.as_ptr())
}

/// Blocks covering `[offset, offset + len)`.
fn blocks_of(offset: u64, len: u64) -> (usize, usize) {
    (
        (offset / BLOCK) as usize,
        (offset + len).div_ceil(BLOCK) as usize,
    )
}
