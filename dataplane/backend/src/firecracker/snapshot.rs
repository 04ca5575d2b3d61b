//! A capsule's memory snapshot on disk, `$WARREN_DIR/snapshots/<id>/`:
//! `vmstate` (Firecracker's device and vCPU state) and `mem` (guest memory,
//! sparse: holes are zero pages), plus `mem.wset`, the working set the page
//! server recorded on the last restore (see [`warren_uffd::working_set`]).
//!
//! A snapshot is written to pending files first (`vmstate.new`, and
//! `mem.new` for a full snapshot or `mem.diff` for a diff) and committed
//! only after Firecracker and its page server have stopped, because the
//! page server serves from `mem` until then. Committing renames the full
//! files into place, or copies the diff's data extents (the pages
//! Firecracker reported dirty, zeroed ones included) into `mem`. Every step
//! of the commit is idempotent, so a crash anywhere in it is finished by
//! committing again.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Whence, lseek};
use vmm_api::model::{SnapshotCreate, SnapshotType};

const VMSTATE: &str = "vmstate";
const MEM: &str = "mem";
const PENDING_VMSTATE: &str = "vmstate.new";
const PENDING_FULL: &str = "mem.new";
const PENDING_DIFF: &str = "mem.diff";

/// One capsule's snapshot directory.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn vmstate(&self) -> PathBuf {
        self.dir.join(VMSTATE)
    }

    pub fn memory(&self) -> PathBuf {
        self.dir.join(MEM)
    }

    /// Whether a committed snapshot is here.
    pub fn is_committed(&self) -> bool {
        self.vmstate().is_file() && self.memory().is_file()
    }

    /// What to ask Firecracker for: a diff over the committed snapshot when
    /// the VM was restored from it (its dirty pages are tracked since), a
    /// full snapshot otherwise.
    pub fn request(&self, diff: bool) -> io::Result<SnapshotCreate> {
        std::fs::create_dir_all(&self.dir)?;
        self.discard_pending()?;
        let (mem, kind) = if diff {
            (PENDING_DIFF, SnapshotType::Diff)
        } else {
            (PENDING_FULL, SnapshotType::Full)
        };
        Ok(SnapshotCreate {
            snapshot_path: path_string(&self.dir.join(PENDING_VMSTATE)),
            mem_file_path: path_string(&self.dir.join(mem)),
            snapshot_type: Some(kind),
        })
    }

    /// Removes the files of a snapshot that was never completed.
    pub fn discard_pending(&self) -> io::Result<()> {
        for name in [PENDING_VMSTATE, PENDING_FULL, PENDING_DIFF] {
            remove_if_present(&self.dir.join(name))?;
        }
        Ok(())
    }

    /// Makes the pending snapshot the committed one (see the module docs).
    pub fn commit(&self) -> io::Result<()> {
        let (full, diff, vmstate) = (
            self.dir.join(PENDING_FULL),
            self.dir.join(PENDING_DIFF),
            self.dir.join(PENDING_VMSTATE),
        );
        if full.exists() {
            std::fs::rename(&full, self.memory())?;
        }
        if diff.exists() {
            let base = std::fs::OpenOptions::new()
                .write(true)
                .open(self.memory())?;
            merge_diff(&File::open(&diff)?, &base)?;
            base.sync_all()?;
        }
        if vmstate.exists() {
            File::open(&vmstate)?.sync_all()?;
            std::fs::rename(&vmstate, self.vmstate())?;
        }
        File::open(&self.dir)?.sync_all()?;
        remove_if_present(&diff)
    }

    /// Removes the whole directory.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Copies every data extent of `diff` (a diff snapshot's memory file:
/// dirty pages as data, clean ones as holes) to the same offset of `base`.
pub fn merge_diff(diff: &File, base: &File) -> io::Result<()> {
    let len = diff.metadata()?.len();
    if base.metadata()?.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "diff snapshot is {len} bytes, the memory file {} bytes",
                base.metadata()?.len()
            ),
        ));
    }
    let offset = |v: u64| i64::try_from(v).map_err(|_| io::Error::other("file too large"));
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let start = match lseek(diff, offset(pos)?, Whence::SeekData) {
            Ok(s) => s.unsigned_abs(),
            // No data at or after `pos`.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = lseek(diff, offset(start)?, Whence::SeekHole)?
            .unsigned_abs()
            .min(len);
        let mut at = start;
        while at < end {
            let n = usize::try_from(end - at).map_or(buf.len(), |n| n.min(buf.len()));
            diff.read_exact_at(&mut buf[..n], at)?;
            base.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        pos = end;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn sparse(path: &Path, len: u64, pages: &[(u64, u8)]) {
        let f = File::create(path).unwrap();
        f.set_len(len).unwrap();
        for &(page, byte) in pages {
            f.write_all_at(&[byte; PAGE as usize], page * PAGE).unwrap();
        }
    }

    #[test]
    fn a_diff_is_merged_into_the_memory_file_zeroed_pages_included() {
        let dir = tempfile::tempdir().unwrap();
        let snap = SnapshotDir::new(dir.path().join("s"));
        let full = snap.request(false).unwrap();
        assert_eq!(full.snapshot_type, Some(SnapshotType::Full));
        sparse(
            Path::new(&full.mem_file_path),
            64 * PAGE,
            &[(0, 1), (5, 2), (6, 3)],
        );
        std::fs::write(&full.snapshot_path, b"state 1").unwrap();
        snap.commit().unwrap();
        assert!(snap.is_committed());

        let diff = snap.request(true).unwrap();
        assert!(diff.mem_file_path.ends_with("mem.diff"));
        // Page 5 was zeroed by the guest, page 40 written.
        sparse(
            Path::new(&diff.mem_file_path),
            64 * PAGE,
            &[(5, 0), (40, 9)],
        );
        std::fs::write(&diff.snapshot_path, b"state 2").unwrap();
        snap.commit().unwrap();
        // Committing again (a crash after the merge) changes nothing.
        snap.commit().unwrap();

        let mem = std::fs::read(snap.memory()).unwrap();
        let page = |n: u64| &mem[(n * PAGE) as usize..((n + 1) * PAGE) as usize];
        assert!(page(0).iter().all(|&b| b == 1));
        assert!(page(5).iter().all(|&b| b == 0), "zeroed page stays zero");
        assert!(page(6).iter().all(|&b| b == 3));
        assert!(page(40).iter().all(|&b| b == 9));
        assert_eq!(std::fs::read(snap.vmstate()).unwrap(), b"state 2");
        assert!(!Path::new(&diff.mem_file_path).exists());
    }

    #[test]
    fn a_diff_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        sparse(&a, 8 * PAGE, &[(1, 1)]);
        sparse(&b, 16 * PAGE, &[]);
        let err = merge_diff(&File::open(&a).unwrap(), &File::open(&b).unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn pending_files_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let snap = SnapshotDir::new(dir.path().to_path_buf());
        let req = snap.request(false).unwrap();
        std::fs::write(&req.snapshot_path, b"partial").unwrap();
        snap.discard_pending().unwrap();
        assert!(!Path::new(&req.snapshot_path).exists());
        assert!(!snap.is_committed());
    }
}
