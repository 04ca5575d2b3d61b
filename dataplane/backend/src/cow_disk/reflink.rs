//! Copy-on-write file clones (`FICLONE`): on btrfs and XFS (reflink=1) a
//! clone shares every extent with its source until either side writes, and
//! takes time proportional to the extent count, not the data.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Clones `src` into a new file `dst` (mode 0600). On failure `dst` is
/// removed. `Unsupported` errors mean the filesystem cannot reflink
/// (or the two paths are on different filesystems).
pub fn clone_file(src: &Path, dst: &Path) -> io::Result<File> {
    let source = File::open(src)?;
    let target = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)?;
    // SAFETY: FICLONE takes the source fd as its argument.
    let rc = unsafe { libc::ioctl(target.as_raw_fd(), FICLONE, source.as_raw_fd()) };
    if rc == 0 {
        return Ok(target);
    }
    let e = io::Error::last_os_error();
    let _ = std::fs::remove_file(dst);
    Err(if is_unsupported(&e) {
        io::Error::new(io::ErrorKind::Unsupported, e)
    } else {
        e
    })
}

/// What `FICLONE` answers when reflinks cannot be made here.
fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY)
    )
}
