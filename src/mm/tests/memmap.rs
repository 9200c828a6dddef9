//! Descriptors inside the memory they describe ([`crate::mm::memmap`]): a fixed walk through
//! the states of one unit, the accounting `mem` shows, and property tests over random
//! plug / allocate / isolate / migrate / offline / unplug sequences of a device region
//! for block sizes 1 MiB, 2 MiB, 128 MiB and 1 GiB. After every step: `check` holds, no
//! allocation covers a descriptor page, every unit the device has plugged carries its own
//! live descriptor mapping and no descriptor mapping outlives its unit; at the end, with
//! the device back at 0, every byte of metadata is gone (the start state, store included).
//! The region straddles 64 GiB, so the run-time table chunk and unit table above it come
//! and go too. Runs in about 20 s (the 1 GiB case walks 4 GiB of descriptors per check).

use proptest::prelude::*;

use super::*;
use crate::mm::chunked;
use crate::mm::memmap::{UNIT_META_PAGES, UNIT_TABLE_BYTES};

const N0: NodeId = NodeId::ZERO;

/// 512 MiB of boot memory at 1 GiB, memmap on memory for what is added later.
fn on_mm() -> Mm<FakeStore> {
    let mut mm = boot_mm(&[region(GIB, 512 * MIB, 0)], &[resv(GIB, 2 * MIB)]);
    mm.set_memmap_on_memory(true);
    mm
}

#[test]
fn unit_carries_its_descriptors_through_its_life() {
    let mut mm = on_mm();
    let start = fingerprint(&mm);
    let live = mm.store.live_bases().count();
    let r = prange(8 * GIB, 2 * MIB);
    mm.add_sections(r, N0).unwrap();
    ok(&mm);
    // The unit's first four pages hold its descriptors: a live mapping at its base.
    assert!(mm.store.live_bases().any(|b| b == 8 * GIB));
    for i in 0..PAGES_PER_SUBSECTION {
        assert_eq!(
            mm.buddy.table.is_unit_meta(r.start.add(i)),
            i < UNIT_META_PAGES
        );
    }
    mm.online_range(r, ZoneType::Movable).unwrap();
    ok(&mm);
    let z = zone(&mm, 0, ZoneType::Movable);
    assert_eq!(z.present_pages, 512);
    assert_eq!(z.managed_pages, 512 - UNIT_META_PAGES);
    assert_eq!(z.free_pages, 512 - UNIT_META_PAGES);
    // Everything allocatable, and never a descriptor page.
    let mut got = Vec::new();
    while let Ok(p) = mm.alloc_pages(0, AllocFlags::MOVABLE) {
        if r.contains(p) {
            assert!(
                !mm.buddy.table.is_unit_meta(p),
                "descriptor page {p} handed out"
            );
            got.push(p);
        }
        if got.len() as u64 == 512 - UNIT_META_PAGES {
            break;
        }
    }
    assert_eq!(got.len() as u64, 512 - UNIT_META_PAGES);
    for p in got {
        mm.free_pages(p, 0).unwrap();
    }
    mm.isolate_range(r).unwrap();
    mm.offline_range(r).unwrap();
    ok(&mm);
    // Offline, the descriptors stay (the unit is still present).
    assert!(mm.store.live_bases().any(|b| b == 8 * GIB));
    mm.online_range(r, ZoneType::Movable).unwrap();
    mm.isolate_range(r).unwrap();
    mm.offline_range(r).unwrap();
    mm.remove_sections(r).unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
    assert_eq!(mm.store.live_bases().count(), live);
}

/// Removing a unit never reads its descriptors: they may already be gone (a device that
/// took the memory back reads as zeros, here as garbage), and the bookkeeping still comes
/// back exactly. A unit-mode section holds one node.
#[test]
fn remove_reads_no_descriptor() {
    let mut mm = on_mm();
    let start = fingerprint(&mm);
    let r = prange(8 * GIB, 8 * MIB);
    mm.add_online_range(r, N0, ZoneType::Movable).unwrap();
    let n1 = NodeId::new(1).unwrap();
    assert_eq!(
        mm.add_sections(prange(8 * GIB + 8 * MIB, 2 * MIB), n1),
        Err(Error::NodeConflict(r.start.section()))
    );
    mm.isolate_range(r).unwrap();
    mm.offline_range(r).unwrap();
    let mut garbage = Page::EMPTY;
    garbage.set_flags(PageFlags::BUDDY | PageFlags::MEMMAP);
    garbage.set_node(n1);
    mm.buddy.table.for_each_page_mut(r, |_, p| *p = garbage);
    mm.remove_sections(r).unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
}

#[test]
fn normal_spent_per_gib_is_table_chunk_and_unit_table_only() {
    for on in [true, false] {
        let mut mm = on_mm();
        mm.set_memmap_on_memory(on);
        let normal_free = |mm: &Mm<FakeStore>| zone(mm, 0, ZoneType::Normal).free_pages;
        let before = normal_free(&mm);
        let r = prange(8 * GIB, 4 * GIB);
        chunked::add_online(&mut mm, r, N0, ZoneType::Movable).unwrap();
        ok(&mm);
        let spent = (before - normal_free(&mm)) * 4096;
        let z = zone(&mm, 0, ZoneType::Movable);
        if on {
            // One run-time chunk would be 32 KiB; 8 GiB shares the boot chunk of 0..64 GiB.
            assert_eq!(spent, UNIT_TABLE_BYTES);
            assert_eq!(z.present_pages - z.managed_pages, 2048 * UNIT_META_PAGES);
        } else {
            assert_eq!(spent, 32 * MEM_MAP_BYTES);
            assert_eq!(z.present_pages, z.managed_pages);
        }
        chunked::isolate(&mut mm, r).unwrap();
        chunked::offline(&mut mm, r).unwrap();
        chunked::remove(&mut mm, r).unwrap();
        ok(&mm);
        assert_eq!(
            normal_free(&mm),
            before,
            "on={on}: Normal free after removal"
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Plug `len` units from unit `at` (those absent), as one chunked add.
    Plug {
        at: usize,
        len: usize,
    },
    /// Unplug `len` units from unit `at` (those plugged): isolate, move what is used,
    /// offline, remove; on a refusal put them back.
    Unplug {
        at: usize,
        len: usize,
    },
    Alloc {
        order: u32,
        movable: bool,
    },
    Free(usize),
}

fn op(units: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..units, 1..=4usize).prop_map(|(at, len)| Op::Plug { at, len }),
        2 => (0..units, 1..=4usize).prop_map(|(at, len)| Op::Unplug { at, len }),
        3 => (0..=8u32, prop::bool::weighted(0.8))
            .prop_map(|(order, movable)| Op::Alloc { order, movable }),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

/// A device region of `units` units of `unit` bytes, straddling 64 GiB (two table chunks).
struct Device {
    base: u64,
    unit: u64,
    plugged: Vec<bool>,
}

impl Device {
    fn range(&self, first: usize, n: usize) -> PfnRange {
        prange(self.base + first as u64 * self.unit, n as u64 * self.unit)
    }
    /// The runs of units in `at..at+len` whose state is `plugged`.
    fn runs(&self, at: usize, len: usize, plugged: bool) -> Vec<(usize, usize)> {
        let end = (at + len).min(self.plugged.len());
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for u in at..end {
            if self.plugged[u] == plugged {
                match runs.last_mut() {
                    Some((s, n)) if *s + *n == u => *n += 1,
                    _ => runs.push((u, 1)),
                }
            }
        }
        runs
    }
}

/// Moves every allocation of `held` inside `range` (isolated) to a new home outside it,
/// what the migration engine does for movable pages; false if one has nowhere to go.
fn move_out(mm: &mut Mm<FakeStore>, held: &mut [(Pfn, u32, bool)], range: PfnRange) -> bool {
    for h in held.iter_mut().filter(|h| range.contains(h.0)) {
        let Ok(new) = mm.alloc_pages(h.1, AllocFlags::MOVABLE) else {
            return false;
        };
        assert!(
            !range.contains(new),
            "destination {new} in the isolated range"
        );
        mm.free_pages(h.0, h.1).unwrap();
        h.0 = new;
    }
    true
}

fn unplug(mm: &mut Mm<FakeStore>, held: &mut [(Pfn, u32, bool)], r: PfnRange) -> bool {
    chunked::isolate(mm, r).unwrap();
    if !move_out(mm, held, r) || chunked::offline(mm, r).is_err() {
        chunked::unisolate(mm, r).unwrap();
        return false;
    }
    chunked::remove(mm, r).unwrap();
    true
}

/// The properties of the module doc after one step.
fn holds(mm: &Mm<FakeStore>, dev: &Device, held: &[(Pfn, u32, bool)]) -> Result<(), TestCaseError> {
    if let Err(e) = mm.check() {
        prop_assert!(false, "check: FAIL {}", e);
    }
    for &(p, o, _) in held {
        for i in 0..1u64 << o {
            prop_assert!(
                !mm.buddy.table.is_unit_meta(p.add(i)),
                "descriptor page handed out"
            );
        }
    }
    let dev_range = dev.range(0, dev.plugged.len());
    let live: Vec<u64> = mm.store.live_bases().collect();
    for &b in &live {
        let pfn = Pfn::down(PhysAddr(b));
        if dev_range.contains(pfn) {
            let u = ((b - dev.base) / dev.unit) as usize;
            prop_assert!(dev.plugged[u], "descriptors at {:#x} outlive their unit", b);
            prop_assert!(
                pfn.is_aligned(PAGES_PER_SUBSECTION),
                "descriptors not at a unit start"
            );
        }
    }
    for (u, _) in dev.plugged.iter().enumerate().filter(|(_, p)| **p) {
        for k in 0..dev.unit / (2 * MIB) {
            let b = dev.base + u as u64 * dev.unit + k * 2 * MIB;
            prop_assert!(
                live.binary_search(&b).is_ok(),
                "unit at {:#x} has no descriptors",
                b
            );
        }
    }
    Ok(())
}

fn run(block: u64, units: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let unit = block.max(2 * MIB);
    let mut dev = Device {
        base: 64 * GIB - (units as u64 / 2) * unit,
        unit,
        plugged: vec![false; units],
    };
    let mut mm = on_mm();
    let start = fingerprint(&mm);
    let start_live: Vec<u64> = mm.store.live_bases().collect();
    let mut held: Vec<(Pfn, u32, bool)> = Vec::new();
    for &op in ops {
        match op {
            Op::Plug { at, len } => {
                for (s, n) in dev.runs(at, len, false) {
                    let before = fingerprint(&mm);
                    match chunked::add_online(&mut mm, dev.range(s, n), N0, ZoneType::Movable) {
                        Ok(()) => dev.plugged[s..s + n].fill(true),
                        Err(Error::NoMemory) => prop_assert_eq!(fingerprint(&mm), before),
                        Err(e) => prop_assert!(false, "plug: {}", e),
                    }
                }
            }
            Op::Unplug { at, len } => {
                for (s, n) in dev.runs(at, len, true) {
                    if unplug(&mut mm, &mut held, dev.range(s, n)) {
                        dev.plugged[s..s + n].fill(false);
                    }
                }
            }
            Op::Alloc { order, movable } => {
                let flags = if movable {
                    AllocFlags::MOVABLE
                } else {
                    AllocFlags::UNMOVABLE
                };
                if let Ok(p) = mm.alloc_pages(order, flags) {
                    held.push((p, order, movable));
                }
            }
            Op::Free(i) if !held.is_empty() => {
                let (p, o, _) = held.swap_remove(i % held.len());
                mm.free_pages(p, o).unwrap();
            }
            Op::Free(_) => {}
        }
        holds(&mm, &dev, &held)?;
    }
    for (p, o, _) in held.drain(..) {
        mm.free_pages(p, o).unwrap();
    }
    for (s, n) in dev.runs(0, units, true) {
        prop_assert!(
            unplug(&mut mm, &mut held, dev.range(s, n)),
            "final unplug refused"
        );
        dev.plugged[s..s + n].fill(false);
    }
    holds(&mm, &dev, &held)?;
    prop_assert_eq!(
        fingerprint(&mm),
        start,
        "bookkeeping differs at device size 0"
    );
    prop_assert_eq!(mm.store.live_bases().collect::<Vec<_>>(), start_live);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 100, ..ProptestConfig::default() })]

    #[test]
    fn prop_memmap_1m_blocks(ops in proptest::collection::vec(op(96), 1..40)) {
        run(MIB, 96, &ops)?;
    }

    #[test]
    fn prop_memmap_2m_blocks(ops in proptest::collection::vec(op(96), 1..40)) {
        run(2 * MIB, 96, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 20, ..ProptestConfig::default() })]

    #[test]
    fn prop_memmap_128m_blocks(ops in proptest::collection::vec(op(8), 1..24)) {
        run(128 * MIB, 8, &ops)?;
    }

    #[test]
    fn prop_memmap_1g_blocks(ops in proptest::collection::vec(op(4), 1..16)) {
        run(GIB, 4, &ops)?;
    }
}

/// `alloc_page_in` (what `memtest sample` uses): pages only from the range asked for,
/// never a descriptor page, none from an isolated pageblock, none of the Movable zone for
/// an unmovable request; a page inside a larger free block splits it; `check` holds
/// throughout and freeing gives everything back.
#[test]
fn alloc_page_in_takes_only_free_pages_of_the_range() {
    let mut mm = on_mm();
    let r = prange(8 * GIB, 4 * MIB);
    chunked::add_online(&mut mm, r, N0, ZoneType::Movable).unwrap();
    ok(&mm);
    let free0 = zone(&mm, 0, ZoneType::Movable).free_pages;
    assert_eq!(
        mm.alloc_page_in(r, AllocFlags::UNMOVABLE),
        Err(AllocError::NoMemory),
        "an unmovable request got a Movable page"
    );
    // The second pageblock: its unit's descriptors are at its start, never handed out.
    let pb = prange(8 * GIB + 2 * MIB, 2 * MIB);
    let mut got = Vec::new();
    while let Ok(p) = mm.alloc_page_in(pb, AllocFlags::MOVABLE) {
        assert!(pb.contains(p), "page {p} outside the range");
        assert!(
            !mm.buddy.table.is_unit_meta(p),
            "descriptor page {p} handed out"
        );
        got.push(p);
        if got.len() == 1 {
            ok(&mm);
        }
    }
    ok(&mm);
    assert_eq!(got.len() as u64, 512 - UNIT_META_PAGES);
    assert_eq!(
        zone(&mm, 0, ZoneType::Movable).free_pages,
        free0 - got.len() as u64
    );
    for p in got {
        mm.free_pages(p, 0).unwrap();
    }
    ok(&mm);
    assert_eq!(zone(&mm, 0, ZoneType::Movable).free_pages, free0);
    // Isolated: nothing.
    mm.isolate_range(pb).unwrap();
    assert_eq!(
        mm.alloc_page_in(pb, AllocFlags::MOVABLE),
        Err(AllocError::NoMemory)
    );
    mm.unisolate_range(pb).unwrap();
    ok(&mm);
}

/// A page in the middle of a max-order free block of boot memory: the block is split
/// around it and the rest stays free.
#[test]
fn alloc_page_in_splits_a_larger_block() {
    let mut mm = on_mm();
    let free0 = mm.total_stats().free_pages;
    let want = prange(GIB + 256 * MIB + 3 * MIB + 5 * 4096, 4096);
    let p = mm.alloc_page_in(want, AllocFlags::MOVABLE).unwrap();
    assert_eq!(p, want.start);
    ok(&mm);
    assert_eq!(mm.total_stats().free_pages, free0 - 1);
    mm.free_pages(p, 0).unwrap();
    ok(&mm);
    assert_eq!(mm.total_stats().free_pages, free0);
}
