//! The early (boot) allocator: physical memory from the device tree minus reservations,
//! in the spirit of a memblock allocator, used only while `Mm::boot` runs.
//!
//! Model: two sorted lists of page ranges, `memory` (each on one node) and `reserved`
//! (kept merged). Allocation is top-down within the requested node's memory and reserves
//! what it hands out; nothing is ever freed. When boot has placed every mem_map, what is
//! left ([`EarlyAlloc::free_ranges`]) goes to the buddy allocator and the early allocator
//! is dropped.
//!
//! Invariants: `memory` ranges are page granular, sorted and disjoint; `reserved` ranges
//! are sorted, disjoint, non-adjacent and lie inside `memory`.
//!
//! Locks: none; it exists only inside `Mm::boot`, before the kernel shares `Mm`.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::types::{NodeId, Pfn, PfnRange};

/// The early allocator (see the module doc).
pub(crate) struct EarlyAlloc {
    memory: Vec<(PfnRange, NodeId)>,
    reserved: Vec<PfnRange>,
}

impl EarlyAlloc {
    /// Memory must be sorted and disjoint (checked by the caller).
    pub(crate) fn new(memory: Vec<(PfnRange, NodeId)>) -> EarlyAlloc {
        EarlyAlloc {
            memory,
            reserved: Vec::new(),
        }
    }

    /// Marks `range ∩ memory` reserved; returns the number of newly reserved pages.
    pub(crate) fn reserve(&mut self, range: PfnRange) -> u64 {
        let mut added = 0;
        let pieces: Vec<PfnRange> = self
            .memory
            .iter()
            .map(|(m, _)| m.intersect(range))
            .filter(|r| !r.is_empty())
            .collect();
        for piece in pieces {
            added += self.reserve_one(piece);
        }
        added
    }

    fn reserve_one(&mut self, mut range: PfnRange) -> u64 {
        let before: u64 = self.reserved.iter().map(|r| r.nr_pages()).sum();
        // Merge with every reserved range it overlaps or touches.
        let mut i = 0;
        while i < self.reserved.len() {
            let r = self.reserved[i];
            if r.end_exclusive.0 >= range.start.0 && r.start.0 <= range.end_exclusive.0 {
                range.start = Pfn(range.start.0.min(r.start.0));
                range.end_exclusive = Pfn(range.end_exclusive.0.max(r.end_exclusive.0));
                self.reserved.remove(i);
            } else {
                i += 1;
            }
        }
        let pos = self.reserved.partition_point(|r| r.start.0 < range.start.0);
        self.reserved.insert(pos, range);
        let after: u64 = self.reserved.iter().map(|r| r.nr_pages()).sum();
        after - before
    }

    /// Allocates `nr_pages` aligned to `align_pages` (a power of two) from `node`'s
    /// memory, highest address first.
    pub(crate) fn alloc(&mut self, nr_pages: u64, align_pages: u64, node: NodeId) -> Option<Pfn> {
        let found = self
            .free_ranges()
            .into_iter()
            .rev()
            .filter(|(_, n)| *n == node)
            .find_map(|(r, _)| {
                let start = r.end_exclusive.0.checked_sub(nr_pages)? & !(align_pages - 1);
                (start >= r.start.0).then_some(Pfn(start))
            })?;
        self.reserve_one(PfnRange::new(found, found.add(nr_pages)));
        Some(found)
    }

    /// Memory minus reservations, ascending, with the node of each piece.
    pub(crate) fn free_ranges(&self) -> Vec<(PfnRange, NodeId)> {
        let mut out = Vec::new();
        for &(m, node) in &self.memory {
            let mut cursor = m.start;
            for r in self.reserved.iter().filter(|r| !r.intersect(m).is_empty()) {
                if r.start.0 > cursor.0 {
                    out.push((PfnRange::new(cursor, r.start), node));
                }
                cursor = Pfn(cursor.0.max(r.end_exclusive.0));
            }
            if cursor.0 < m.end_exclusive.0 {
                out.push((PfnRange::new(cursor, m.end_exclusive), node));
            }
        }
        out
    }

    /// Reserved pages inside `range`.
    pub(crate) fn reserved_in(&self, range: PfnRange) -> u64 {
        self.reserved
            .iter()
            .map(|r| r.intersect(range).nr_pages())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u64, b: u64) -> PfnRange {
        PfnRange::new(Pfn(a), Pfn(b))
    }

    #[test]
    fn reserve_merges_and_alloc_is_top_down_per_node() {
        let n0 = NodeId::ZERO;
        let n1 = NodeId::new(1).unwrap();
        let mut e = EarlyAlloc::new(alloc::vec![(r(0, 100), n0), (r(200, 300), n1)]);
        assert_eq!(e.reserve(r(10, 20)), 10);
        assert_eq!(e.reserve(r(15, 30)), 10);
        assert_eq!(e.reserve(r(90, 210)), 20);
        assert_eq!(
            e.free_ranges(),
            alloc::vec![(r(0, 10), n0), (r(30, 90), n0), (r(210, 300), n1)]
        );
        assert_eq!(e.alloc(8, 8, n0), Some(Pfn(80)));
        assert_eq!(e.alloc(8, 16, n1), Some(Pfn(288)));
        assert_eq!(e.alloc(100, 1, n1), None);
        assert_eq!(e.reserved_in(r(0, 100)), 20 + 8 + 10);
    }
}
