//! The TAP device of a Firecracker slot, created by ioctl on a thread inside
//! the slot's namespace: persistent (it outlives our file descriptor, so
//! Firecracker opens it by name later), with the flags Firecracker attaches
//! with (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// Creates persistent TAP `name` in the calling thread's network namespace.
pub(crate) fn create_persistent(name: &str) -> io::Result<()> {
    let tap = attach(name)?;
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    if unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens TAP `name` (creating it if absent) as Firecracker does: frames with
/// a virtio-net header in front, no packet information.
pub(crate) fn attach(name: &str) -> io::Result<File> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= ifr.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad TAP name {name:?}"),
        ));
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is,
    // on the tun fd we own.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun)
}
