//! The capsule's private disk: a sparse ext4 image attached to a loop device
//! that holds the overlay's upper (writable) layer, so writing past the
//! capsule's `disk_mb` fails with ENOSPC and the files are on the host's
//! disk, not in memory.
//!
//! Making a file system per capsule would cost a `mkfs.ext4` run; instead
//! one empty "golden" image per size is made once (`cache/ext4-<MB>M.img`)
//! and each capsule gets a sparse copy of it (only the few hundred KiB of
//! metadata are copied). The loop device is set to auto-clear: it goes away
//! by itself once the capsule's mount namespace (the only mount of it) dies.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mount options for the capsule's ext4 disk. `noinit_itable`: the golden
/// image is made with lazy inode tables, and zeroing them in the background
/// would write every capsule's sparse image full.
pub const EXT4_OPTIONS: &str = "noinit_itable";

/// Golden images, one per disk size, under `dir`.
#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
}

impl ImageCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The golden image of `size_mb`, made on first use.
    fn golden(&self, size_mb: u32) -> io::Result<PathBuf> {
        let path = self.dir.join(format!("ext4-{size_mb}M.img"));
        if path.exists() {
            return Ok(path);
        }
        std::fs::create_dir_all(&self.dir)?;
        let staging = tempfile::Builder::new()
            .prefix(".ext4-")
            .tempfile_in(&self.dir)?;
        staging.as_file().set_len(u64::from(size_mb) << 20)?;
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-E"])
            .arg("lazy_itable_init=1,lazy_journal_init=1,nodiscard")
            .arg(staging.path())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("run mkfs.ext4 (e2fsprogs): {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // Concurrent makers race to the same name; every result is equal.
        staging.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }

    /// Makes `dest` (which must not exist) a fresh empty ext4 image of
    /// `size_mb`.
    pub fn make(&self, size_mb: u32, dest: &Path) -> io::Result<()> {
        let golden = self.golden(size_mb)?;
        sparse_copy(&golden, dest)
    }
}

/// Copies `src` to a new file `dest`, keeping holes.
fn sparse_copy(src: &Path, dest: &Path) -> io::Result<()> {
    let src = File::open(src)?;
    let dst = OpenOptions::new().write(true).create_new(true).open(dest)?;
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut pos: i64 = 0;
    let end = len as i64;
    while pos < end {
        // SAFETY: lseek on a file descriptor we own.
        let data = unsafe { libc::lseek(sfd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(sfd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            // SAFETY: both descriptors are open; the offsets are local variables.
            let n = unsafe {
                libc::copy_file_range(
                    sfd,
                    &mut off_in,
                    dfd,
                    &mut off_out,
                    (hole - off_in) as usize,
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "image shrank while copying",
                ));
            }
        }
        pos = hole;
    }
    Ok(())
}

// Loop device ioctls (linux/loop.h); libc does not carry them.
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LOOP_MAJOR: u64 = 7;

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
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. It auto-clears when its last user closes it:
/// keep this open until the file system on it is mounted.
#[derive(Debug)]
pub struct LoopDevice {
    /// Held open only to keep the device from auto-clearing.
    _file: File,
    number: u32,
}

impl LoopDevice {
    /// Attaches `image` to a free loop device.
    pub fn attach(image: &Path) -> io::Result<Self> {
        let backing = OpenOptions::new().read(true).write(true).open(image)?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        // Another process can take the device between GET_FREE and
        // CONFIGURE; then ask again.
        for _ in 0..64 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
            let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if number < 0 {
                return Err(io::Error::last_os_error());
            }
            let number = number as u32;
            let file = open_loop(number)?;
            let mut info = LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            };
            let name = image.as_os_str().as_encoded_bytes();
            let n = name.len().min(63);
            info.lo_file_name[..n].copy_from_slice(&name[..n]);
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which
            // `config` lays out exactly and outlives the call.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CONFIGURE, &config) };
            if rc == 0 {
                return Ok(Self {
                    _file: file,
                    number,
                });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(e);
            }
        }
        Err(io::Error::other("no free loop device after 64 attempts"))
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    pub fn path(&self) -> PathBuf {
        device_path(self.number)
    }
}

fn device_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

/// Opens `/dev/loopN`, making the node when `/dev` is not a devtmpfs.
fn open_loop(number: u32) -> io::Result<File> {
    let path = device_path(number);
    match OpenOptions::new().read(true).write(true).open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            nix::sys::stat::mknod(
                &path,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o660),
                nix::sys::stat::makedev(LOOP_MAJOR, u64::from(number)),
            )
            .map_err(io::Error::from)?;
            OpenOptions::new().read(true).write(true).open(&path)
        }
        other => other,
    }
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
    let file = OpenOptions::new().read(true).open(&path)?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    if unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD, 0) } < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: already detached meanwhile.
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_sparse_and_equal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ImageCache::new(dir.path().join("cache"));
        let dest = dir.path().join("disk.img");
        cache.make(64, &dest).expect("make");
        let golden = dir.path().join("cache/ext4-64M.img");
        assert_eq!(
            std::fs::read(&golden).expect("read"),
            std::fs::read(&dest).expect("read")
        );
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&dest).expect("stat");
        assert_eq!(meta.len(), 64 << 20);
        assert!(
            meta.blocks() * 512 < 8 << 20,
            "copy is not sparse: {} blocks",
            meta.blocks()
        );
        // A second copy reuses the golden image and must not clobber `dest`.
        assert!(cache.make(64, &dest).is_err());
    }
}
