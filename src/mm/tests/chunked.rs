//! The run-time section calls in bounded holds ([`chunked`]): between any two holds the
//! checker accepts the model and allocations never get a page of the part of the range
//! not yet released; each hold does at most one chunk; the result is the one of the
//! single-hold calls; failures leave nothing behind.

use super::*;
use crate::mm::chunked::{self, CHUNK_PAGES};

/// What the probe allocates: movable data (it prefers the Movable zone, so it would take pages
/// of a range that was released too early) of the kernel's class, so that the reserve and the
/// floor, which a workload leaves free, do not keep it from Normal once that is nearly full.
const PROBE: AllocFlags = AllocFlags {
    class: AllocClass::Kernel,
    ..AllocFlags::MOVABLE
};

/// The `Mm` lock of these tests: after every hold it runs the checker, and (with `probe`)
/// allocates a movable page, as another CPU could between two holds.
struct Between<'a> {
    mm: &'a mut Mm<FakeStore>,
    holds: usize,
    /// Allocate between holds and keep the pages in `got`.
    probe: bool,
    got: Vec<Pfn>,
    /// Online pages of this range after each hold (to bound what one hold does).
    watch: Option<PfnRange>,
    online_after: Vec<u64>,
}

impl<'a> Between<'a> {
    fn new(mm: &'a mut Mm<FakeStore>) -> Self {
        Between {
            mm,
            holds: 0,
            probe: false,
            got: Vec::new(),
            watch: None,
            online_after: Vec::new(),
        }
    }
}

impl MmLock for Between<'_> {
    type Store = FakeStore;
    fn with_mm<T>(&mut self, f: impl FnOnce(&mut Mm<FakeStore>) -> T) -> T {
        let r = f(self.mm);
        self.holds += 1;
        if let Err(e) = self.mm.check() {
            panic!("check between holds (after hold {}): {e}", self.holds);
        }
        if let Some(range) = self.watch {
            let online = chunks_online(self.mm, range);
            self.online_after.push(online);
        }
        if self.probe {
            if let Ok(p) = self.mm.alloc_pages(0, PROBE) {
                self.got.push(p);
            }
        }
        r
    }
}

/// Online pages of `range`.
fn chunks_online(mm: &Mm<FakeStore>, range: PfnRange) -> u64 {
    let mut n = 0;
    let mut pb = range.start;
    while pb < range.end_exclusive {
        if mm.buddy.table.pfn_online(pb) {
            n += PAGES_PER_PAGEBLOCK;
        }
        pb = pb.add(PAGES_PER_PAGEBLOCK);
    }
    n
}

/// Whether `pfn` lies in an online pageblock of an allocatable (not isolated) type.
fn released(mm: &Mm<FakeStore>, pfn: Pfn) -> bool {
    mm.buddy.table.pfn_online(pfn) && mm.buddy.table.migrate_type(pfn) != MigrateType::Isolate
}

/// 64 MiB of boot memory at 1 GiB: hot-added Movable memory is where movable
/// allocations go first.
fn small() -> Mm<FakeStore> {
    boot_mm(&[region(GIB, 64 * MIB, 0)], &[])
}

#[test]
fn chunks_split_at_chunk_and_section_boundaries() {
    let r = prange(2 * GIB + 6 * MIB, 40 * MIB);
    let c: Vec<PfnRange> = chunked::chunks(r).collect();
    assert_eq!(
        c,
        [
            prange(2 * GIB + 6 * MIB, 10 * MIB),
            prange(2 * GIB + 16 * MIB, 16 * MIB),
            prange(2 * GIB + 32 * MIB, 14 * MIB),
        ]
    );
    assert_eq!(chunked::chunks(prange(2 * GIB, 4 * GIB)).count(), 256);
    for c in chunked::chunks(prange(2 * GIB + 2 * MIB, GIB)) {
        assert!(c.nr_pages() <= CHUNK_PAGES);
        assert_eq!(c.start.section(), Pfn(c.end_exclusive.0 - 1).section());
    }
}

/// While 1 GiB is added chunk by chunk, the checker holds after every hold, no hold puts
/// more than one chunk online, and a page allocated between holds is never in a part of
/// the range that is not yet online and released (allocations do land in released
/// chunks: the probe sees the range fill up).
#[test]
fn add_online_between_chunks_is_consistent_and_never_hands_out_the_rest() {
    let mut mm = small();
    let range = prange(2 * GIB + 2 * MIB, GIB);
    let mut lock = Between::new(&mut mm);
    lock.probe = true;
    lock.watch = Some(range);
    chunked::add_online(&mut lock, range, NodeId::ZERO, ZoneType::Movable).unwrap();
    let (holds, got, online_after) = (lock.holds, lock.got, lock.online_after);
    let chunks = chunked::chunks(range).count();
    assert!(holds > 2 * chunks, "{holds} holds for {chunks} chunks");
    let mut last = 0;
    for &n in &online_after {
        assert!(
            n - last <= CHUNK_PAGES,
            "one hold onlined {} pages",
            n - last
        );
        last = n;
    }
    assert_eq!(last, range.nr_pages());
    // A probe that got a page of the range got it once it was released: allocations
    // between the holds of the add phase come from boot memory.
    let in_range: Vec<Pfn> = got.iter().copied().filter(|p| range.contains(*p)).collect();
    assert!(
        !in_range.is_empty(),
        "the probe never reached the new memory"
    );
    assert!(
        got.len() > in_range.len(),
        "the probe never ran during the add"
    );
    let first_in = got.iter().position(|p| range.contains(*p)).unwrap();
    assert!(got[..first_in].iter().all(|p| !range.contains(*p)));
    for &p in &in_range {
        assert!(released(&mm, p));
    }
    for p in got {
        mm.free_pages(p, 0).unwrap();
    }
    ok(&mm);
}

/// Checked at the moment of each allocation between holds: a page of the range is handed
/// out only once the whole range is online (until then a failure must be able to take it
/// all back), and then only from released pageblocks, with a complete descriptor.
#[test]
fn probe_allocations_between_holds_land_only_in_released_memory() {
    struct Strict<'a> {
        mm: &'a mut Mm<FakeStore>,
        range: PfnRange,
        got: Vec<Pfn>,
    }
    impl MmLock for Strict<'_> {
        type Store = FakeStore;
        fn with_mm<T>(&mut self, f: impl FnOnce(&mut Mm<FakeStore>) -> T) -> T {
            let r = f(self.mm);
            for _ in 0..64 {
                let Ok(p) = self.mm.alloc_pages(0, AllocFlags::MOVABLE) else {
                    break;
                };
                if self.range.contains(p) {
                    assert_eq!(
                        chunks_online(self.mm, self.range),
                        self.range.nr_pages(),
                        "{p:?} handed out while part of the range is not added"
                    );
                    assert!(released(self.mm, p), "{p:?} handed out before release");
                    // Its descriptor is a complete online page of the zone.
                    let pg = self.mm.pfn_to_page(p).unwrap();
                    assert_eq!(pg.zone(), ZoneType::Movable);
                }
                self.got.push(p);
            }
            r
        }
    }
    let mut mm = small();
    let range = prange(2 * GIB, 256 * MIB);
    let mut lock = Strict {
        mm: &mut mm,
        range,
        got: Vec::new(),
    };
    chunked::add_online(&mut lock, range, NodeId::ZERO, ZoneType::Movable).unwrap();
    let got = lock.got;
    assert!(got.iter().any(|p| range.contains(*p)));
    for p in got {
        mm.free_pages(p, 0).unwrap();
    }
    ok(&mm);
}

/// The chunked calls end where the single-hold calls end, through the whole cycle (add,
/// isolate, offline, re-online, isolate, offline, remove), with the checker holding
/// between every two holds; the cycle gives back every page and mem_map.
#[test]
fn chunked_cycle_matches_the_single_hold_calls() {
    let range = prange(2 * GIB + 6 * MIB, 300 * MIB);
    let (mut a, mut b) = (small(), small());
    let start = fingerprint(&a);
    let z = ZoneType::Movable;
    chunked::add_online(&mut Between::new(&mut a), range, NodeId::ZERO, z).unwrap();
    b.add_online_range(range, NodeId::ZERO, z).unwrap();
    assert_eq!(fingerprint(&a), fingerprint(&b));
    chunked::isolate(&mut Between::new(&mut a), range).unwrap();
    b.isolate_range(range).unwrap();
    assert_eq!(fingerprint(&a), fingerprint(&b));
    chunked::offline(&mut Between::new(&mut a), range).unwrap();
    b.offline_range(range).unwrap();
    assert_eq!(fingerprint(&a), fingerprint(&b));
    chunked::online(&mut Between::new(&mut a), range, z).unwrap();
    b.online_range(range, z).unwrap();
    assert_eq!(fingerprint(&a), fingerprint(&b));
    chunked::isolate(&mut Between::new(&mut a), range).unwrap();
    chunked::unisolate(&mut Between::new(&mut a), range).unwrap();
    chunked::isolate(&mut Between::new(&mut a), range).unwrap();
    chunked::offline(&mut Between::new(&mut a), range).unwrap();
    chunked::remove(&mut Between::new(&mut a), range).unwrap();
    ok(&a);
    assert_eq!(fingerprint(&a), start);
    assert_eq!(
        a.store.maps - a.store.releases,
        b.store.maps - b.store.releases - 3
    );
}

/// No memory for the second section's mem_map: the first section, already added and online
/// (isolated), is taken back; nothing of the range stays.
#[test]
fn add_online_without_memory_for_a_later_mem_map_takes_everything_back() {
    let mut mm = small();
    // Leave exactly one free block big enough for a mem_map.
    let mut held = Vec::new();
    while let Ok(p) = mm.alloc_pages(8, AllocFlags::UNMOVABLE) {
        held.push(p);
    }
    let spare = held.pop().unwrap();
    mm.free_pages(spare, 8).unwrap();
    let before = fingerprint(&mm);
    let range = prange(2 * GIB, 256 * MIB);
    let mut lock = Between::new(&mut mm);
    // Other CPUs allocate between the holds: they must not get the pages to take back.
    lock.probe = true;
    assert_eq!(
        chunked::add_online(&mut lock, range, NodeId::ZERO, ZoneType::Movable),
        Err(Error::NoMemory)
    );
    assert!(lock.holds > chunked::chunks(range).count() / 2);
    let got = core::mem::take(&mut lock.got);
    assert!(!got.is_empty());
    for p in got {
        assert!(!range.contains(p));
        mm.free_pages(p, 0).unwrap();
    }
    ok(&mm);
    assert_eq!(fingerprint(&mm), before);
    assert!(!mm.pfn_valid(range.start));
    for p in held {
        mm.free_pages(p, 8).unwrap();
    }
    ok(&mm);
}

/// A used page in the last chunk: the chunked offline refuses before it changes anything.
#[test]
fn offline_with_a_busy_page_in_the_last_chunk_changes_nothing() {
    let mut mm = small();
    let range = prange(2 * GIB, 64 * MIB);
    chunked::add_online(
        &mut Between::new(&mut mm),
        range,
        NodeId::ZERO,
        ZoneType::Movable,
    )
    .unwrap();
    // A page near the end of the range stays allocated.
    let mut taken = Vec::new();
    let busy = loop {
        let p = mm.alloc_pages(0, AllocFlags::MOVABLE).unwrap();
        taken.push(p);
        if p.0 >= range.end_exclusive.0 - CHUNK_PAGES && range.contains(p) {
            break p;
        }
    };
    for &p in &taken {
        if p != busy {
            mm.free_pages(p, 0).unwrap();
        }
    }
    chunked::isolate(&mut Between::new(&mut mm), range).unwrap();
    let before = fingerprint(&mm);
    assert_eq!(
        chunked::offline(&mut Between::new(&mut mm), range),
        Err(Error::Busy(busy))
    );
    assert_eq!(fingerprint(&mm), before);
    mm.free_pages(busy, 0).unwrap();
    chunked::offline(&mut Between::new(&mut mm), range).unwrap();
    chunked::remove(&mut Between::new(&mut mm), range).unwrap();
    ok(&mm);
}

/// The checks come first: a range whose last part is already present, or would mix zones,
/// is refused before any hold changes anything.
#[test]
fn chunked_calls_check_the_whole_range_first() {
    let mut mm = small();
    let tail = prange(2 * GIB + 200 * MIB, 2 * MIB);
    mm.add_sections(tail, NodeId::ZERO).unwrap();
    let before = fingerprint(&mm);
    let range = prange(2 * GIB, 202 * MIB);
    let mut lock = Between::new(&mut mm);
    assert_eq!(
        chunked::add_online(&mut lock, range, NodeId::ZERO, ZoneType::Movable),
        Err(Error::AlreadyPresent(tail.start))
    );
    assert_eq!(lock.holds, 1);
    assert_eq!(fingerprint(&mm), before);
    // Boot memory is Normal: onlining a Movable range next to it in its section is refused.
    let next = prange(GIB + 64 * MIB, 2 * MIB);
    assert_eq!(
        chunked::add_online(
            &mut Between::new(&mut mm),
            next,
            NodeId::ZERO,
            ZoneType::Movable
        ),
        Err(Error::ZoneConflict(next.start.section()))
    );
    assert_eq!(
        chunked::remove(&mut Between::new(&mut mm), range),
        Err(Error::NotPresent(range.start))
    );
    assert_eq!(fingerprint(&mm), before);
}
