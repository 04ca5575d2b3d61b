//! The userfaultfd kernel ABI, and the only `unsafe` code of the page server.
//!
//! Thin, safe wrappers over `userfaultfd(2)` and its ioctls (`ioctl_userfaultfd(2)`,
//! `<linux/userfaultfd.h>`): each wrapper checks nothing beyond what the kernel
//! checks and turns the C conventions (errno, "bytes done" written back into the
//! argument struct) into Rust results. Everything above this module is safe code.
//!
//! We use raw ioctls instead of the `userfaultfd` crate: its `-sys` crate runs
//! bindgen (libclang) at build time, and its `copy` hides the partial-copy count
//! that `UFFDIO_COPY` reports with `EAGAIN`, which fault-around and prefetch need.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// Size of one `struct uffd_msg` as read from a userfaultfd.
pub const MSG_SIZE: usize = 32;

/// `UFFD_API`: the only API version there is.
const UFFD_API: u64 = 0xAA;

/// Feature bits of `struct uffdio_api` (only the ones Warren uses).
pub mod feature {
    /// `UFFD_FEATURE_EVENT_FORK`: a forked child gets its own userfaultfd, sent to us.
    pub const EVENT_FORK: u64 = 1 << 1;
    /// `UFFD_FEATURE_EVENT_REMAP`: `mremap` of a registered range is reported.
    pub const EVENT_REMAP: u64 = 1 << 2;
    /// `UFFD_FEATURE_EVENT_REMOVE`: `madvise(MADV_DONTNEED/REMOVE)` is reported.
    pub const EVENT_REMOVE: u64 = 1 << 3;
    /// `UFFD_FEATURE_MISSING_HUGETLBFS`: hugetlb ranges can be registered.
    pub const MISSING_HUGETLBFS: u64 = 1 << 4;
    /// `UFFD_FEATURE_EVENT_UNMAP`: `munmap` of a registered range is reported.
    pub const EVENT_UNMAP: u64 = 1 << 6;
}

/// `UFFD_EVENT_*` codes of `struct uffd_msg`.
pub mod event {
    pub const PAGEFAULT: u8 = 0x12;
    pub const FORK: u8 = 0x13;
    pub const REMAP: u8 = 0x14;
    pub const REMOVE: u8 = 0x15;
    pub const UNMAP: u8 = 0x16;
}

/// `UFFD_PAGEFAULT_FLAG_WRITE`.
pub const PAGEFAULT_FLAG_WRITE: u64 = 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    /// Written by the kernel: bytes copied, or a negative errno.
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    /// Written by the kernel: bytes zeroed, or a negative errno.
    zeropage: i64,
}

const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

// ioctl numbers from <linux/userfaultfd.h>: type 0xAA, the command number, and
// the argument struct (whose size is part of the number).
nix::ioctl_readwrite!(ioctl_api, 0xAA, 0x3F, UffdioApi);
nix::ioctl_readwrite!(ioctl_register, 0xAA, 0x00, UffdioRegister);
nix::ioctl_read!(ioctl_wake, 0xAA, 0x02, UffdioRange);
nix::ioctl_readwrite!(ioctl_copy, 0xAA, 0x03, UffdioCopy);
nix::ioctl_readwrite!(ioctl_zeropage, 0xAA, 0x04, UffdioZeropage);

/// Takes ownership of a descriptor the kernel just installed in our table
/// (received with `SCM_RIGHTS`, or created by a `UFFD_EVENT_FORK` read).
pub fn adopt_fd(raw: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed `raw` for us moments ago and nothing else in
    // this process knows its number, so this OwnedFd is its only owner.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Creates a userfaultfd as Firecracker does: close-on-exec, non-blocking.
///
/// Uses `userfaultfd(2)` and falls back to `/dev/userfaultfd` where the syscall is
/// refused (`vm.unprivileged_userfaultfd = 0` without `CAP_SYS_PTRACE`).
pub fn create() -> std::io::Result<OwnedFd> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: userfaultfd(2) takes one integer argument and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd >= 0 {
        let raw = RawFd::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
        return Ok(adopt_fd(raw));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    let dev = std::fs::File::open("/dev/userfaultfd")?;
    // SAFETY: USERFAULTFD_IOC_NEW takes the flags as its argument and returns a new fd.
    let raw = unsafe { libc::ioctl(dev.as_raw_fd(), request_dev_new(), flags) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(adopt_fd(raw))
}

/// `USERFAULTFD_IOC_NEW` = `_IO(0xAA, 0x00)` on `/dev/userfaultfd`.
fn request_dev_new() -> libc::c_ulong {
    nix::request_code_none!(0xAA, 0x00) as libc::c_ulong
}

/// `UFFDIO_API`: enables `features`; returns the features the kernel offers.
pub fn api(uffd: BorrowedFd<'_>, features: u64) -> Result<u64, Errno> {
    let mut arg = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: `arg` is a valid, exclusively borrowed uffdio_api for the call.
    unsafe { ioctl_api(uffd.as_raw_fd(), &mut arg) }?;
    Ok(arg.features)
}

/// `UFFDIO_REGISTER` in missing mode for `[start, start + len)`.
pub fn register(uffd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut arg = UffdioRegister {
        range: UffdioRange { start, len },
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: `arg` is a valid uffdio_register; the kernel validates the range.
    unsafe { ioctl_register(uffd.as_raw_fd(), &mut arg) }?;
    Ok(())
}

/// The result convention shared by `UFFDIO_COPY` and `UFFDIO_ZEROPAGE`.
///
/// `Ok(n)`: the first `n` bytes are in place (all of them, or fewer when the next
/// page already exists, which the kernel reports as `EAGAIN` with a positive count).
/// `Err(EEXIST)`: the first page already exists. `Err(EAGAIN)`: nothing was done
/// because the address space is changing (an event is queued: read it, then retry).
fn fill_result(ret: nix::Result<libc::c_int>, len: u64, done: i64) -> Result<u64, Errno> {
    match ret {
        Ok(_) => Ok(len),
        Err(Errno::EAGAIN) if done > 0 => Ok(done.unsigned_abs()),
        Err(e) => Err(e),
    }
}

/// Whether a fill wakes threads waiting on its range (`*_MODE_DONTWAKE` when not).
/// Prefetch does not: a thread waiting there has a fault message queued, and
/// serving it (`EEXIST`, then [`wake`]) wakes it; skipping the wait-queue walk
/// on every bulk copy is cheaper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Waiters,
    No,
}

impl Wake {
    /// `UFFDIO_COPY_MODE_DONTWAKE` and `UFFDIO_ZEROPAGE_MODE_DONTWAKE` are both bit 0.
    fn mode(self) -> u64 {
        match self {
            Wake::Waiters => 0,
            Wake::No => 1,
        }
    }
}

/// `UFFDIO_COPY`: atomically fills `[dst, dst + len)` in the faulting process with
/// the bytes at `src` in ours, then (with [`Wake::Waiters`]) wakes threads
/// waiting on that range.
///
/// `src` must point to `len` readable bytes of this process (a mapping of the
/// memory file or a scratch buffer); the kernel reads it with `copy_from_user`,
/// so a bad pointer is an `EFAULT`, never memory unsafety.
pub fn copy(
    uffd: BorrowedFd<'_>,
    dst: u64,
    src: *const u8,
    len: u64,
    wake: Wake,
) -> Result<u64, Errno> {
    let mut arg = UffdioCopy {
        dst,
        src: src as u64,
        len,
        mode: wake.mode(),
        copy: 0,
    };
    // SAFETY: `arg` is a valid uffdio_copy; `dst` lives in another address space
    // and `src` is only read by the kernel with fault-checked user copies.
    let ret = unsafe { ioctl_copy(uffd.as_raw_fd(), &mut arg) };
    fill_result(ret, len, arg.copy)
}

/// `UFFDIO_ZEROPAGE`: maps zero pages over `[dst, dst + len)` and wakes waiters
/// as [`copy`] does. Not supported on hugetlb ranges (copy zeros there instead).
pub fn zeropage(uffd: BorrowedFd<'_>, dst: u64, len: u64, wake: Wake) -> Result<u64, Errno> {
    let mut arg = UffdioZeropage {
        range: UffdioRange { start: dst, len },
        mode: wake.mode(),
        zeropage: 0,
    };
    // SAFETY: `arg` is a valid uffdio_zeropage for the call.
    let ret = unsafe { ioctl_zeropage(uffd.as_raw_fd(), &mut arg) };
    fill_result(ret, len, arg.zeropage)
}

/// `UFFDIO_WAKE`: wakes threads waiting on faults in `[start, start + len)`.
pub fn wake(uffd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut arg = UffdioRange { start, len };
    // SAFETY: `arg` is a valid uffdio_range for the call.
    unsafe { ioctl_wake(uffd.as_raw_fd(), &mut arg) }?;
    Ok(())
}

/// Reads as many queued messages as fit in `buf` (a multiple of [`MSG_SIZE`]).
/// Returns the number of bytes read; 0 when nothing is queued.
pub fn read_messages(uffd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    match nix::unistd::read(uffd, buf) {
        Ok(n) => Ok(n),
        Err(Errno::EAGAIN) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Whether `fd` is a userfaultfd (its `/proc/self/fd` link names the anon inode).
pub fn is_userfaultfd(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:[userfaultfd]")
}

/// Makes `fd` non-blocking (Firecracker already does; we do not rely on it).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // Values of the macros in <linux/userfaultfd.h> on x86_64 and aarch64.
        let api = nix::request_code_readwrite!(0xAA, 0x3F, std::mem::size_of::<UffdioApi>());
        let copy = nix::request_code_readwrite!(0xAA, 0x03, std::mem::size_of::<UffdioCopy>());
        let zero = nix::request_code_readwrite!(0xAA, 0x04, std::mem::size_of::<UffdioZeropage>());
        let wake = nix::request_code_read!(0xAA, 0x02, std::mem::size_of::<UffdioRange>());
        let reg = nix::request_code_readwrite!(0xAA, 0x00, std::mem::size_of::<UffdioRegister>());
        assert_eq!(api as u64, 0xc018_aa3f);
        assert_eq!(copy as u64, 0xc028_aa03);
        assert_eq!(zero as u64, 0xc020_aa04);
        assert_eq!(wake as u64, 0x8010_aa02);
        assert_eq!(reg as u64, 0xc020_aa00);
    }
}
