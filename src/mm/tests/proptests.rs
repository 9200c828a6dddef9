//! Property tests: random allocation and free sequences (everything coalesces back) and
//! random hotplug sequences over two nodes with holes, the invariant checker after every
//! step, a failed call changing nothing; plus a fixed-seed check that the sequences reach
//! every kind of call.

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum AllocOp {
    Alloc {
        order: u32,
        movable: bool,
        node: u32,
    },
    Free(usize),
}

fn alloc_op() -> impl Strategy<Value = AllocOp> {
    prop_oneof![
        3 => (prop_oneof![4 => 0..=3u32, 1 => 4..=10u32], any::<bool>(), 0..2u32)
            .prop_map(|(order, movable, node)| AllocOp::Alloc { order, movable, node }),
        2 => any::<usize>().prop_map(AllocOp::Free),
    ]
}

/// A node boundary `split` bytes into a region: on a 2 MiB boundary or at an odd page
/// (never on a pageblock boundary), strictly inside `lo..hi` MiB.
fn node_split(lo: u64, hi: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        (lo / 2 + 1..hi / 2).prop_map(|s| s * 2 * MIB),
        (lo * 256 + 1..hi * 256).prop_map(|p| if p % 512 == 0 { p + 1 } else { p } * 4096),
    ]
}

/// Two nodes with holes, the first region split between node 0 (below `split` bytes)
/// and node 1 (a node boundary inside section 8 or 9, maybe inside a pageblock), plus
/// hot-added Movable memory on node 0.
fn mixed_layout(split: u64) -> Mm<FakeStore> {
    let regions = [
        region(GIB, split, 0),
        region(GIB + split, 160 * MIB - split, 1),
        region(512 * GIB + 6 * MIB, 60 * MIB, 1),
    ];
    let mut mm = boot_mm(&regions, &[resv(GIB + 8 * MIB, 2 * MIB)]);
    let r = prange(6 * GIB + 64 * MIB, 96 * MIB);
    mm.add_sections(r, NodeId::ZERO).unwrap();
    mm.online_range(r, ZoneType::Movable).unwrap();
    mm
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn prop_alloc_free_coalesces(
        split in node_split(0, 160),
        ops in proptest::collection::vec(alloc_op(), 1..120),
    ) {
        let mut mm = mixed_layout(split);
        let node1 = PfnRange::new(Pfn::down(PhysAddr(GIB + split)), Pfn::down(PhysAddr(GIB + 160 * MIB)));
        prop_assert_eq!(zone(&mm, 0, ZoneType::Normal).present_pages, split / 4096);
        prop_assert_eq!(zone(&mm, 1, ZoneType::Normal).present_pages, node1.nr_pages() + 60 * MIB / 4096);
        let start = fingerprint(&mm);
        let movable = prange(6 * GIB + 64 * MIB, 96 * MIB);
        let mut held: Vec<(Pfn, u32)> = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            match *op {
                AllocOp::Alloc { order, movable: mv, node } => {
                    let flags = AllocFlags { movable: mv, node: NodeId::new(node), class: AllocClass::Kernel };
                    if let Ok(p) = mm.alloc_pages(order, flags) {
                        prop_assert!(mv || !movable.contains(p), "unmovable in Movable");
                        prop_assert!(p.is_aligned(1 << order));
                        // A block never spans two nodes.
                        let n = mm.pfn_to_page(p).unwrap().node();
                        prop_assert!((1..1u64 << order).all(|i| mm.pfn_to_page(p.add(i)).unwrap().node() == n));
                        prop_assert_eq!(n.index() == 1, node1.contains(p) || p.addr().0 >= 512 * GIB);
                        prop_assert!(held.iter().all(|&(q, o)| p.0 + (1 << order) <= q.0 || q.0 + (1 << o) <= p.0));
                        held.push((p, order));
                    }
                }
                AllocOp::Free(i) if !held.is_empty() => {
                    let (p, o) = held.swap_remove(i % held.len());
                    mm.free_pages(p, o).unwrap();
                }
                AllocOp::Free(_) => {}
            }
            if step % 4 == 0 {
                if let Err(e) = mm.check() { prop_assert!(false, "step {step} {op:?}: {e}"); }
            }
        }
        for (p, o) in held.drain(..) {
            mm.free_pages(p, o).unwrap();
        }
        if let Err(e) = mm.check() { prop_assert!(false, "end: {e}"); }
        prop_assert_eq!(fingerprint(&mm), start);
    }
}

#[derive(Clone, Copy, Debug)]
enum HpOp {
    /// Add on node 0 (`false`) or node 1 (`true`).
    Add(HpRange, bool),
    /// `add_online_range` into Movable on node 0 / 1 (counted with `Add`).
    AddOnline(HpRange, bool),
    Online(HpRange, bool),
    Isolate(HpRange),
    Unisolate(HpRange),
    Offline(HpRange),
    Remove(HpRange),
    Alloc(u32, bool),
    Free(usize),
    /// Isolate, then offline (`0`: un-isolate if that fails, `2`: stay isolated) or
    /// un-isolate (`1`); expanded into those calls before running.
    IsolateThen(HpRange, u8),
}

/// A range of `n` subsections starting at subsection `s` of window `w`.
#[derive(Clone, Copy, Debug)]
struct HpRange {
    w: usize,
    s: u64,
    n: u64,
}

/// Windows for run-time calls: (base, subsections). Window 0 is empty address space at
/// 4 GiB (three sections); window 1 covers the two sections at 512 GiB, where boot
/// memory fills subsections 16..48 of the first (a partially present boot section),
/// node 0 below a split point and node 1 above it (see [`hp_boot`]).
const WINDOWS: [(u64, u64); 2] = [(4 * GIB, 192), (512 * GIB, 128)];
const BOOT_SUBS: core::ops::Range<u64> = 16..48;

impl HpRange {
    fn pfns(self) -> PfnRange {
        prange(WINDOWS[self.w].0 + self.s * 2 * MIB, self.n * 2 * MIB)
    }
}

/// Ranges on a grid of a few sizes so that later calls hit earlier ranges often; sizes
/// 3 and 96 straddle section boundaries.
fn hp_range() -> impl Strategy<Value = HpRange> {
    let size = prop_oneof![2 => Just(1u64), 2 => Just(3u64), 3 => Just(16u64), 3 => Just(64u64), 1 => Just(96u64)];
    (
        prop_oneof![3 => Just(0usize), 2 => Just(1usize)],
        size,
        0..192u64,
    )
        .prop_map(|(w, n, i)| {
            let subs = WINDOWS[w].1;
            let s = (i % (subs / n)) * n + u64::from(n == 3);
            HpRange {
                w,
                s: s.min(subs - n),
                n,
            }
        })
}

fn hp_op() -> impl Strategy<Value = HpOp> {
    prop_oneof![
        3 => (hp_range(), prop::bool::weighted(0.3)).prop_map(|(r, n)| HpOp::Add(r, n)),
        2 => (hp_range(), prop::bool::weighted(0.3)).prop_map(|(r, n)| HpOp::AddOnline(r, n)),
        3 => (hp_range(), prop::bool::weighted(0.8)).prop_map(|(r, m)| HpOp::Online(r, m)),
        2 => hp_range().prop_map(HpOp::Isolate),
        1 => hp_range().prop_map(HpOp::Unisolate),
        2 => hp_range().prop_map(HpOp::Offline),
        2 => hp_range().prop_map(HpOp::Remove),
        3 => (0..=10u32, any::<bool>()).prop_map(|(o, m)| HpOp::Alloc(o, m)),
        2 => any::<usize>().prop_map(HpOp::Free),
        4 => (hp_range(), 0..3u8).prop_map(|(r, k)| HpOp::IsolateThen(r, k)),
    ]
}

fn expand(ops: &[HpOp]) -> Vec<HpOp> {
    let mut out = Vec::new();
    for &op in ops {
        match op {
            HpOp::IsolateThen(r, 0) => {
                out.extend([HpOp::Isolate(r), HpOp::Offline(r), HpOp::Unisolate(r)])
            }
            HpOp::IsolateThen(r, 1) => out.extend([HpOp::Isolate(r), HpOp::Unisolate(r)]),
            HpOp::IsolateThen(r, _) => out.extend([HpOp::Isolate(r), HpOp::Offline(r)]),
            op => out.push(op),
        }
    }
    out
}

/// Boot memory at 1 GiB (node 0) and in window 1: node 0 from 32 MiB to `split` bytes,
/// node 1 from there to 96 MiB (`split` strictly inside, at 2 MiB or an odd page).
fn hp_boot(split: u64) -> Mm<FakeStore> {
    let regions = [
        region(GIB, 128 * MIB, 0),
        region(512 * GIB + 32 * MIB, split - 32 * MIB, 0),
        region(512 * GIB + split, 96 * MIB - split, 1),
    ];
    boot_mm(&regions, &[resv(GIB, 2 * MIB)])
}

/// Runs `ops` with the checker after every step and checks that a failed call changes
/// nothing; then returns everything and checks that the start state comes back.
/// Returns how often each kind of call succeeded.
///
/// A subsection that `split` cuts in two can't be rebuilt once removed (run-time calls
/// give a whole subsection one node), so `Remove` ranges covering it are skipped.
fn run_hotplug(split: u64, ops: &[HpOp]) -> Result<[u32; 8], TestCaseError> {
    let mut mm = hp_boot(split);
    let start = fingerprint(&mm);
    let split_pfn = Pfn::down(PhysAddr(WINDOWS[1].0 + split));
    let split_sub = (!split_pfn.is_aligned(PAGES_PER_SUBSECTION)).then_some(split_pfn);
    // Node of boot subsection `s` of window 1 (whole subsections only).
    let boot_node = |s: u64| NodeId::new(u32::from(s * 2 * MIB >= split)).unwrap();
    let mut done = [0u32; 8];
    let mut held: Vec<(Pfn, u32)> = Vec::new();
    for (step, &op) in expand(ops).iter().enumerate() {
        let before = fingerprint(&mm);
        let (kind, res) = match op {
            HpOp::IsolateThen(..) => unreachable!("expanded"),
            HpOp::Add(r, n) => (
                0,
                mm.add_sections(r.pfns(), NodeId::new(u32::from(n)).unwrap()),
            ),
            HpOp::AddOnline(r, n) => (
                0,
                mm.add_online_range(
                    r.pfns(),
                    NodeId::new(u32::from(n)).unwrap(),
                    ZoneType::Movable,
                ),
            ),
            HpOp::Online(r, m) => (
                1,
                mm.online_range(
                    r.pfns(),
                    if m {
                        ZoneType::Movable
                    } else {
                        ZoneType::Normal
                    },
                ),
            ),
            HpOp::Isolate(r) => (2, mm.isolate_range(r.pfns())),
            HpOp::Unisolate(r) => (3, mm.unisolate_range(r.pfns())),
            HpOp::Offline(r) => (4, mm.offline_range(r.pfns())),
            HpOp::Remove(r) if split_sub.is_some_and(|p| r.pfns().contains(p)) => {
                (5, Err(Error::InvalidRange))
            }
            HpOp::Remove(r) => (5, mm.remove_sections(r.pfns())),
            HpOp::Alloc(o, m) => match mm.alloc_pages(
                o,
                AllocFlags {
                    movable: m,
                    node: None,
                    class: AllocClass::Kernel,
                },
            ) {
                Ok(p) => {
                    let sec = mm.sections().find(|s| s.nr == p.section()).unwrap();
                    prop_assert!(
                        m || sec.zone != Some(ZoneType::Movable),
                        "unmovable in Movable"
                    );
                    for i in 0..(1u64 << o) {
                        let mt = mm.buddy.table.migrate_type(p.add(i));
                        prop_assert!(
                            mt != MigrateType::Isolate,
                            "allocated from an isolated pageblock"
                        );
                    }
                    held.push((p, o));
                    (6, Ok(()))
                }
                Err(_) => (6, Err(Error::NoMemory)),
            },
            HpOp::Free(i) if !held.is_empty() => {
                let (p, o) = held.swap_remove(i % held.len());
                (7, mm.free_pages(p, o))
            }
            HpOp::Free(_) => (7, Err(Error::InvalidRange)),
        };
        if let Err(e) = mm.check() {
            prop_assert!(false, "step {step} {op:?} -> {res:?}: check: FAIL {e}");
        }
        match res {
            Ok(()) => done[kind] += 1,
            Err(e) => {
                let after = fingerprint(&mm);
                // add_sections may keep a table chunk it allocated; compare the rest.
                if matches!(op, HpOp::Add(..) | HpOp::AddOnline(..)) && e == Error::NoMemory {
                    prop_assert_eq!(after.sections, before.sections);
                } else {
                    prop_assert_eq!(
                        after,
                        before,
                        "step {} {:?} failed with {} but changed state",
                        step,
                        op,
                        e
                    );
                }
            }
        }
    }
    // Return everything, then rebuild the boot memory of window 1 as it was.
    for (p, o) in held.drain(..) {
        mm.free_pages(p, o).unwrap();
    }
    let boot_sub = |w: usize, s: u64| w == 1 && BOOT_SUBS.contains(&s);
    let sub = |w: usize, s: u64| HpRange { w, s, n: 1 }.pfns();
    // A boot subsection removed and added again on the other node must go again.
    let wrong_node = |mm: &Mm<FakeStore>, w: usize, s: u64| {
        let r = sub(w, s);
        boot_sub(w, s)
            && !split_sub.is_some_and(|p| r.contains(p))
            && mm.pfn_valid(r.start)
            && mm.pfn_to_page(r.start).unwrap().node() != boot_node(s)
    };
    // Memory holding a mem_map can only go once that mem_map's section is gone, so
    // repeat until nothing more can be taken away.
    loop {
        let mut progress = false;
        for (w, &(_, subs)) in WINDOWS.iter().enumerate() {
            for s in 0..subs {
                let r = sub(w, s);
                if mm.buddy.table.pfn_online(r.start) {
                    let _ = mm.unisolate_range(r);
                    let zone = mm
                        .sections()
                        .find(|i| i.nr == r.start.section())
                        .unwrap()
                        .zone;
                    if !boot_sub(w, s) || zone == Some(ZoneType::Movable) || wrong_node(&mm, w, s) {
                        mm.isolate_range(r).unwrap();
                        if mm.offline_range(r).is_ok() {
                            progress = true;
                        } else {
                            mm.unisolate_range(r).unwrap();
                        }
                    }
                }
                if (!boot_sub(w, s) || wrong_node(&mm, w, s))
                    && mm.pfn_valid(r.start)
                    && !mm.buddy.table.pfn_online(r.start)
                    && mm.remove_sections(r).is_ok()
                {
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
    for (w, &(_, subs)) in WINDOWS.iter().enumerate() {
        for s in 0..subs {
            let r = sub(w, s);
            if boot_sub(w, s) {
                if !mm.pfn_valid(r.start) {
                    mm.add_sections(r, boot_node(s)).unwrap();
                }
                if !mm.buddy.table.pfn_online(r.start) {
                    mm.online_range(r, ZoneType::Normal).unwrap();
                }
            } else if mm.pfn_valid(r.start) {
                mm.remove_sections(r).unwrap();
            }
        }
    }
    if let Err(e) = mm.check() {
        prop_assert!(false, "end: check: FAIL {e}");
    }
    let mut end = fingerprint(&mm);
    // A table chunk for window 0 may have been allocated (on node 0 or 1); it stays.
    let chunk = section::CHUNK_BYTES / 4096;
    if let Some(i) =
        (0..end.nodes.len()).find(|&i| end.nodes[i].mem_map_pages != start.nodes[i].mem_map_pages)
    {
        let z = &mut end.zones[2 * i];
        end.nodes[i].mem_map_pages -= chunk;
        z.managed_pages += chunk;
        z.free_pages += chunk;
        z.free_pages_by_type[MigrateType::Unmovable.index()] += chunk;
        end.lists.clear();
        let mut start = start;
        start.lists.clear();
        prop_assert_eq!(end, start);
    } else {
        prop_assert_eq!(end, start);
    }
    Ok(done)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 300, ..ProptestConfig::default() })]

    #[test]
    fn prop_hotplug_sequences(
        split in node_split(34, 94),
        ops in proptest::collection::vec(hp_op(), 1..80),
    ) {
        run_hotplug(split, &ops)?;
    }
}

/// The property test is only as good as the calls that succeed: with a fixed seed, every
/// kind of call must succeed many times.
#[test]
fn hotplug_sequences_reach_every_state() {
    let mut total = [0u32; 8];
    for (i, ops) in fixed_sequences(7, 20, 80, hp_op()).into_iter().enumerate() {
        // Node boundary on a 2 MiB boundary or at an odd page inside a pageblock.
        let split = if i % 2 == 0 {
            64 * MIB
        } else {
            70 * MIB + 13 * 4096
        };
        let done = run_hotplug(split, &ops).unwrap();
        for (t, d) in total.iter_mut().zip(done) {
            *t += d;
        }
    }
    eprintln!("successes (add online isolate unisolate offline remove alloc free): {total:?}");
    assert!(
        total.iter().all(|&t| t >= 10),
        "successes per call kind: {total:?}"
    );
}
