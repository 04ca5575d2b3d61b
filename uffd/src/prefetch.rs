//! The prefetch plan: which part of a working set to copy next.
//!
//! A working set lists blocks in first-touch order. The plan copies them in
//! that order, but never one 4 KiB page per ioctl: each block that has not
//! been handed out yet starts a piece, which takes along the member blocks
//! around it in memory (up to a bound), however late they were touched.
//! A set recorded under fault-around is made of whole windows, so its pieces
//! are windows; a set recorded page by page in random order still gets large
//! copies. The plan also says which 2 MiB extents of the memory file to read
//! ahead of the copies.

use std::sync::Arc;

use crate::working_set::{BlockSet, WorkingSet};

/// Blocks per read-ahead extent (2 MiB).
const EXTENT_BLOCKS: u64 = 512;
/// Pieces whose extents are read ahead of the copy cursor.
const READ_AHEAD_PIECES: usize = 64;

#[derive(Debug)]
pub struct Plan {
    set: Arc<WorkingSet>,
    members: BlockSet,
    /// `(first block, block count)` in copy order.
    pieces: Vec<(u64, u64)>,
    /// Index of the piece being copied, and how much of it is done.
    piece: usize,
    done_in_piece: u64,
    /// Extents already advised for read-ahead, and the piece up to which
    /// read-ahead has looked.
    advised: BlockSet,
    ahead: usize,
}

impl Plan {
    /// A plan for `set` over a memory file of `blocks` blocks; a piece holds
    /// at most `max_piece` blocks.
    pub fn new(set: Arc<WorkingSet>, blocks: usize, max_piece: u64) -> Self {
        let mut members = BlockSet::new(blocks);
        for &b in set.blocks() {
            members.insert(b as usize);
        }
        let mut claimed = BlockSet::new(blocks);
        let mut pieces = Vec::new();
        let max = max_piece.max(1);
        // A member not handed out yet, and claimed now.
        let mut take = |b: u64| members.contains(b as usize) && claimed.insert(b as usize);
        for &b in set.blocks() {
            let b = u64::from(b);
            if !take(b) {
                continue;
            }
            // The members around it: a window recorded fault-first starts
            // mid-window.
            let (mut first, mut last) = (b, b + 1);
            while last - first < max && first > 0 && take(first - 1) {
                first -= 1;
            }
            while last - first < max && take(last) {
                last += 1;
            }
            pieces.push((first, last - first));
        }
        Plan {
            set,
            members,
            pieces,
            piece: 0,
            done_in_piece: 0,
            advised: BlockSet::new((blocks as u64).div_ceil(EXTENT_BLOCKS) as usize),
            ahead: 0,
        }
    }

    /// The working set this plan copies.
    pub fn set(&self) -> &WorkingSet {
        &self.set
    }

    /// Whether `block` is in the working set.
    pub fn contains(&self, block: u64) -> bool {
        self.members.contains(block as usize)
    }

    pub fn done(&self) -> bool {
        self.piece >= self.pieces.len()
    }

    /// Extents (block ranges) to read ahead now: those of the next pieces
    /// that were not advised yet.
    pub fn read_ahead(&mut self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let until = (self.piece + READ_AHEAD_PIECES).min(self.pieces.len());
        while self.ahead < until {
            let (first, n) = self.pieces[self.ahead];
            for e in first / EXTENT_BLOCKS..=(first + n - 1) / EXTENT_BLOCKS {
                if self.advised.insert(e as usize) {
                    let range = (e * EXTENT_BLOCKS, (e + 1) * EXTENT_BLOCKS);
                    match out.last_mut() {
                        Some((_, end)) if *end == range.0 => *end = range.1,
                        _ => out.push(range),
                    }
                }
            }
            self.ahead += 1;
        }
        out
    }

    /// The next run of blocks to copy, `[first, last)`, at most `max` long.
    pub fn next_piece(&mut self, max: u64) -> Option<(u64, u64)> {
        let &(first, n) = self.pieces.get(self.piece)?;
        let start = first + self.done_in_piece;
        let take = (n - self.done_in_piece).min(max.max(1));
        self.done_in_piece += take;
        if self.done_in_piece == n {
            self.piece += 1;
            self.done_in_piece = 0;
        }
        Some((start, start + take))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(plan: &mut Plan, max: u64) -> Vec<(u64, u64)> {
        std::iter::from_fn(|| plan.next_piece(max)).collect()
    }

    #[test]
    fn first_touch_order_with_the_neighbouring_members_taken_along() {
        // 1030 is touched first: it takes 1029 and 1031 along (1028 and
        // 1032 are no members). 5 takes 6 and 7.
        let blocks: Vec<u32> = vec![1030, 5, 1031, 6, 7, 1029, 100, 1024];
        let set = Arc::new(WorkingSet::new(8 << 20, blocks));
        let mut plan = Plan::new(set, 2048, 64);
        assert_eq!(
            drain(&mut plan, 64),
            vec![(1029, 1032), (5, 8), (100, 101), (1024, 1025)]
        );
        assert!(plan.done());
        assert!(plan.contains(6) && !plan.contains(8));
    }

    #[test]
    fn pieces_are_bounded_and_read_ahead_follows_them() {
        let set = Arc::new(WorkingSet::new(4 << 20, (0..300).chain(600..610).collect()));
        let mut plan = Plan::new(set, 1024, 128);
        // Extents 0 and 1 are read ahead once, before any copy.
        assert_eq!(plan.read_ahead(), vec![(0, 1024)]);
        assert!(plan.read_ahead().is_empty());
        let pieces = drain(&mut plan, 100);
        assert_eq!(
            pieces,
            vec![
                (0, 100),
                (100, 128),
                (128, 228),
                (228, 256),
                (256, 300),
                (600, 610)
            ]
        );
    }
}
