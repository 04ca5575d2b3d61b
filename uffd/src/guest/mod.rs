//! Firecracker's side of the userfaultfd handshake, for tests, benchmarks and
//! `warren-uffd guest`.
//!
//! [`Guest::connect`] does what Firecracker does on `PUT /snapshot/load` with the
//! `Uffd` backend: maps guest memory (anonymous, private; hugetlb for 2 MiB
//! pages), creates a close-on-exec, non-blocking userfaultfd, enables its
//! features with `UFFDIO_API`, registers every region for missing faults,
//! connects to the page server's socket and sends the JSON region list with the
//! userfaultfd in `SCM_RIGHTS`, keeping its own copy of the descriptor and its
//! end of the socket. Touching the memory then faults pages in through the
//! server. [`script`] drives it step by step for the integration tests.

pub mod script;

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::handshake::{self, PageSize, Region};
use crate::sys;

/// userfaultfd features a guest can ask for. Firecracker asks for
/// [`features::REMOVE`] when the VM has a balloon device.
pub mod features {
    pub use crate::sys::feature::{
        EVENT_FORK as FORK, EVENT_REMAP as REMAP, EVENT_REMOVE as REMOVE, EVENT_UNMAP as UNMAP,
    };
}

/// How to lay out guest memory.
#[derive(Clone, Copy, Debug)]
pub struct GuestOptions {
    pub page_size: PageSize,
    /// Number of regions the memory file is split into (Firecracker uses one
    /// or a few: x86 guests above 3 GiB get two).
    pub regions: usize,
    /// userfaultfd features (see [`features`]).
    pub features: u64,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            page_size: PageSize::Base,
            regions: 1,
            features: features::REMOVE,
        }
    }
}

/// One piece of guest memory: `len` bytes at `addr`, the memory file from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    addr: u64,
    len: u64,
    offset: u64,
}

/// The mapped pieces of guest memory; unmapped on drop.
#[derive(Debug, Default)]
struct Pieces(Vec<Piece>);

impl Drop for Pieces {
    fn drop(&mut self) {
        for p in &self.0 {
            unmap(p.addr, p.len);
        }
    }
}

/// A process's guest memory served by a page server.
#[derive(Debug)]
pub struct Guest {
    uffd: OwnedFd,
    socket: UnixStream,
    pieces: Pieces,
    page_size: PageSize,
    memory_len: u64,
}

fn os(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn map_anonymous(len: u64, page_size: PageSize, prot: libc::c_int) -> io::Result<u64> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    if page_size == PageSize::Huge2M {
        // MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT.
        flags |= libc::MAP_HUGETLB | (21 << libc::MAP_HUGE_SHIFT);
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
    // SAFETY: a fresh anonymous mapping at an address the kernel picks; it
    // aliases nothing and is unmapped only by this module.
    let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr as u64)
}

fn unmap(addr: u64, len: u64) {
    // SAFETY: [addr, addr + len) is a range this module mapped and still owns;
    // nothing borrows it past this call (slices handed out borrow the Guest).
    unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) };
}

impl Guest {
    /// Maps `memory_len` bytes, registers them with a new userfaultfd, connects
    /// to `socket` and sends the handshake.
    pub fn connect(socket: &Path, memory_len: u64, options: GuestOptions) -> io::Result<Guest> {
        let ps = options.page_size.bytes();
        if memory_len == 0 || memory_len % ps != 0 || options.regions == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "memory length must be whole pages",
            ));
        }
        let pages = memory_len / ps;
        let per_region = (pages / options.regions as u64).max(1) * ps;
        let uffd = sys::create()?;
        let mut features = options.features;
        if options.page_size == PageSize::Huge2M {
            features |= sys::feature::MISSING_HUGETLBFS;
        }
        sys::api(uffd.as_fd(), features).map_err(os)?;
        let mut pieces = Pieces::default();
        let mut offset = 0;
        while offset < memory_len {
            let last = pieces.0.len() + 1 == options.regions;
            let len = if last {
                memory_len - offset
            } else {
                per_region.min(memory_len - offset)
            };
            let addr = map_anonymous(len, options.page_size, libc::PROT_READ | libc::PROT_WRITE)?;
            pieces.0.push(Piece { addr, len, offset });
            sys::register(uffd.as_fd(), addr, len).map_err(os)?;
            offset += len;
        }
        let regions: Vec<Region> = pieces
            .0
            .iter()
            .map(|p| Region {
                base: p.addr,
                size: p.len,
                offset: p.offset,
                page_size: options.page_size,
            })
            .collect();
        let guest = Guest {
            uffd,
            socket: UnixStream::connect(socket)?,
            pieces,
            page_size: options.page_size,
            memory_len,
        };
        guest.send_handshake(&handshake::encode(&regions))?;
        Ok(guest)
    }

    /// Sends raw handshake bytes with the userfaultfd (one `sendmsg`, as
    /// Firecracker's `send_with_fd`).
    fn send_handshake(&self, json: &[u8]) -> io::Result<()> {
        let fds = [self.uffd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let sent = sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(json)],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .map_err(os)?;
        if sent != json.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short handshake write",
            ));
        }
        Ok(())
    }

    /// Our end of the page server's socket (EOF on it means the server is gone).
    pub fn socket(&self) -> &UnixStream {
        &self.socket
    }

    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    pub fn memory_len(&self) -> u64 {
        self.memory_len
    }

    /// File offsets of every page still mapped, in order.
    pub fn mapped_pages(&self) -> Vec<u64> {
        let ps = self.page_size.bytes();
        self.pieces
            .0
            .iter()
            .flat_map(|p| (p.offset..p.offset + p.len).step_by(ps as usize))
            .collect()
    }

    fn piece_of(&self, offset: u64, len: u64) -> Option<usize> {
        self.pieces
            .0
            .iter()
            .position(|p| offset >= p.offset && offset + len <= p.offset + p.len)
    }

    /// Address of memory-file offset `offset` in guest memory, if mapped.
    pub fn addr_of(&self, offset: u64) -> Option<u64> {
        self.piece_of(offset, 1)
            .map(|i| self.pieces.0[i].addr + (offset - self.pieces.0[i].offset))
    }

    /// Reads one word of the page at `offset` (faulting it in if missing).
    pub fn touch(&self, offset: u64) -> Option<u64> {
        let addr = self.addr_of(offset)?;
        // SAFETY: `addr` is inside a live, readable mapping owned by self and
        // aligned (pages are); a volatile read so the access really happens.
        Some(unsafe { std::ptr::read_volatile((addr & !7) as *const u64) })
    }

    /// The bytes at `[offset, offset + len)` of guest memory (faulting them in).
    pub fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let i = self.piece_of(offset, len)?;
        let addr = self.pieces.0[i].addr + (offset - self.pieces.0[i].offset);
        // SAFETY: the range lies inside a live mapping owned by self, which
        // cannot be unmapped or written while this shared borrow lives.
        Some(unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) })
    }

    /// Writes `data` at memory-file offset `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let i = self
            .piece_of(offset, data.len() as u64)
            .ok_or_else(not_mapped)?;
        let addr = self.pieces.0[i].addr + (offset - self.pieces.0[i].offset);
        // SAFETY: the range lies inside a live writable mapping owned by self,
        // and `&mut self` guarantees no slice into it is alive.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        Ok(())
    }

    /// `madvise(MADV_DONTNEED)` on `[offset, offset + len)`, as the balloon does.
    pub fn dontneed(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let addr = self
            .addr_of(offset)
            .filter(|_| self.piece_of(offset, len).is_some())
            .ok_or_else(not_mapped)?;
        // SAFETY: the range is inside our mapping; dropping its pages is the point
        // and `&mut self` guarantees no slice into it is alive.
        let r =
            unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Moves `[offset, offset + len)` to a new address with `mremap`.
    pub fn remap(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let i = self.piece_of(offset, len).ok_or_else(not_mapped)?;
        let p = self.pieces.0[i];
        let old = p.addr + (offset - p.offset);
        // Reserve a destination the kernel chose, then move onto it.
        let target = map_anonymous(len, self.page_size, libc::PROT_NONE)?;
        // SAFETY: both ranges are ours; MREMAP_FIXED replaces the reservation.
        // `&mut self` guarantees no slice into the moved range is alive.
        let moved = unsafe {
            libc::mremap(
                old as *mut libc::c_void,
                len as usize,
                len as usize,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target as *mut libc::c_void,
            )
        };
        if moved == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            unmap(target, len);
            return Err(err);
        }
        self.split(i, offset, len, Some(moved as u64));
        Ok(())
    }

    /// Unmaps `[offset, offset + len)`.
    pub fn unmap(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let i = self.piece_of(offset, len).ok_or_else(not_mapped)?;
        let p = self.pieces.0[i];
        unmap(p.addr + (offset - p.offset), len);
        self.split(i, offset, len, None);
        Ok(())
    }

    /// Replaces piece `i` by its parts before and after `[offset, offset + len)`,
    /// and that range at `moved_to` if it moved.
    fn split(&mut self, i: usize, offset: u64, len: u64, moved_to: Option<u64>) {
        let p = self.pieces.0.remove(i);
        let before = Piece {
            len: offset - p.offset,
            ..p
        };
        let after_off = offset + len;
        let after = Piece {
            addr: p.addr + (after_off - p.offset),
            len: p.offset + p.len - after_off,
            offset: after_off,
        };
        let moved = moved_to.map(|addr| Piece { addr, len, offset });
        self.pieces.0.extend(
            [Some(before), moved, Some(after)]
                .into_iter()
                .flatten()
                .filter(|q| q.len > 0),
        );
        self.pieces.0.sort_by_key(|q| q.offset);
    }

    /// Forks; the child runs `child` and exits with its return value. Returns the
    /// child's exit code. The child must not allocate (this process may have
    /// other threads): use it to read memory and return a code.
    pub fn fork_and(&self, child: impl FnOnce() -> i32) -> io::Result<i32> {
        use nix::sys::wait::{WaitStatus, waitpid};
        use nix::unistd::ForkResult;
        // SAFETY: the child only runs `child` (documented to not allocate or
        // take locks) and then `_exit`s without running destructors.
        match unsafe { nix::unistd::fork() }.map_err(os)? {
            ForkResult::Child => {
                let code = child();
                // SAFETY: _exit ends the child immediately, as fork(2) requires.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).map_err(os)? {
                WaitStatus::Exited(_, code) => Ok(code),
                other => Err(io::Error::other(format!(
                    "forked child ended with {other:?}"
                ))),
            },
        }
    }
}

fn not_mapped() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "range is not inside one mapped piece of guest memory",
    )
}

/// Hands memory the caller mapped itself (`len` bytes at `addr`, backed by
/// the memory file from offset 0, in base pages) to the page server at
/// `socket`, as Firecracker does on a load: a new userfaultfd with `features`,
/// the range registered for missing faults, the region list sent with the
/// descriptor. Keep the returned descriptor and connection open while the
/// memory is in use; touching it then faults pages in through the server.
pub fn hand_over(
    socket: &Path,
    addr: u64,
    len: u64,
    features: u64,
) -> io::Result<(OwnedFd, UnixStream)> {
    let uffd = sys::create()?;
    sys::api(uffd.as_fd(), features).map_err(os)?;
    sys::register(uffd.as_fd(), addr, len).map_err(os)?;
    let region = Region {
        base: addr,
        size: len,
        offset: 0,
        page_size: PageSize::Base,
    };
    let stream = send_raw_handshake(socket, &handshake::encode(&[region]), &[&uffd])?;
    Ok((uffd, stream))
}

/// Sends an arbitrary handshake (for testing malformed ones): `json` with the
/// descriptors `fds` in `SCM_RIGHTS`, over a new connection to `socket`.
/// Returns the connection.
pub fn send_raw_handshake(
    socket: &Path,
    json: &[u8],
    fds: &[&dyn AsRawFd],
) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(socket)?;
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(json)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .map_err(os)?;
    Ok(stream)
}

/// A fresh userfaultfd with `UFFDIO_API` done (for handshake tests that need a
/// real one but no memory).
pub fn new_userfaultfd() -> io::Result<OwnedFd> {
    let fd = sys::create()?;
    sys::api(fd.as_fd(), features::REMOVE).map_err(os)?;
    Ok(fd)
}
