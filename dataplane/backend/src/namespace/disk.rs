//! The capsule's private disk: a sparse ext4 image attached to a loop device
//! that holds the overlay's upper (writable) layer, so writing past the
//! capsule's `disk_mb` fails with ENOSPC and the files are on the host's
//! disk, not in memory.
//!
//! Making a file system per capsule would cost a `mkfs.ext4` run; instead
//! one empty "golden" image per size is made once (`cache/ext4-<MB>M.img`)
//! and each capsule gets a sparse copy of it (only the few hundred KiB of
//! metadata are copied).
//!
//! Mounting ext4 costs 10-20 ms, so the [`DiskPool`] keeps a few disks per
//! size ready: copied, attached, and mounted as *detached* mounts (the new
//! mount API's `fsmount`), held only by a descriptor. A capsule's init moves
//! its disk's mount into its own mount namespace (`move_mount`); the disk is
//! never mounted on the host. The loop device is set to auto-clear, so it
//! goes away by itself once that mount (its only user) is gone: when the
//! capsule's mount namespace dies, or when an unused pool descriptor closes
//! (also when the agent exits).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};

use crate::loopdev::LoopDevice;

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

/// A capsule disk ready to be moved into a capsule.
#[derive(Debug)]
pub struct PreparedDisk {
    image: PathBuf,
    loop_dev: LoopDevice,
    /// The detached ext4 mount.
    mount: OwnedFd,
}

impl PreparedDisk {
    /// Copies a fresh image to `image`, attaches and mounts it.
    fn make(cache: &ImageCache, size_mb: u32, image: &Path) -> io::Result<Self> {
        cache.make(size_mb, image)?;
        let result = LoopDevice::attach(image, false).and_then(|loop_dev| {
            let mount = mount_detached(&loop_dev.path())?;
            Ok(Self {
                image: image.to_owned(),
                loop_dev,
                mount,
            })
        });
        if result.is_err() {
            let _ = std::fs::remove_file(image);
        }
        result
    }

    pub fn loop_number(&self) -> u32 {
        self.loop_dev.number()
    }

    /// The detached mount, for `move_mount` in the capsule's init.
    pub fn mount_fd(&self) -> i32 {
        self.mount.as_raw_fd()
    }
}

/// Mounts ext4 from `device` as a detached mount (nosuid, nodev).
/// `noinit_itable`: the golden image is made with lazy inode tables, and
/// zeroing them in the background would write every sparse image full.
fn mount_detached(device: &Path) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
    const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
    let owned = |fd: libc::c_long| {
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: a new descriptor the kernel just returned to us.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        }
    };
    let device = CString::new(device.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: fsopen with a NUL-terminated name.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, c"ext4".as_ptr(), FSOPEN_CLOEXEC) })?;
    let fsconfig = |cmd: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| {
        let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: fsconfig on our fs context with NUL-terminated strings (or
        // nulls, as the command allows) that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                ptr(key),
                ptr(value),
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            let key = key.map_or("create".into(), CStr::to_string_lossy);
            return Err(io::Error::new(e.kind(), format!("mount ext4 ({key}): {e}")));
        }
        Ok(())
    };
    fsconfig(FSCONFIG_SET_STRING, Some(c"source"), Some(&device))?;
    fsconfig(FSCONFIG_SET_FLAG, Some(c"noinit_itable"), None)?;
    fsconfig(FSCONFIG_CMD_CREATE, None, None)?;
    let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    // SAFETY: fsmount on our fs context.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

/// Disks kept ready per size, refilled in the background after each take.
#[derive(Debug)]
pub struct DiskPool {
    cache: ImageCache,
    dir: PathBuf,
    depth: usize,
    ready: Mutex<HashMap<u32, Vec<PreparedDisk>>>,
    filling: Mutex<HashSet<u32>>,
}

/// Numbers pool images uniquely within this process (several backends may
/// share a data directory in tests).
static POOL_IMAGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl DiskPool {
    /// Pool images live in `<root>/<agent pid>/`; leftovers of agents that
    /// are gone (their mounts died with them) are removed. `depth` disks
    /// are kept per size once that size has been asked for (0: no pool).
    pub fn new(cache: ImageCache, root: &Path, depth: usize) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let owner = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok());
            let alive = owner.is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            });
            if !alive {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            cache,
            dir,
            depth,
            ready: Mutex::new(HashMap::new()),
            filling: Mutex::new(HashSet::new()),
        })
    }

    /// A ready disk of `size_mb` whose image is now at `image` (the pool's,
    /// renamed, or a new one), and a refill of the pool started.
    pub fn take(self: &Arc<Self>, size_mb: u32, image: &Path) -> io::Result<PreparedDisk> {
        let pooled = self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&size_mb)
            .and_then(Vec::pop);
        let disk = match pooled {
            Some(mut disk) => {
                // The loop device follows the file through the rename.
                std::fs::rename(&disk.image, image)?;
                disk.image = image.to_owned();
                disk
            }
            None => PreparedDisk::make(&self.cache, size_mb, image)?,
        };
        self.refill(size_mb);
        Ok(disk)
    }

    fn refill(self: &Arc<Self>, size_mb: u32) {
        if self.depth == 0
            || !self
                .filling
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(size_mb)
        {
            return;
        }
        let pool = Arc::clone(self);
        std::thread::spawn(move || {
            loop {
                let have = pool
                    .ready
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&size_mb)
                    .map_or(0, Vec::len);
                if have >= pool.depth {
                    break;
                }
                let n = POOL_IMAGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let image = pool.dir.join(format!("{size_mb}M-{n}.ext4"));
                match PreparedDisk::make(&pool.cache, size_mb, &image) {
                    Ok(disk) => pool
                        .ready
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(size_mb)
                        .or_default()
                        .push(disk),
                    Err(e) => {
                        tracing::warn!(error = %e, size_mb, "could not prepare a pooled disk");
                        break;
                    }
                }
            }
            pool.filling
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&size_mb);
        });
    }
}

impl Drop for DiskPool {
    fn drop(&mut self) {
        let ready = std::mem::take(self.ready.get_mut().unwrap_or_else(PoisonError::into_inner));
        for disk in ready.into_values().flatten() {
            let image = disk.image.clone();
            // Closing the mount and loop descriptors frees the device.
            drop(disk);
            let _ = std::fs::remove_file(image);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
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
