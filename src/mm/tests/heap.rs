//! The slab heap over pages of the model: size classes, alignment, and pages going back.

use std::collections::HashMap;

use super::*;
use crate::mm::heap::{HeapBacking, SlabHeap};

/// Page memory for heap tests: pages from an `Mm`, words in a map.
struct MmBacking {
    mm: Mm<FakeStore>,
    words: HashMap<usize, usize>,
}

impl HeapBacking for MmBacking {
    fn alloc_pages(&mut self, order: u32) -> Option<usize> {
        self.mm
            .alloc_pages(order, AllocFlags::UNMOVABLE)
            .ok()
            .map(|p| p.addr().0 as usize)
    }
    fn free_pages(&mut self, addr: usize, order: u32) {
        self.mm
            .free_pages(Pfn::down(PhysAddr(addr as u64)), order)
            .unwrap();
    }
    fn read_word(&self, addr: usize) -> usize {
        assert!(self.mm.pfn_valid(Pfn::down(PhysAddr(addr as u64))));
        self.words.get(&addr).copied().unwrap_or(0xdead_beef)
    }
    fn write_word(&mut self, addr: usize, value: usize) {
        self.words.insert(addr, value);
    }
}

#[test]
fn heap_classes_alignment_and_return_of_pages() {
    let mm = boot_mm(&[region(GIB, 128 * MIB, 0)], &[]);
    let start = fingerprint(&mm);
    let mut b = MmBacking {
        mm,
        words: HashMap::new(),
    };
    let mut h = SlabHeap::new();
    let mut live = Vec::new();
    for (i, &(size, align)) in [
        (1, 1),
        (8, 8),
        (24, 8),
        (100, 64),
        (2048, 8),
        (3000, 8),
        (5000, 4096),
        (64, 4096),
        (1 << 20, 8),
    ]
    .iter()
    .cycle()
    .take(300)
    .enumerate()
    {
        let a = h.alloc(&mut b, size, align).unwrap();
        assert_eq!(a % align, 0, "{size}/{align}");
        live.push((a, size, align, i));
    }
    assert!(h.alloc(&mut b, (1 << 22) + 1, 8).is_none());
    let big = h.alloc(&mut b, 1 << 22, 8).unwrap();
    assert_eq!(big % (1 << 22), 0);
    h.dealloc(&mut b, big, 1 << 22, 8);
    // No two live objects overlap.
    let mut spans: Vec<_> = live
        .iter()
        .map(|&(a, s, al, _)| (a, a + s.max(al.min(s.max(1)))))
        .collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
    for (a, s, al, _) in live.drain(..).rev() {
        h.dealloc(&mut b, a, s, al);
    }
    assert_eq!(h.stats().bytes_in_use, 0);
    h.trim(&mut b);
    assert_eq!(h.stats().pages_held, 0);
    ok(&b.mm);
    assert_eq!(fingerprint(&b.mm), start);
}
