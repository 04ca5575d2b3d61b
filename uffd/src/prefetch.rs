//! The prefetch plan: which part of a working set to copy next.
//!
//! A working set lists blocks in first-touch order, but copying them one by
//! one costs an ioctl, a page-table walk and a wake per 4 KiB page. The plan
//! groups blocks by 2 MiB extent of the memory file, orders extents by their
//! earliest touch, and hands out contiguous runs of member blocks within an
//! extent, at most a given number at a time: large copies, early pages first,
//! and a bound on how long one step keeps a fault waiting.

use std::sync::Arc;

use crate::working_set::{BlockSet, WorkingSet};

/// Blocks per extent (2 MiB).
const EXTENT_BLOCKS: u64 = 512;

#[derive(Debug)]
pub struct Plan {
    members: BlockSet,
    /// Extent indexes in order of first touch.
    extents: Vec<u64>,
    /// Index into `extents` of the extent being copied.
    extent: usize,
    /// Next block to look at within that extent.
    cursor: u64,
}

impl Plan {
    pub fn new(set: &Arc<WorkingSet>, blocks: usize) -> Self {
        let mut members = BlockSet::new(blocks);
        let mut seen = BlockSet::new((blocks as u64).div_ceil(EXTENT_BLOCKS) as usize);
        let mut extents = Vec::new();
        for &b in set.blocks() {
            members.insert(b as usize);
            let e = u64::from(b) / EXTENT_BLOCKS;
            if seen.insert(e as usize) {
                extents.push(e);
            }
        }
        let cursor = extents.first().map_or(0, |e| e * EXTENT_BLOCKS);
        Plan {
            members,
            extents,
            extent: 0,
            cursor,
        }
    }

    /// Whether `block` is in the working set.
    pub fn contains(&self, block: u64) -> bool {
        self.members.contains(block as usize)
    }

    pub fn done(&self) -> bool {
        self.extent >= self.extents.len()
    }

    /// The extent after the current one, as a block range (to read ahead).
    pub fn upcoming(&self) -> Option<(u64, u64)> {
        self.extents
            .get(self.extent + 1)
            .map(|e| (e * EXTENT_BLOCKS, (e + 1) * EXTENT_BLOCKS))
    }

    /// The next run of member blocks, `[first, last)`, at most `max` long.
    pub fn next_piece(&mut self, max: u64) -> Option<(u64, u64)> {
        while let Some(&e) = self.extents.get(self.extent) {
            let end = (e + 1) * EXTENT_BLOCKS;
            let first = (self.cursor..end).find(|&b| self.contains(b));
            let Some(first) = first else {
                self.extent += 1;
                self.cursor = self
                    .extents
                    .get(self.extent)
                    .map_or(0, |e| e * EXTENT_BLOCKS);
                continue;
            };
            let limit = (first + max.max(1)).min(end);
            let last = (first..limit).find(|&b| !self.contains(b)).unwrap_or(limit);
            self.cursor = last;
            return Some((first, last));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_in_first_touch_order_runs_within_them() {
        // Extent 2 touched first, then extent 0; runs inside are contiguous.
        let blocks: Vec<u32> = vec![1030, 5, 1031, 6, 7, 1029, 100, 1024];
        let set = Arc::new(WorkingSet::new(4 << 20, blocks));
        let mut plan = Plan::new(&set, 1024 * 2);
        assert_eq!(plan.upcoming(), Some((0, 512)));
        let mut pieces = Vec::new();
        while let Some(p) = plan.next_piece(64) {
            pieces.push(p);
        }
        assert_eq!(pieces, vec![(1024, 1025), (1029, 1032), (5, 8), (100, 101)]);
        assert!(plan.done());
    }

    #[test]
    fn pieces_are_bounded() {
        let set = Arc::new(WorkingSet::new(4 << 20, (0..300).collect()));
        let mut plan = Plan::new(&set, 1024);
        let pieces: Vec<_> = std::iter::from_fn(|| plan.next_piece(64)).collect();
        assert_eq!(
            pieces,
            vec![(0, 64), (64, 128), (128, 192), (192, 256), (256, 300)]
        );
    }
}
