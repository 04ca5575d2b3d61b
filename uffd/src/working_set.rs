//! Working sets: which pages a restore touched, in order of first touch, stored
//! next to the snapshot so the next restore can prefetch them.
//!
//! # File format (version 1, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `WRNWSET\0` |
//! | 8 | 4 | version, `1` |
//! | 12 | 4 | block size in bytes, `4096` |
//! | 16 | 8 | length of the memory file it was recorded against, in bytes |
//! | 24 | 8 | number of runs `n` |
//! | 32 | 8 × n | runs: `u32` first block, `u32` block count, in first-touch order |
//! | 32 + 8n | 8 | FNV-1a 64 of every byte before it |
//!
//! A run is a stretch of consecutive blocks touched one after another. Blocks
//! are 4 KiB offsets into the memory file (not guest addresses), so the set
//! survives the guest's memory being mapped elsewhere. Files are written to a
//! temporary name and renamed, so a reader sees the old set or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::memory::BLOCK;

const MAGIC: &[u8; 8] = b"WRNWSET\0";
const VERSION: u32 = 1;
const HEADER: usize = 32;

/// Why a working-set file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WorkingSetError {
    #[error("working set {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("working set {path} is not a working-set file: {reason}")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error(
        "working set was recorded for a {recorded}-byte memory file, this one is {actual} bytes"
    )]
    WrongMemoryFile { recorded: u64, actual: u64 },
}

/// The path a snapshot's working set is stored at: next to its memory file.
pub fn path_for(memory_file: &Path) -> PathBuf {
    let mut name = memory_file.as_os_str().to_owned();
    name.push(".wset");
    PathBuf::from(name)
}

/// Which restores of a snapshot record its working set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Every restore records what it filled and replaces the set ("last
    /// cycle"): a capsule's own snapshot, restored by one VM at a time, whose
    /// guest's habits change as it is used.
    EachRestore,
    /// Only a restore that finds no set records one: a snapshot many VMs are
    /// restored from (a template's), whose set is recorded once, by the
    /// first restore after it is built, and then only read.
    Once,
}

impl Refresh {
    /// Where a restore of `memory_file` saves the set it records, if it does.
    pub fn record_to(self, memory_file: &Path) -> Option<PathBuf> {
        let path = path_for(memory_file);
        match self {
            Refresh::EachRestore => Some(path),
            Refresh::Once => (!path.exists()).then_some(path),
        }
    }
}

/// A working set: blocks of the memory file in order of first touch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkingSet {
    memory_len: u64,
    blocks: Vec<u32>,
}

impl WorkingSet {
    /// A set of `blocks` (in first-touch order) for a memory file of `memory_len` bytes.
    pub fn new(memory_len: u64, blocks: Vec<u32>) -> Self {
        WorkingSet { memory_len, blocks }
    }

    /// Length of the memory file this set was recorded against.
    pub fn memory_len(&self) -> u64 {
        self.memory_len
    }

    /// The blocks in first-touch order.
    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Reads and validates a working-set file.
    pub fn load(path: &Path) -> Result<Self, WorkingSetError> {
        let bytes = std::fs::read(path).map_err(|source| WorkingSetError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::decode(&bytes).map_err(|reason| WorkingSetError::Corrupt {
            path: path.to_owned(),
            reason,
        })
    }

    /// Writes the set atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), WorkingSetError> {
        let io = |source| WorkingSetError::Io {
            path: path.to_owned(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&self.encode())
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Checks that the set belongs to a memory file of `len` bytes.
    pub fn check_memory_len(&self, len: u64) -> Result<(), WorkingSetError> {
        if self.memory_len == len {
            Ok(())
        } else {
            Err(WorkingSetError::WrongMemoryFile {
                recorded: self.memory_len,
                actual: len,
            })
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for &b in &self.blocks {
            match runs.last_mut() {
                Some((start, n)) if start.checked_add(*n) == Some(b) && *n < u32::MAX => *n += 1,
                _ => runs.push((b, 1)),
            }
        }
        let mut out = Vec::with_capacity(HEADER + runs.len() * 8 + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(BLOCK as u32).to_le_bytes());
        out.extend_from_slice(&self.memory_len.to_le_bytes());
        out.extend_from_slice(&(runs.len() as u64).to_le_bytes());
        for (start, n) in runs {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let u64_at = |at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        if bytes.len() < HEADER + 8 || &bytes[..8] != MAGIC {
            return Err("bad magic");
        }
        if u32_at(8) != Some(VERSION) {
            return Err("unsupported version");
        }
        if u32_at(12) != Some(BLOCK as u32) {
            return Err("unsupported block size");
        }
        let memory_len = u64_at(16).ok_or("truncated")?;
        let runs = usize::try_from(u64_at(24).ok_or("truncated")?).map_err(|_| "too many runs")?;
        let body = runs
            .checked_mul(8)
            .and_then(|b| b.checked_add(HEADER))
            .ok_or("too many runs")?;
        if bytes.len() != body + 8 {
            return Err("length does not match the run count");
        }
        if u64_at(body) != Some(fnv1a(&bytes[..body])) {
            return Err("checksum mismatch");
        }
        let total_blocks = memory_len / BLOCK;
        let mut blocks = Vec::new();
        for i in 0..runs {
            let (start, n) = (
                u32_at(HEADER + i * 8).unwrap_or(0),
                u32_at(HEADER + i * 8 + 4).unwrap_or(0),
            );
            if n == 0 || u64::from(start) + u64::from(n) > total_blocks {
                return Err("run outside the memory file");
            }
            if blocks.len() + n as usize > total_blocks as usize {
                return Err("more blocks than the memory file has");
            }
            blocks.extend(start..start + n);
        }
        Ok(WorkingSet { memory_len, blocks })
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A set of blocks as a bitmap over the memory file.
#[derive(Clone, Debug)]
pub struct BlockSet {
    words: Vec<u64>,
}

impl BlockSet {
    pub fn new(blocks: usize) -> Self {
        BlockSet {
            words: vec![0; blocks.div_ceil(64)],
        }
    }

    pub fn contains(&self, block: usize) -> bool {
        self.words
            .get(block / 64)
            .is_some_and(|w| w & (1 << (block % 64)) != 0)
    }

    /// Adds `block`; returns whether it was new.
    pub fn insert(&mut self, block: usize) -> bool {
        let Some(w) = self.words.get_mut(block / 64) else {
            return false;
        };
        let bit = 1 << (block % 64);
        let new = *w & bit == 0;
        *w |= bit;
        new
    }

    pub fn insert_range(&mut self, first: usize, last: usize) {
        for b in first..last {
            self.insert(b);
        }
    }

    pub fn remove_range(&mut self, first: usize, last: usize) {
        for b in first..last {
            if let Some(w) = self.words.get_mut(b / 64) {
                *w &= !(1 << (b % 64));
            }
        }
    }
}

/// Records what a restore filled, in the order it filled it ("last cycle").
///
/// Every page put in place counts (the faulting page first, then the rest of
/// its fault-around window, and what prefetch copied), so the next restore
/// prefetches the neighbours fault-around brought in too: a set of faulting
/// pages alone would leave the next restore faulting on those neighbours.
/// Pages the guest gave back (`MADV_DONTNEED` of a balloon) are left out
/// unless filled again. When the restore ends before it reached every page
/// of the set it prefetched, the rest of that set follows, in its old order:
/// a short restore must not forget what longer ones used.
#[derive(Debug)]
pub struct Recorder {
    /// Blocks in `order` that were not dropped since.
    seen: BlockSet,
    /// Blocks given back by the guest.
    dropped: BlockSet,
    /// Fill order; a block dropped and filled again appears twice.
    order: Vec<u32>,
    previous: Vec<u32>,
    memory_len: u64,
    blocks: usize,
    /// Fills are recorded during `window` from the first one.
    window: Duration,
    started: Option<Instant>,
}

impl Recorder {
    pub fn new(
        memory_len: u64,
        blocks: usize,
        previous: Option<&WorkingSet>,
        window: Duration,
    ) -> Self {
        Recorder {
            seen: BlockSet::new(blocks),
            dropped: BlockSet::new(blocks),
            order: Vec::new(),
            previous: previous.map(|w| w.blocks().to_vec()).unwrap_or_default(),
            memory_len,
            blocks,
            window,
            started: None,
        }
    }

    /// Notes that blocks `[first, last)` were filled, in that order.
    pub fn filled(&mut self, first: usize, last: usize) {
        let started = *self.started.get_or_insert_with(Instant::now);
        if started.elapsed() > self.window {
            return;
        }
        for b in first..last.min(self.blocks) {
            self.dropped.remove_range(b, b + 1);
            if self.seen.insert(b) {
                // `b` < `blocks`, which fits in u32 (checked by the file format).
                self.order.push(u32::try_from(b).unwrap_or(u32::MAX));
            }
        }
    }

    /// Notes that the guest gave blocks `[first, last)` back.
    pub fn dropped(&mut self, first: usize, last: usize) {
        self.seen.remove_range(first, last);
        self.dropped.insert_range(first, last);
    }

    pub fn finish(self) -> WorkingSet {
        let mut kept = BlockSet::new(self.blocks);
        let blocks = self
            .order
            .into_iter()
            .chain(self.previous)
            .filter(|&b| !self.dropped.contains(b as usize) && kept.insert(b as usize))
            .collect();
        WorkingSet {
            memory_len: self.memory_len,
            blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("mem"));
        assert!(path.ends_with("mem.wset"));
        let ws = WorkingSet::new(1 << 20, vec![7, 8, 9, 3, 200, 201, 0]);
        ws.save(&path).expect("save");
        assert_eq!(WorkingSet::load(&path).expect("load"), ws);
        // Runs compress sequential touches: 4 runs of 8 bytes.
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            32 + 4 * 8 + 8
        );
        assert!(ws.check_memory_len(1 << 20).is_ok());
        assert!(matches!(
            ws.check_memory_len(2 << 20),
            Err(WorkingSetError::WrongMemoryFile { .. })
        ));
    }

    #[test]
    fn templates_record_once_capsules_each_restore() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mem = dir.path().join("mem");
        let path = path_for(&mem);
        assert_eq!(Refresh::Once.record_to(&mem), Some(path.clone()));
        WorkingSet::new(1 << 20, vec![1]).save(&path).expect("save");
        assert_eq!(Refresh::Once.record_to(&mem), None);
        assert_eq!(Refresh::EachRestore.record_to(&mem), Some(path));
    }

    #[test]
    fn corrupt_files_are_refused() {
        let good = WorkingSet::new(1 << 20, vec![1, 2, 3, 100]).encode();
        assert!(WorkingSet::decode(&good).is_ok());
        assert_eq!(WorkingSet::decode(b"nonsense"), Err("bad magic"));
        assert_eq!(
            WorkingSet::decode(&good[..good.len() - 1]),
            Err("length does not match the run count")
        );
        let mut flipped = good.clone();
        flipped[HEADER] ^= 1;
        assert_eq!(WorkingSet::decode(&flipped), Err("checksum mismatch"));
        // A run past the end of the memory file, with a valid checksum.
        let outside = WorkingSet::new(1 << 20, vec![300]).encode();
        assert_eq!(
            WorkingSet::decode(&outside),
            Err("run outside the memory file")
        );
        for cut in 0..good.len() {
            assert!(WorkingSet::decode(&good[..cut]).is_err());
        }
    }

    #[test]
    fn recorder_keeps_fill_order_drops_given_back_pages_and_appends_the_rest() {
        let old = WorkingSet::new(1 << 20, vec![5, 6, 1, 30, 31]);
        let mut r = Recorder::new(1 << 20, 256, Some(&old), Duration::from_secs(60));
        r.filled(9, 10);
        r.filled(4, 8);
        r.filled(9, 10);
        // The balloon takes 6..8 and 30; 7 is filled again later.
        r.dropped(6, 8);
        r.dropped(30, 31);
        r.filled(7, 8);
        r.filled(300, 302);
        // This restore's fills first (7 where first filled), then the rest
        // of the old set; dropped blocks and blocks past the end are left out.
        assert_eq!(r.finish().blocks(), &[9, 4, 5, 7, 1, 31]);
    }

    #[test]
    fn recorder_stops_after_its_window() {
        let mut r = Recorder::new(1 << 20, 256, None, Duration::from_millis(50));
        r.filled(1, 2);
        std::thread::sleep(Duration::from_millis(60));
        r.filled(2, 3);
        assert_eq!(r.finish().blocks(), &[1]);
    }
}
