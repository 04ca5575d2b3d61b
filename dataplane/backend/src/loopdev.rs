//! Loop devices through the kernel's ioctls, for both backends (a namespace
//! capsule's private disk, a microVM's copy-on-write drive): find a free one
//! (`LOOP_CTL_GET_FREE`), bind a file to it in one step (`LOOP_CONFIGURE`),
//! read its backing file from sysfs. Devices are configured with
//! auto-clear: the kernel detaches them when the last user (an open fd, a
//! mount, a device-mapper table) lets go, so nothing outlives its users.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

// Loop device ioctls (linux/loop.h); libc does not carry them.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
const LOOP_MAJOR: u64 = 7;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, kernel 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. Dropping it closes our fd; the device goes away
/// once nothing else (mount, device-mapper) holds it.
#[derive(Debug)]
pub struct LoopDevice {
    number: u32,
    device: File,
}

impl LoopDevice {
    /// Binds `file` to a free loop device, read-only or writable.
    pub fn attach(file: &Path, read_only: bool) -> io::Result<Self> {
        let backing = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(file)?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        // Another process may take the device between GET_FREE and
        // CONFIGURE (EBUSY); then ask again.
        for _ in 0..64 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a
            // device number or -1.
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let number = n as u32;
            let device = open_loop(number, read_only)?;
            let mut config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info: LoopInfo64 {
                    lo_device: 0,
                    lo_inode: 0,
                    lo_rdevice: 0,
                    lo_offset: 0,
                    lo_sizelimit: 0,
                    lo_number: 0,
                    lo_encrypt_type: 0,
                    lo_encrypt_key_size: 0,
                    lo_flags: LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 },
                    lo_file_name: [0; LO_NAME_SIZE],
                    lo_crypt_name: [0; LO_NAME_SIZE],
                    lo_encrypt_key: [0; LO_KEY_SIZE],
                    lo_init: [0; 2],
                },
                reserved: [0; 8],
            };
            let name = file.as_os_str().as_encoded_bytes();
            let len = name.len().min(LO_NAME_SIZE - 1);
            config.info.lo_file_name[..len].copy_from_slice(&name[..len]);
            // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which
            // `config` is (repr(C), same layout), for the duration of the call.
            let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
            if rc == 0 {
                return Ok(Self { number, device });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(e);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "no free loop device after 64 attempts",
        ))
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> PathBuf {
        device_path(self.number)
    }

    /// `N` of `/dev/loopN`.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Detaches now (or, if still in use, as soon as the last user lets go).
    pub fn detach(self) -> io::Result<()> {
        clear(&self.device)
    }
}

/// Attached loop devices and their backing files (from sysfs).
pub fn list() -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/block")?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        out.push((
            PathBuf::from(format!("/dev/{name}")),
            PathBuf::from(backing),
        ));
    }
    Ok(out)
}

/// Detaches every loop device whose backing file lies under `dir`
/// (auto-clear defers it while a mount or table still uses the device).
pub fn detach_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut detached = Vec::new();
    for (device, backing) in list()? {
        if !backing.starts_with(dir) {
            continue;
        }
        clear(&OpenOptions::new().read(true).open(&device)?)?;
        detached.push(device);
    }
    Ok(detached)
}

fn device_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

/// Opens `/dev/loopN`, making the node when `/dev` is not a devtmpfs (as in
/// a container).
fn open_loop(number: u32, read_only: bool) -> io::Result<File> {
    let path = device_path(number);
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            nix::sys::stat::mknod(
                &path,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o660),
                nix::sys::stat::makedev(LOOP_MAJOR, u64::from(number)),
            )
            .map_err(io::Error::from)?;
            open()
        }
        other => other,
    }
}

/// Clears loop device `file`; already detached is fine.
fn clear(file: &File) -> io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument.
    if unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD, 0) } < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: already detached.
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(e);
        }
    }
    Ok(())
}

/// Whether loop device `number` is still attached to `image`.
pub fn attached_to(number: u32, image: &Path) -> bool {
    let backing = format!("/sys/block/loop{number}/loop/backing_file");
    match std::fs::read_to_string(backing) {
        Ok(file) => Path::new(file.trim()) == image,
        Err(_) => false,
    }
}

/// Detaches loop device `number` if it is still attached to `image` (after
/// a crash between attach and mount, or when the kernel did not auto-clear).
pub fn detach_if_attached(number: u32, image: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if !attached_to(number, image) {
        return Ok(());
    }
    let path = device_path(number);
    if !std::fs::metadata(&path)?.file_type().is_block_device() {
        return Err(io::Error::other(format!(
            "{} is not a block device",
            path.display()
        )));
    }
    clear(&OpenOptions::new().read(true).open(&path)?)
}
