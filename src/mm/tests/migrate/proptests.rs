//! The property test of migration: random sequences over a small world of pages mapped
//! into a few address spaces, every invariant checked after each step; plus a fixed-seed
//! check that the sequences reach every outcome.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

/// A page as the test sees it (its pfn changes when it migrates).
#[derive(Clone, Debug)]
struct LPage {
    pfn: Pfn,
    tag: u64,
    maps: Vec<(AsId, u64)>,
    pins: u32,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc,
    Map(usize, AsId, bool),
    Unmap(usize, usize),
    Write(usize),
    Pin(usize),
    Unpin(usize),
    Free(usize),
    Isolate(usize),
    Unisolate(usize),
    /// Migrate fixed range `r`; then offline and online it again if that's possible.
    Migrate(usize),
    /// Isolate the pageblock of page `i`, migrate it (with a pin racing in when `true`),
    /// un-isolate.
    MigrateOf(usize, bool),
}

const RANGES: [(u64, u64); 4] = [(0, 2), (2, 4), (0, 8), (8, 32)];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Alloc),
        4 => (any::<usize>(), 1..4u32, any::<bool>()).prop_map(|(i, a, w)| Op::Map(i, a, w)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Op::Unmap(i, j)),
        2 => any::<usize>().prop_map(Op::Write),
        1 => any::<usize>().prop_map(Op::Pin),
        1 => any::<usize>().prop_map(Op::Unpin),
        1 => any::<usize>().prop_map(Op::Free),
        1 => (0..RANGES.len()).prop_map(Op::Isolate),
        1 => (0..RANGES.len()).prop_map(Op::Unisolate),
        2 => (0..RANGES.len()).prop_map(Op::Migrate),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, r)| Op::MigrateOf(i, r)),
    ]
}

struct World {
    mm: SharedMm,
    rmap: Rmap,
    pt: Fake,
    pages: Vec<LPage>,
    next_va: u64,
    next_tag: u64,
    /// Pages moved, pinned failures, races lost by the pin, ranges taken offline.
    seen: [u64; 4],
}

impl World {
    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Runs the engine on `range` and checks what it reports against what moved. `None`
    /// when the range is not entirely isolated (the engine refuses it).
    fn migrate(&mut self, range: PfnRange) -> Result<Option<MigrateReport>, TestCaseError> {
        let r = match migrate_counted(&self.mm, &mut self.rmap, &mut self.pt, range) {
            Ok(r) => r,
            Err(Error::NotIsolated(_)) => return Ok(None),
            Err(e) => return Err(TestCaseError::fail(format!("migrate {range:?}: {e}"))),
        };
        prop_assert_eq!(self.mm.borrow().used_pages_in(range), r.failed_pages());
        prop_assert_eq!(r.bytes_copied, r.moved_pages * PAGE_SIZE);
        let mut moved = 0;
        for p in &mut self.pages {
            let Some(&(a, va)) = p.maps.first() else {
                continue;
            };
            let Pte::Present { pfn, .. } = self.pt.entry(a, va) else {
                return Err(TestCaseError::fail("mapping lost"));
            };
            if pfn != p.pfn {
                prop_assert!(p.pins == 0, "pinned page {:?} moved", p.pfn);
                prop_assert!(range.contains(p.pfn) && !range.contains(pfn));
                moved += 1;
                p.pfn = pfn;
            }
        }
        prop_assert_eq!(moved, r.moved_pages);
        self.seen[0] += r.moved_pages;
        self.seen[1] += r.pinned_pages;
        Ok(Some(r))
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n = self.pages.len();
        match op {
            Op::Alloc => {
                let got = self.mm.borrow_mut().alloc_pages(0, AllocFlags::MOVABLE);
                if let Ok(pfn) = got {
                    let tag = self.tag();
                    self.pt.mem.insert(pfn.0, tag);
                    self.pages.push(LPage {
                        pfn,
                        tag,
                        maps: Vec::new(),
                        pins: 0,
                    });
                }
            }
            Op::Map(i, a, w) if n > 0 => {
                let va = self.next_va;
                self.next_va += PAGE_SIZE;
                let p = &mut self.pages[i % n];
                map(&self.mm, &mut self.rmap, &mut self.pt, p.pfn, a, va, w);
                p.maps.push((a, va));
                prop_assert_eq!(self.pt.read(a, va), p.tag);
            }
            Op::Unmap(i, j) if n > 0 && !self.pages[i % n].maps.is_empty() => {
                let p = &mut self.pages[i % n];
                let (a, va) = p.maps.remove(j % p.maps.len());
                let freed = unmap(&self.mm, &mut self.rmap, &mut self.pt, a, va);
                prop_assert!(!freed);
            }
            Op::Write(i) if n > 0 && !self.pages[i % n].maps.is_empty() => {
                let tag = self.tag();
                let p = &mut self.pages[i % n];
                let (a, va) = p.maps[tag as usize % p.maps.len()];
                self.pt.write(a, va, tag);
                p.tag = tag;
            }
            Op::Pin(i) if n > 0 => {
                let p = &mut self.pages[i % n];
                self.mm.borrow_mut().get_page(p.pfn).unwrap();
                p.pins += 1;
            }
            Op::Unpin(i) if n > 0 && self.pages[i % n].pins > 0 => {
                let p = &mut self.pages[i % n];
                prop_assert_eq!(self.mm.borrow_mut().put_page(p.pfn), Ok(false));
                p.pins -= 1;
            }
            Op::Free(i) if n > 0 && self.pages[i % n].pins == 0 => {
                let p = self.pages.swap_remove(i % n);
                for (a, va) in p.maps {
                    prop_assert!(!unmap(&self.mm, &mut self.rmap, &mut self.pt, a, va));
                }
                prop_assert_eq!(self.mm.borrow_mut().put_page(p.pfn), Ok(true));
            }
            Op::Isolate(r) => {
                let (lo, hi) = RANGES[r];
                let _ = self.mm.borrow_mut().isolate_range(movable(lo, hi));
            }
            Op::Unisolate(r) => {
                let (lo, hi) = RANGES[r];
                let _ = self.mm.borrow_mut().unisolate_range(movable(lo, hi));
            }
            Op::Migrate(r) => {
                let (lo, hi) = RANGES[r];
                let range = movable(lo, hi);
                if let Some(r) = self.migrate(range)? {
                    if r.is_complete() {
                        // Everything left: the range goes offline and comes back.
                        let mut m = self.mm.borrow_mut();
                        m.offline_range(range)
                            .map_err(|e| TestCaseError::fail(format!("offline: {e}")))?;
                        m.check()
                            .map_err(|e| TestCaseError::fail(e.reason.to_string()))?;
                        m.online_range(range, ZoneType::Movable).unwrap();
                        self.seen[3] += 1;
                    }
                }
            }
            Op::MigrateOf(i, race) if n > 0 => {
                let p = &self.pages[i % n];
                let block = pageblock_of(p.pfn);
                let isolated_here = self.mm.borrow_mut().isolate_range(block).is_ok();
                let racing = race && !p.maps.is_empty() && p.pins == 0;
                if racing {
                    self.pt.pin_on_flush = Some(p.pfn);
                }
                let before = p.pfn;
                let r = self.migrate(block)?.expect("isolated");
                if racing {
                    // The pin came in after the pin check: the page stayed.
                    let p = &mut self.pages[i % n];
                    prop_assert_eq!(p.pfn, before);
                    prop_assert!(self.pt.pin_on_flush.is_none());
                    prop_assert!(r.pinned_pages >= 1);
                    p.pins += 1;
                    self.seen[2] += 1;
                }
                if isolated_here {
                    self.mm.borrow_mut().unisolate_range(block).unwrap();
                }
            }
            _ => {}
        }
        self.verify()
    }

    /// Every invariant the engine promises.
    fn verify(&mut self) -> Result<(), TestCaseError> {
        let fail = |e: CheckError| TestCaseError::fail(e.reason.to_string());
        {
            let m = self.mm.borrow();
            m.check().map_err(fail)?;
            self.rmap.check(&m).map_err(fail)?;
            // No page lost: free + ours == managed.
            let t = m.total_stats();
            prop_assert_eq!(t.free_pages + self.pages.len() as u64, t.managed_pages);
            let mut seen = HashSet::new();
            for p in &self.pages {
                prop_assert!(seen.insert(p.pfn), "two pages at {:?}", p.pfn);
                prop_assert_eq!(m.page_refcount(p.pfn), Ok(1 + p.maps.len() as u32 + p.pins));
                prop_assert_eq!(m.page_migrating(p.pfn), Ok(false));
                let mut want: Vec<_> = p.maps.clone();
                let mut got: Vec<_> = self
                    .rmap
                    .mappings(p.pfn)
                    .iter()
                    .map(|x| (x.as_id, x.va))
                    .collect();
                want.sort_unstable();
                got.sort_unstable();
                prop_assert_eq!(want, got);
            }
            // Every entry maps an allocated page and is present; the TLB agrees.
            for (k, pte) in &self.pt.ptes {
                let Pte::Present { pfn, .. } = *pte else {
                    return Err(TestCaseError::fail(format!("{k:?} left as {pte:?}")));
                };
                prop_assert!(m.page_refcount(pfn).is_ok(), "{:?} maps freed {:?}", k, pfn);
            }
            for (k, cached) in &self.pt.tlb {
                let pte = self.pt.entry(k.0, k.1);
                prop_assert!(
                    matches!(pte, Pte::Present { pfn, .. } if pfn == *cached),
                    "stale TLB entry {:?} -> {:?}, entry {:?}",
                    k,
                    cached,
                    pte
                );
            }
            prop_assert_eq!(self.rmap.nr_mappings() as usize, self.pt.ptes.len());
        }
        // Contents survive, read through every mapping.
        for idx in 0..self.pages.len() {
            let p = self.pages[idx].clone();
            for &(a, va) in &p.maps {
                prop_assert_eq!(self.pt.read(a, va), p.tag);
            }
            prop_assert_eq!(self.pt.mem.get(&p.pfn.0).copied(), Some(p.tag));
        }
        Ok(())
    }
}

fn run_ops(ops: &[Op]) -> Result<[u64; 4], TestCaseError> {
    let (mm, rmap, pt) = setup();
    let mut w = World {
        mm,
        rmap,
        pt,
        pages: Vec::new(),
        next_va: 0x10_0000,
        next_tag: 0,
        seen: [0; 4],
    };
    for &op in ops {
        w.step(op)?;
    }
    Ok(w.seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn prop_map_pin_migrate_sequences(ops in proptest::collection::vec(op(), 1..120)) {
        run_ops(&ops)?;
    }
}

/// The random sequences do reach every outcome: pages move, pins stop them, a pin racing
/// with the unmap wins, emptied ranges go offline.
#[test]
fn sequences_reach_every_outcome() {
    let seen: [u64; 4] = counts_over_fixed_sequences(7, 16, 120, op(), |ops| run_ops(ops).unwrap());
    assert!(seen.iter().all(|&n| n > 0), "outcomes seen: {seen:?}");
}
