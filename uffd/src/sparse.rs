//! Keeping memory files lean: pages of zeros are holes, never data.
//!
//! Firecracker writes every page of guest memory into a full snapshot, free
//! and never-touched pages included (they read as zeros), and every dirty
//! page into a diff, including pages the guest zeroed. A hole costs no disk
//! and the page server serves it with `UFFDIO_ZEROPAGE` without reading
//! anything, so:
//! - [`punch_zero_blocks`] turns the zero pages of a memory file into holes
//!   (after a full snapshot);
//! - [`merge_diff`] applies a diff snapshot to its base memory file, writing
//!   the dirty pages that hold data and punching the zeroed ones, so the
//!   merged file reads exactly as base-plus-diff would.
//!
//! Both need a file system that supports `FALLOC_FL_PUNCH_HOLE` (ext4, xfs,
//! btrfs, tmpfs).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use nix::fcntl::{FallocateFlags, fallocate};

use crate::memory::{BLOCK, data_extents};

/// What a pass over a memory file did, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes of data written (or kept, for [`punch_zero_blocks`]).
    pub data: u64,
    /// Bytes of zero pages made into holes.
    pub holes: u64,
}

/// Bytes read and written per step.
const CHUNK: usize = 1 << 20;

/// Whether `bytes` are all zero.
pub fn is_zero(bytes: &[u8]) -> bool {
    // 64 bytes at a time with an OR-fold, which the compiler vectorises; the
    // early exit keeps a page of data cheap (it stops at its first bytes).
    let mut chunks = bytes.chunks_exact(64);
    chunks.all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

fn punch(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let off = |v: u64| i64::try_from(v).map_err(|_| io::Error::other("file too large"));
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off(offset)?,
        off(len)?,
    )?;
    Ok(())
}

/// Calls `each(offset, bytes)` for every block-aligned chunk of the data
/// extents of `file` (`len` bytes long).
fn for_each_data_chunk(
    file: &File,
    len: u64,
    mut each: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    for (start, end) in data_extents(file, len)? {
        // Extents are block-aligned on every file system Firecracker writes
        // to; round outwards in case one is not.
        let mut at = start / BLOCK * BLOCK;
        let end = end.div_ceil(BLOCK) * BLOCK;
        while at < end {
            let n = usize::try_from(end - at).map_or(CHUNK, |n| n.min(CHUNK));
            let got = read_up_to(file, &mut buf[..n], at)?;
            // Past the end of the file (a last partial block) reads as zeros.
            buf[got..n].fill(0);
            each(at, &buf[..n])?;
            at += n as u64;
        }
    }
    Ok(())
}

fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Runs of zero and non-zero blocks in `bytes` (which starts at `offset`):
/// `(offset, len, zero)`.
fn runs(offset: u64, bytes: &[u8]) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for (k, block) in bytes.chunks(BLOCK as usize).enumerate() {
        let zero = is_zero(block);
        let at = offset + k as u64 * BLOCK;
        match out.last_mut() {
            Some((_, n, z)) if *z == zero => *n += block.len() as u64,
            _ => out.push((at, block.len() as u64, zero)),
        }
    }
    out
}

/// Makes every all-zero block of `file` a hole. The file reads the same
/// afterwards.
pub fn punch_zero_blocks(file: &File) -> io::Result<Written> {
    let len = file.metadata()?.len();
    let mut done = Written::default();
    for_each_data_chunk(file, len, |at, bytes| {
        for (offset, n, zero) in runs(at, bytes) {
            if zero {
                punch(file, offset, n.min(len.saturating_sub(offset)))?;
                done.holes += n;
            } else {
                done.data += n;
            }
        }
        Ok(())
    })?;
    Ok(done)
}

/// Applies `diff` (a diff snapshot's memory file: dirty pages as data, clean
/// ones as holes) to `base`, the memory file it was taken over: data is
/// written at the same offset, zero pages become holes.
pub fn merge_diff(diff: &File, base: &File) -> io::Result<Written> {
    let len = diff.metadata()?.len();
    let base_len = base.metadata()?.len();
    if base_len != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("diff snapshot is {len} bytes, the memory file {base_len} bytes"),
        ));
    }
    let mut done = Written::default();
    for_each_data_chunk(diff, len, |at, bytes| {
        for (offset, n, zero) in runs(at, bytes) {
            let n = n.min(len.saturating_sub(offset));
            if zero {
                punch(base, offset, n)?;
                done.holes += n;
            } else {
                let from = (offset - at) as usize;
                base.write_all_at(&bytes[from..from + n as usize], offset)?;
                done.data += n;
            }
        }
        Ok(())
    })?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn sparse(path: &Path, len: u64, pages: &[(u64, u8)]) -> File {
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create");
        f.set_len(len).expect("set_len");
        for &(page, byte) in pages {
            f.write_all_at(&[byte; BLOCK as usize], page * BLOCK)
                .expect("write");
        }
        f
    }

    fn data_blocks(f: &File) -> u64 {
        let len = f.metadata().expect("meta").len();
        data_extents(f, len)
            .expect("extents")
            .iter()
            .map(|(s, e)| (e - s) / BLOCK)
            .sum()
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0; 4096]));
        assert!(is_zero(&[]));
        let mut page = [0u8; 4096];
        page[4095] = 1;
        assert!(!is_zero(&page));
        page[4095] = 0;
        page[70] = 1;
        assert!(!is_zero(&page[..100]));
    }

    #[test]
    fn zero_pages_of_a_full_snapshot_become_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A full snapshot as Firecracker writes it: every page is data,
        // most of them zeros.
        let pages: Vec<(u64, u8)> = (0..64)
            .map(|p| (p, if p % 8 == 3 { 7 } else { 0 }))
            .collect();
        let f = sparse(&dir.path().join("mem"), 64 * BLOCK, &pages);
        let before = std::fs::read(dir.path().join("mem")).expect("read");
        let done = punch_zero_blocks(&f).expect("punch");
        assert_eq!(
            done,
            Written {
                data: 8 * BLOCK,
                holes: 56 * BLOCK
            }
        );
        assert_eq!(data_blocks(&f), 8, "only the pages with data are left");
        assert_eq!(std::fs::read(dir.path().join("mem")).expect("read"), before);
    }

    #[test]
    fn a_merged_diff_writes_data_and_punches_zeroed_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = sparse(
            &dir.path().join("base"),
            64 * BLOCK,
            &[(0, 1), (5, 2), (6, 3)],
        );
        // The guest zeroed page 5, wrote page 40, and zeroed page 50 (a hole
        // in the base already).
        let diff = sparse(
            &dir.path().join("diff"),
            64 * BLOCK,
            &[(5, 0), (40, 9), (50, 0)],
        );
        let done = merge_diff(&diff, &base).expect("merge");
        assert_eq!(
            done,
            Written {
                data: BLOCK,
                holes: 2 * BLOCK
            }
        );
        let mem = std::fs::read(dir.path().join("base")).expect("read");
        let page = |n: u64| &mem[(n * BLOCK) as usize..((n + 1) * BLOCK) as usize];
        assert!(page(0).iter().all(|&b| b == 1));
        assert!(page(5).iter().all(|&b| b == 0), "zeroed page reads zero");
        assert!(page(6).iter().all(|&b| b == 3));
        assert!(page(40).iter().all(|&b| b == 9));
        assert_eq!(data_blocks(&base), 3, "pages 0, 6 and 40; page 5 is a hole");

        let short = sparse(&dir.path().join("short"), 8 * BLOCK, &[]);
        let err = merge_diff(&short, &base).expect_err("wrong size");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
