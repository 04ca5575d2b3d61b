//! The memory snapshot the page server serves from: a base memory file plus
//! optional diff layers, read through `mmap`.
//!
//! The base is Firecracker's raw guest memory file. Its holes (found with
//! `SEEK_DATA`/`SEEK_HOLE`) are zero pages, served with `UFFDIO_ZEROPAGE` without
//! touching the disk; so are pages written as data that hold only zeros
//! (checked when served; [`crate::sparse`] makes them holes on disk). A layer is a diff snapshot's memory file as Firecracker
//! writes it: the same length as the base, data where the page was dirty, holes
//! where it was clean. Each 4 KiB block is served from the topmost file that has
//! data there: the block -> layer map is built from the files' extents, that is
//! from what Firecracker reported dirty, never from page contents, so a page the
//! guest really zeroed comes back zero instead of stale.
//!
//! This needs a file system that reports holes (ext4, xfs, btrfs, tmpfs, ...).
//! The files must not change while a VM is served from them.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use nix::unistd::{Whence, lseek};

/// Granularity of the block -> source map, holes, and page bookkeeping.
pub const BLOCK: u64 = 4096;

/// Where the bytes of one block come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A hole in every file: zeros.
    Zero,
    /// File `n` of the snapshot (0 is the base, 1.. the layers in order).
    File(u8),
}

/// Why a snapshot could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot open memory file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("memory file {0} is not a regular file")]
    NotRegular(PathBuf),
    #[error("memory file {0} is empty")]
    Empty(PathBuf),
    #[error("memory file {path} is {len} bytes, not a multiple of 4096")]
    Unaligned { path: PathBuf, len: u64 },
    #[error("diff layer {path} is {len} bytes but the base is {base_len}")]
    LayerLength {
        path: PathBuf,
        len: u64,
        base_len: u64,
    },
    #[error("at most 254 diff layers are supported, got {0}")]
    TooManyLayers(usize),
    #[error("cannot map or scan {path}: {source}")]
    Map {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An opened memory snapshot, shared read-only by every VM served from it.
#[derive(Debug)]
pub struct Snapshot {
    files: Vec<Mmap>,
    /// One entry per block: 0 = zero, n + 1 = `files[n]`.
    sources: Vec<u8>,
    len: u64,
    path: PathBuf,
}

impl Snapshot {
    /// Opens a full snapshot's memory file.
    pub fn open(memory_file: &Path) -> Result<Self, MemoryError> {
        Self::open_layered(memory_file, &[])
    }

    /// Opens a base memory file with diff layers on top, oldest first.
    pub fn open_layered(base: &Path, layers: &[PathBuf]) -> Result<Self, MemoryError> {
        if layers.len() > 254 {
            return Err(MemoryError::TooManyLayers(layers.len()));
        }
        let (base_file, len) = open_regular(base)?;
        if len == 0 {
            return Err(MemoryError::Empty(base.to_owned()));
        }
        if len % BLOCK != 0 {
            return Err(MemoryError::Unaligned {
                path: base.to_owned(),
                len,
            });
        }
        let blocks = usize::try_from(len / BLOCK).map_err(|_| MemoryError::Unaligned {
            path: base.to_owned(),
            len,
        })?;
        let mut sources = vec![0u8; blocks];
        let mut files = Vec::with_capacity(layers.len() + 1);
        let all = std::iter::once((base, base_file)).chain(
            layers
                .iter()
                .map(|p| {
                    let (f, l) = open_regular(p)?;
                    if l != len {
                        return Err(MemoryError::LayerLength {
                            path: p.clone(),
                            len: l,
                            base_len: len,
                        });
                    }
                    Ok((p.as_path(), f))
                })
                .collect::<Result<Vec<_>, _>>()?,
        );
        for (index, (path, file)) in all.enumerate() {
            let map_err = |source| MemoryError::Map {
                path: path.to_owned(),
                source,
            };
            // `index` <= 254 was checked above, so the tag fits in a byte.
            let tag = u8::try_from(index + 1).unwrap_or(u8::MAX);
            for (start, end) in data_extents(&file, len).map_err(map_err)? {
                let first = usize::try_from(start / BLOCK).unwrap_or(blocks);
                let last = usize::try_from(end.div_ceil(BLOCK))
                    .unwrap_or(blocks)
                    .min(blocks);
                sources[first..last].fill(tag);
            }
            // SAFETY: a read-only shared mapping of a regular file. The snapshot
            // files are immutable while served (documented above); the kernel
            // reads this memory for UFFDIO_COPY with fault-checked user copies.
            let map = unsafe { Mmap::map(&file) }.map_err(map_err)?;
            files.push(map);
        }
        Ok(Snapshot {
            files,
            sources,
            len,
            path: base.to_owned(),
        })
    }

    /// Length of the memory file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: an empty memory file is refused when opening.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Path of the base memory file (for logs).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of 4 KiB blocks.
    pub fn blocks(&self) -> usize {
        self.sources.len()
    }

    /// Where block `block` comes from. Out-of-range blocks are zero.
    pub fn source(&self, block: usize) -> Source {
        match self.sources.get(block) {
            None | Some(0) => Source::Zero,
            Some(&n) => Source::File(n - 1),
        }
    }

    /// The source shared by every block of `[offset, offset + len)`, if one is.
    pub fn uniform_source(&self, offset: u64, len: u64) -> Option<Source> {
        let (first, last) = block_range(offset, len);
        let tags = self.sources.get(first..last)?;
        let tag = *tags.first()?;
        tags.iter().all(|&t| t == tag).then(|| self.source(first))
    }

    /// The `len` bytes at `offset` of file `file`; `None` outside the file.
    pub fn bytes(&self, file: u8, offset: u64, len: u64) -> Option<&[u8]> {
        let map = self.files.get(usize::from(file))?;
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        map.get(start..end)
    }

    /// Whether the `len` bytes at `offset` of file `file` are all zero (a
    /// page Firecracker wrote but the guest never filled); `false` outside
    /// the file.
    pub fn is_zero(&self, file: u8, offset: u64, len: u64) -> bool {
        self.bytes(file, offset, len)
            .is_some_and(crate::sparse::is_zero)
    }

    /// Hints the kernel to read `[offset, offset + len)` of every file that
    /// serves part of it ahead of use (prefetch runs ahead of its copies).
    pub fn will_need(&self, offset: u64, len: u64) {
        let (first, last) = block_range(offset, len);
        let Some(tags) = self.sources.get(first..last) else {
            return;
        };
        let mut seen = [false; 256];
        for &t in tags {
            if t != 0 && !std::mem::replace(&mut seen[usize::from(t)], true) {
                if let (Some(map), Ok(o), Ok(l)) = (
                    self.files.get(usize::from(t - 1)),
                    usize::try_from(offset),
                    usize::try_from(len),
                ) {
                    // Advice only: failure changes nothing but speed.
                    let _ = map.advise_range(memmap2::Advice::WillNeed, o, l);
                }
            }
        }
    }
}

fn block_range(offset: u64, len: u64) -> (usize, usize) {
    let first = usize::try_from(offset / BLOCK).unwrap_or(usize::MAX);
    let last = usize::try_from(offset.saturating_add(len).div_ceil(BLOCK)).unwrap_or(usize::MAX);
    (first, last)
}

fn open_regular(path: &Path) -> Result<(File, u64), MemoryError> {
    let open_err = |source| MemoryError::Open {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if !meta.is_file() {
        return Err(MemoryError::NotRegular(path.to_owned()));
    }
    Ok((file, meta.len()))
}

/// The data (non-hole) extents of `file`, as `[start, end)` byte ranges.
pub(crate) fn data_extents(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let to_off = |v: u64| i64::try_from(v).map_err(|_| std::io::Error::other("file too large"));
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match lseek(file, to_off(pos)?, Whence::SeekData) {
            Ok(s) => s.unsigned_abs(),
            // ENXIO: no data at or after `pos`.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = lseek(file, to_off(start)?, Whence::SeekHole)?
            .unsigned_abs()
            .min(len);
        if end <= start {
            break;
        }
        extents.push((start, end));
        pos = end;
    }
    Ok(extents)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    fn sparse(dir: &Path, name: &str, len: u64, pages: &[(u64, u8)]) -> PathBuf {
        let path = dir.join(name);
        let f = File::create(&path).expect("create");
        f.set_len(len).expect("set_len");
        for &(page, byte) in pages {
            f.write_all_at(&[byte; BLOCK as usize], page * BLOCK)
                .expect("write");
        }
        path
    }

    #[test]
    fn holes_are_zero_and_layers_win_where_they_have_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let len = 64 * BLOCK;
        let base = sparse(
            dir.path(),
            "base",
            len,
            &(0..32).map(|p| (p, 0xAA)).collect::<Vec<_>>(),
        );
        // The diff dirtied page 3 (to zeros: the guest zeroed it) and page 40.
        let diff = sparse(dir.path(), "diff", len, &[(3, 0x00), (40, 0xBB)]);
        let snap = Snapshot::open_layered(&base, &[diff]).expect("open");
        assert_eq!(snap.len(), len);
        assert_eq!(snap.source(0), Source::File(0));
        assert_eq!(
            snap.source(3),
            Source::File(1),
            "a zeroed dirty page comes from the diff"
        );
        assert_eq!(
            snap.bytes(1, 3 * BLOCK, BLOCK).expect("in range"),
            &[0u8; 4096][..]
        );
        assert_eq!(snap.source(40), Source::File(1));
        assert_eq!(snap.source(50), Source::Zero);
        assert_eq!(snap.uniform_source(0, 3 * BLOCK), Some(Source::File(0)));
        assert_eq!(snap.uniform_source(0, 4 * BLOCK), None);
        assert_eq!(
            snap.uniform_source(48 * BLOCK, 16 * BLOCK),
            Some(Source::Zero)
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = sparse(dir.path(), "empty", 0, &[]);
        assert!(matches!(Snapshot::open(&empty), Err(MemoryError::Empty(_))));
        let odd = sparse(dir.path(), "odd", 5000, &[]);
        assert!(matches!(
            Snapshot::open(&odd),
            Err(MemoryError::Unaligned { .. })
        ));
        assert!(matches!(
            Snapshot::open(dir.path()),
            Err(MemoryError::NotRegular(_))
        ));
        assert!(matches!(
            Snapshot::open(&dir.path().join("missing")),
            Err(MemoryError::Open { .. })
        ));
        let base = sparse(dir.path(), "base", 8 * BLOCK, &[]);
        let short = sparse(dir.path(), "short", 4 * BLOCK, &[]);
        assert!(matches!(
            Snapshot::open_layered(&base, &[short]),
            Err(MemoryError::LayerLength { .. })
        ));
    }
}
