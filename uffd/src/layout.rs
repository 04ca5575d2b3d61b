//! Where the memory file lives in the faulting process's address space.
//!
//! Starts as the handshake's regions and follows the process's `munmap`
//! (`UNMAP`) and `mremap` (`REMAP`) so later faults still find their file offset.

use crate::handshake::{PageSize, Region};

/// `len` bytes at `addr`, backed by the memory file from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub addr: u64,
    pub len: u64,
    pub offset: u64,
    pub page_size: PageSize,
}

impl Mapping {
    /// End address (exclusive). No overflow: validated at the handshake and
    /// preserved by splits and moves that the kernel performed.
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.len)
    }

    /// File offset of `addr`, which must lie inside this mapping.
    pub fn offset_of(&self, addr: u64) -> u64 {
        self.offset + (addr - self.addr)
    }

    /// Address of file offset `offset`, which must lie inside this mapping.
    pub fn addr_of(&self, offset: u64) -> u64 {
        self.addr + (offset - self.offset)
    }

    /// Whether file offset `offset` lies inside this mapping.
    pub fn holds_offset(&self, offset: u64) -> bool {
        offset >= self.offset && offset - self.offset < self.len
    }

    /// The part of this mapping inside `[start, end)`, if any.
    fn clip(&self, start: u64, end: u64) -> Option<Mapping> {
        let s = self.addr.max(start);
        let e = self.end().min(end);
        (s < e).then(|| Mapping {
            addr: s,
            len: e - s,
            offset: self.offset_of(s),
            page_size: self.page_size,
        })
    }
}

/// The mappings of one address space, sorted by address, never overlapping.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    maps: Vec<Mapping>,
}

impl Layout {
    pub fn new(regions: &[Region]) -> Self {
        let mut maps: Vec<Mapping> = regions
            .iter()
            .map(|r| Mapping {
                addr: r.base,
                len: r.size,
                offset: r.offset,
                page_size: r.page_size,
            })
            .collect();
        maps.sort_by_key(|m| m.addr);
        Layout { maps }
    }

    /// The mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.maps.partition_point(|m| m.end() <= addr);
        self.maps.get(i).filter(|m| m.addr <= addr)
    }

    /// The mappings in address order.
    pub fn mappings(&self) -> &[Mapping] {
        &self.maps
    }

    /// The mapping holding file offset `offset`.
    pub fn find_offset(&self, offset: u64) -> Option<&Mapping> {
        self.maps.iter().find(|m| m.holds_offset(offset))
    }

    /// The pieces of mappings inside `[start, end)`, in address order.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<Mapping> {
        self.maps
            .iter()
            .filter_map(|m| m.clip(start, end))
            .collect()
    }

    /// Forgets `[start, end)` (munmap), splitting mappings at its edges.
    /// Returns the pieces removed.
    pub fn unmap(&mut self, start: u64, end: u64) -> Vec<Mapping> {
        let removed = self.pieces(start, end);
        if removed.is_empty() {
            return removed;
        }
        self.maps = self
            .maps
            .iter()
            .flat_map(|m| [m.clip(0, start), m.clip(end, u64::MAX)])
            .flatten()
            .collect();
        removed
    }

    /// Moves `[from, from + len)` to `to` (mremap). Whatever was mapped at the
    /// destination was unmapped by the kernel first.
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let moved = self.unmap(from, from.saturating_add(len));
        self.unmap(to, to.saturating_add(len));
        self.maps.extend(moved.into_iter().map(|m| Mapping {
            addr: m.addr - from + to,
            ..m
        }));
        self.maps.sort_by_key(|m| m.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 4096;

    fn layout() -> Layout {
        Layout::new(&[
            Region {
                base: 100 * P,
                size: 10 * P,
                offset: 0,
                page_size: PageSize::Base,
            },
            Region {
                base: 300 * P,
                size: 4 * P,
                offset: 10 * P,
                page_size: PageSize::Base,
            },
        ])
    }

    #[test]
    fn finds_addresses_and_offsets() {
        let l = layout();
        assert_eq!(l.find(100 * P).map(|m| m.offset_of(105 * P)), Some(5 * P));
        assert_eq!(l.find(110 * P), None);
        assert_eq!(l.find(301 * P).map(|m| m.offset_of(301 * P)), Some(11 * P));
        assert_eq!(
            l.find_offset(12 * P).map(|m| m.addr_of(12 * P)),
            Some(302 * P)
        );
        assert_eq!(l.find(0), None);
    }

    #[test]
    fn unmap_splits_and_remap_moves_offsets_along() {
        let mut l = layout();
        let gone = l.unmap(102 * P, 104 * P);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].offset, 2 * P);
        assert_eq!(l.mappings().len(), 3);
        assert_eq!(l.find(103 * P), None);
        assert_eq!(l.find(104 * P).map(|m| m.offset_of(104 * P)), Some(4 * P));

        // Move pages 106..108 (file offsets 6..8) to 500.
        l.remap(106 * P, 500 * P, 2 * P);
        assert_eq!(l.find(106 * P), None);
        assert_eq!(l.find(501 * P).map(|m| m.offset_of(501 * P)), Some(7 * P));
        assert_eq!(
            l.find_offset(7 * P).map(|m| m.addr_of(7 * P)),
            Some(501 * P)
        );
        // Moving onto an existing mapping replaces it.
        l.remap(500 * P, 300 * P, 2 * P);
        assert_eq!(l.find(300 * P).map(|m| m.offset_of(300 * P)), Some(6 * P));
        assert_eq!(l.find(302 * P).map(|m| m.offset_of(302 * P)), Some(12 * P));
        assert_eq!(l.find_offset(10 * P), None, "overwritten by the move");
    }
}
