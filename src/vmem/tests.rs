//! The policy against a fake device (behaving like QEMU's virtio-mem) and the real memory
//! model over the shared `Vec`-backed fake store. The fakes live in `tests/fake.rs`.

use super::*;
use crate::mm::{AllocFlags, Pfn, ZoneType};
use hotmem_drivers::virtio_mem::BlockState;

mod errors;
mod fake;
mod status;
mod unplug;
use fake::{FakeDevice, TestMem};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Runs `step` until idle or a retry time (following retries up to `max_retries`).
fn converge(v: &mut Vmem, d: &mut FakeDevice, m: &mut TestMem, max_retries: u32) -> (Next, u64) {
    let mut now = 1_000;
    let mut retries = 0;
    for _ in 0..100_000 {
        match v.step(d, m, now) {
            Next::Again => {}
            Next::Idle => return checked((Next::Idle, now), d, m),
            Next::RetryAt(t) => {
                if retries == max_retries {
                    return checked((Next::RetryAt(t), now), d, m);
                }
                retries += 1;
                now = t;
            }
        }
        m.mm.check().expect("memory model invariants");
    }
    panic!("no convergence");
}

/// What `converge` returns, after checking the order of teardown and UNPLUG in the trace.
fn checked(r: (Next, u64), d: &FakeDevice, m: &TestMem) -> (Next, u64) {
    if let Err(e) = unplug::down_before_unplug(&m.trace.borrow(), d.cfg.block_size) {
        panic!("{e}");
    }
    r
}

/// A policy, a fake device of `region` bytes in `block`s at 0x1_0000_0000, and `boot`
/// bytes of boot memory; device and memory share one trace.
fn setup(block: u64, region: u64, boot: u64) -> (Vmem, FakeDevice, TestMem) {
    let mut d = FakeDevice::new(block, region);
    let cfg = d.config().unwrap();
    let m = TestMem::new(boot);
    d.trace = m.trace.clone();
    (Vmem::new(0, cfg), d, m)
}

/// Scripts the device to answer the next `times` requests ERROR, each followed by a STATE
/// answer of `state`.
fn error_then_state(d: &mut FakeDevice, state: BlockState, times: u32) {
    for _ in 0..times {
        d.script
            .extend([Response::Error, Response::AckState(state)]);
    }
}

/// Converges (following up to 5 retries) to a broken device while the `online` bytes of
/// memory it had plugged stay usable.
#[track_caller]
fn converges_to_broken_keeping(v: &mut Vmem, d: &mut FakeDevice, m: &mut TestMem, online: u64) {
    let (n, _) = converge(v, d, m, 5);
    assert_eq!(n, Next::Idle);
    assert_eq!(v.state(), State::Broken);
    assert_eq!(m.movable_free_bytes(), online, "memory online stays usable");
}

#[test]
fn plug_and_unplug_free_memory_every_block_size() {
    for block in [MIB, 2 * MIB, 128 * MIB, GIB] {
        let (mut v, mut d, mut m) = setup(block, 4 * GIB, GIB);
        for target in [GIB, 3 * GIB, 4 * GIB, 0, 2 * GIB, 0] {
            d.set_requested(target);
            assert_eq!(
                converge(&mut v, &mut d, &mut m, 0).0,
                Next::Idle,
                "block {block} target {target}"
            );
            assert_eq!(d.plugged_bytes(), target, "block {block}");
            assert_eq!(v.plugged_bytes(), target);
            assert_eq!(
                m.movable_free_bytes(),
                target,
                "everything plugged is online and free"
            );
            assert_eq!((v.state(), v.reason()), (State::Ok, Reason::None));
            assert_eq!(v.pending_bytes(), 0);
        }
        // Every request stayed inside the 16-bit block count.
        assert!(d
            .log
            .iter()
            .all(|r| !matches!(r, Request::Plug { nb_blocks: 0, .. })));
    }
}

#[test]
fn small_blocks_are_plugged_in_pageblock_pairs_and_batched() {
    let (mut v, mut d, mut m) = setup(MIB, 4 * GIB, GIB);
    d.set_requested(GIB);
    converge(&mut v, &mut d, &mut m, 0);
    let plugs: Vec<_> = d
        .log
        .iter()
        .filter(|r| matches!(r, Request::Plug { .. }))
        .collect();
    // 1 GiB of 1 MiB blocks = 1024 blocks: one request.
    assert_eq!(plugs.len(), 1, "{plugs:?}");
    assert_eq!(
        plugs[0],
        &Request::Plug {
            addr: 0x1_0000_0000,
            nb_blocks: 1024
        }
    );
    // An odd MiB cannot be reached in 2 MiB units: approached from below.
    d.set_requested(GIB + 3 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(d.plugged_bytes(), GIB + 2 * MIB);
    assert_eq!(v.reason(), Reason::Granularity);
}

#[test]
fn partially_plugged_sections_fill_first_then_lowest_address() {
    let (mut v, mut d, mut m) = setup(2 * MIB, 4 * GIB, GIB);
    d.set_requested(4 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    // Unplug the first unit by hand-crafted state: free it through the policy.
    d.set_requested(2 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    // Highest address went first: unit 0 remains.
    assert!(d.plugged[0] && !d.plugged[1]);
    d.log.clear();
    d.set_requested(6 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(
        d.log[0],
        Request::Plug {
            addr: 0x1_0000_0000 + 2 * MIB,
            nb_blocks: 2
        }
    );
}

/// BUSY to a single unit backs off on a timer that doubles. (BUSY to a longer run first
/// halves it, down to one unit: `busy_splits_the_run_*` in `tests/errors.rs`.)
#[test]
fn busy_backs_off_on_a_timer_and_doubles() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    // 32 units: five halvings (32 -> 1), then BUSY to one unit, then again after the
    // back-off.
    d.script.extend([Response::Busy; 7]);
    let t0 = 1_000;
    let mut n1 = Next::Again;
    for _ in 0..6 {
        n1 = v.step(&mut d, &mut m, t0);
        if n1 != Next::Again {
            break;
        }
    }
    assert_eq!(n1, Next::RetryAt(t0 + BACKOFF_MIN_NS));
    assert_eq!(d.log.len(), 6, "{:?}", d.log);
    assert_eq!(
        (v.state(), v.reason()),
        (State::Stalled, Reason::DeviceBusy)
    );
    // Too early: nothing is sent.
    let sent = d.log.len();
    assert_eq!(
        v.step(&mut d, &mut m, t0 + 1),
        Next::RetryAt(t0 + BACKOFF_MIN_NS)
    );
    assert_eq!(d.log.len(), sent);
    let n2 = v.step(&mut d, &mut m, t0 + BACKOFF_MIN_NS);
    assert_eq!(n2, Next::RetryAt(t0 + BACKOFF_MIN_NS + 2 * BACKOFF_MIN_NS));
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::RetryAt(t0 + 3 * BACKOFF_MIN_NS));
    let (n, _) = converge(&mut v, &mut d, &mut m, 1);
    assert_eq!(n, Next::Idle);
    assert_eq!(d.plugged_bytes(), 64 * MIB);
    assert_eq!(v.state(), State::Ok);
}

#[test]
fn nack_rereads_config_and_requested_size_changing_in_flight() {
    let (mut v, mut d, mut m) = setup(2 * MIB, 4 * GIB, GIB);
    // Plug 2 GiB, but the host lowers the request to 512 MiB after the first request:
    // the policy must not overshoot, and must land on the new size.
    d.set_requested(2 * GIB);
    d.change_requested = Some((0, 512 * MIB));
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(d.plugged_bytes(), 512 * MIB);
    assert!(d.log.iter().any(|r| matches!(r, Request::Plug { .. })));
    // A NACK from a scripted device is retried after re-reading.
    d.set_requested(600 * MIB);
    d.script.push_back(Response::Nack);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(d.plugged_bytes(), 600 * MIB);
}

#[test]
fn error_is_reconciled_with_state_and_liars_are_broken() {
    // ERROR although the device did plug: STATE says plugged, the policy adopts it.
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(32 * MIB);
    d.lie_on_plug = true;
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(d.plugged_bytes(), 32 * MIB);
    assert_eq!(m.movable_free_bytes(), 32 * MIB);
    assert!(d.log.iter().any(|r| matches!(r, Request::State { .. })));
    // ERROR and STATE says unplugged, again and again: broken, memory stays usable.
    d.lie_on_plug = false;
    d.set_requested(64 * MIB);
    error_then_state(&mut d, BlockState::Unplugged, 3);
    converges_to_broken_keeping(&mut v, &mut d, &mut m, 32 * MIB);
    let sent = d.log.len();
    assert_eq!(v.step(&mut d, &mut m, u64::MAX), Next::Idle);
    assert_eq!(d.log.len(), sent, "a broken device gets no requests");
}

/// A finished resize is reported once, for the caller to log after it published the new
/// state (so the log line never runs ahead of what `vmem` shows).
#[test]
fn a_finished_resize_is_reported_once() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    assert_eq!(v.take_resized(), None);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    let r = v.take_resized().expect("converged: a report");
    assert_eq!((r.plugged_size, r.requested_size), (64 * MIB, 64 * MIB));
    assert_eq!(
        (r.progress.plugged_bytes, r.progress.unplugged_bytes),
        (64 * MIB, 0)
    );
    assert!(
        r.to_string().starts_with(
            "vmem0: resized to 64 MiB (requested 64 MiB): plugged 64 MiB, unplugged 0 MiB, \
             migrated 0 MiB, 1 requests, "
        ),
        "{r}"
    );
    assert_eq!(v.take_resized(), None, "reported once");
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(v.take_resized(), None, "nothing new to report");
    d.set_requested(0);
    converge(&mut v, &mut d, &mut m, 0);
    let r = v.take_resized().expect("shrunk: a report");
    assert_eq!((r.plugged_size, r.progress.unplugged_bytes), (0, 64 * MIB));
}

#[test]
fn unplug_error_is_reconciled_with_state_and_liars_are_broken() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(m.movable_free_bytes(), 64 * MIB);
    // ERROR to UNPLUG although the device did unplug (STATE says unplugged): the policy
    // adopts the device's view and the memory leaves again.
    d.set_requested(32 * MIB);
    error_then_state(&mut d, BlockState::Unplugged, 1);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(v.plugged_bytes(), 32 * MIB);
    assert_eq!(m.movable_free_bytes(), 32 * MIB);
    // ERROR to UNPLUG and STATE says still plugged, again and again: a contradiction each
    // time, then broken; the memory stays online and usable.
    d.set_requested(0);
    error_then_state(&mut d, BlockState::Plugged, MAX_CONTRADICTIONS);
    converges_to_broken_keeping(&mut v, &mut d, &mut m, 32 * MIB);
}

#[test]
fn leftovers_at_startup_are_unplugged_first_with_busy_retry() {
    let mut d = FakeDevice::new(2 * MIB, 4 * GIB);
    d.set_requested(GIB);
    d.plugged[..256].iter_mut().for_each(|p| *p = true);
    let cfg = d.config().unwrap();
    assert_eq!(cfg.plugged_size, 512 * MIB);
    let mut v = Vmem::new(0, cfg);
    let mut m = TestMem::new(GIB);
    d.script.push_back(Response::Busy);
    let (n, _) = converge(&mut v, &mut d, &mut m, 1);
    assert_eq!(n, Next::Idle);
    assert_eq!(d.log[0], Request::UnplugAll);
    assert_eq!(d.log[1], Request::UnplugAll);
    assert_eq!(d.plugged_bytes(), GIB);
    assert_eq!(m.movable_free_bytes(), GIB);
}

#[test]
fn mem_map_bound_stalls_with_no_memory() {
    // 64 MiB of boot memory cannot hold mem_maps for 16 GiB (128 sections x 1 MiB).
    let (mut v, mut d, mut m) = setup(128 * MIB, 16 * GIB, 64 * MIB);
    d.set_requested(16 * GIB);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert!(matches!(n, Next::RetryAt(_)));
    assert_eq!((v.state(), v.reason()), (State::Stalled, Reason::NoMemory));
    let plugged = d.plugged_bytes();
    assert!(
        plugged > 0 && plugged < 16 * GIB,
        "plugged as far as memory allowed: {plugged}"
    );
    assert_eq!(m.movable_free_bytes(), plugged);
    // Normal memory kept its reserve.
    let free_normal: u64 =
        m.mm.stats()
            .filter(|z| z.zone == Some(ZoneType::Normal))
            .map(|z| z.free_pages * 4096)
            .sum();
    assert!(free_normal >= 16 * MIB, "reserve kept: {free_normal}");
}

#[test]
fn failed_add_gives_the_blocks_back() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    m.fail_adds = true;
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert!(matches!(n, Next::RetryAt(_)));
    assert_eq!(d.plugged_bytes(), 0, "unplugged again after the failed add");
    assert_eq!((v.state(), v.reason()), (State::Stalled, Reason::NoMemory));
    m.fail_adds = false;
    let (n, _) = converge(&mut v, &mut d, &mut m, 1);
    assert_eq!(n, Next::Idle);
    assert_eq!(d.plugged_bytes(), 64 * MIB);
}

/// A node the memory model cannot hold is refused when the policy is created: broken at
/// once with `unsupported_node`, nothing sent, nothing added.
#[test]
fn node_the_model_cannot_hold_refuses_the_add() {
    let mut d = FakeDevice::new(2 * MIB, GIB);
    d.cfg.node_id = crate::mm::MAX_NODES as u16;
    let cfg = d.config().unwrap();
    let (mut v, mut m) = (Vmem::new(0, cfg), TestMem::new(GIB));
    assert_eq!(
        (v.state(), v.reason()),
        (State::Broken, Reason::UnsupportedNode)
    );
    d.set_requested(64 * MIB);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::Idle);
    assert_eq!(
        m.adds, 0,
        "the memory side is not asked to add to a node it cannot hold"
    );
    assert!(d.log.is_empty(), "no request: {:?}", d.log);
    assert_eq!(d.plugged_bytes(), 0);
    assert_eq!(v.reason().name(), "unsupported_node");
}

#[test]
fn unplug_skips_memory_in_use_and_reports_unmovable() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, 64 * MIB);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    // Take movable pages: they land in the Movable zone (the hot-plugged memory).
    let used: Vec<Pfn> = (0..8)
        .map(|_| m.mm.alloc_pages(0, AllocFlags::MOVABLE).unwrap())
        .collect();
    assert!(used.iter().all(|p| p.addr().0 >= 0x1_0000_0000));
    d.set_requested(0);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert!(matches!(n, Next::RetryAt(_)));
    assert_eq!((v.state(), v.reason()), (State::Stalled, Reason::Unmovable));
    // Everything not in use went; the units holding pages stayed plugged and online.
    assert!(d.plugged_bytes() < 64 * MIB);
    for p in &used {
        let off = p.addr().0 - 0x1_0000_0000;
        assert!(
            d.plugged[(off / (2 * MIB)) as usize],
            "a used page's block was unplugged"
        );
    }
    for p in used {
        m.mm.free_pages(p, 0).unwrap();
    }
    let (n, _) = converge(&mut v, &mut d, &mut m, 1);
    assert_eq!(n, Next::Idle);
    assert_eq!(d.plugged_bytes(), 0);
    assert_eq!(
        m.mm.sections().filter(|s| !s.boot).count(),
        0,
        "hot-added sections removed"
    );
}

#[test]
fn candidates_prefer_partially_plugged_sections() {
    let (mut v, mut d, _m) = setup(2 * MIB, 4 * GIB, GIB);
    d.set_requested(GIB);
    v.cfg = d.config().unwrap();
    // One unit plugged in the second section (units 64..127).
    v.plugged[70] = true;
    assert_eq!(v.plug_candidates(3), vec![64, 65, 66]);
    assert_eq!(v.plug_candidates(64)[62..], [127, 0]);
    // Runs are contiguous and capped at 65535 blocks.
    let runs = v.runs(vec![5, 3, 4, 9]);
    assert_eq!(
        runs,
        vec![Run { first: 3, count: 3 }, Run { first: 9, count: 1 }]
    );
    let (mut v1, mut d1, _m1) = setup(MIB, 256 * GIB, GIB);
    d1.set_requested(200 * GIB);
    v1.cfg = d1.config().unwrap();
    let runs = v1.runs((0..40_000).collect());
    assert_eq!(
        runs.iter().map(|r| r.count).collect::<Vec<_>>(),
        vec![32_767, 7_233]
    );
}

#[test]
fn victims_empty_first_then_fewest_used_highest_address_first() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(16 * MIB); // units 0..8
    converge(&mut v, &mut d, &mut m, 0);
    // 600 movable pages land in the Movable zone: one unit full, one with 88.
    m.hold(600);
    let unit_of = |p: &Pfn| ((p.addr().0 - 0x1_0000_0000) / (2 * MIB)) as usize;
    let mut used = [0usize; 8];
    for p in &m.held {
        used[unit_of(p)] += 1;
    }
    let full = used.iter().position(|&u| u == 512).expect("a full unit");
    let part = used
        .iter()
        .position(|&u| u == 88)
        .expect("a partly used unit");
    let empty: Vec<usize> = (0..8).filter(|&u| used[u] == 0).collect();
    assert_eq!(empty.len(), 6, "test setup: {used:?}");
    d.set_requested(4 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    // The six empty units went, nothing moved, the used ones stay.
    assert_eq!(d.plugged_bytes(), 4 * MIB);
    assert!(d.plugged[full] && d.plugged[part]);
    let gone: u64 = m.offlined.iter().map(|r| r.size).sum();
    assert_eq!(gone, 12 * MIB);
    // Contiguous empty victims went in one request, the highest run first.
    let top = *empty.last().unwrap();
    assert!(m.offlined[0].end() == 0x1_0000_0000 + (top as u64 + 1) * 2 * MIB);
    assert_eq!(used.iter().sum::<usize>(), 600);
    // Down to one unit: the one with fewer used pages goes; its pages move.
    d.set_requested(2 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    assert!(d.plugged[full] && !d.plugged[part]);
    let part_base = 0x1_0000_0000 + part as u64 * 2 * MIB;
    assert_eq!(
        m.offlined.last(),
        Some(&PhysRange {
            base: part_base,
            size: 2 * MIB
        })
    );
    assert!(m
        .held
        .iter()
        .all(|p| p.addr().0 < part_base || p.addr().0 >= part_base + 2 * MIB));
    assert_eq!(m.held.len(), 600);
    m.mm.check().unwrap();
}

#[test]
fn pinned_memory_stalls_with_reason_pinned_then_converges() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(4 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    m.hold(1);
    m.pinned = m.held.clone();
    d.set_requested(0);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert!(matches!(n, Next::RetryAt(_)));
    assert_eq!((v.state(), v.reason()), (State::Stalled, Reason::Pinned));
    assert_eq!(
        d.plugged_bytes(),
        2 * MIB,
        "everything but the pinned unit went"
    );
    m.pinned.clear();
    let (n, _) = converge(&mut v, &mut d, &mut m, 1);
    assert_eq!(n, Next::Idle);
    assert_eq!(d.plugged_bytes(), 0);
    assert!(
        m.held[0].addr().0 < 0x1_0000_0000,
        "the page moved to boot memory"
    );
}

#[test]
fn floor_and_no_memory_stop_unplug_with_their_reason() {
    // 64 MiB boot memory, 256 MiB plugged and 200 MiB of it used: moving everything out
    // cannot fit. With a floor of 32 MiB the floor speaks first.
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, 64 * MIB);
    d.set_requested(256 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    m.hold(200 * 256);
    m.floor = 32 * MIB;
    d.set_requested(0);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert!(matches!(n, Next::RetryAt(_)));
    assert_eq!((v.state(), v.reason()), (State::Stalled, Reason::Floor));
    let free: u64 = m.mm.total_stats().free_pages * 4096;
    assert!(free >= 32 * MIB, "the floor held: {free}");
    m.mm.check().unwrap();
    // Without a floor, unplug goes until there is no memory left to migrate to.
    m.floor = 0;
    let (n, _) = converge(&mut v, &mut d, &mut m, 2);
    assert!(matches!(n, Next::RetryAt(_)));
    assert!(
        matches!(v.reason(), Reason::NoMemory | Reason::Floor),
        "{:?}",
        v.reason()
    );
    assert!(
        d.plugged_bytes() >= 200 * MIB - 64 * MIB,
        "data kept: {}",
        d.plugged_bytes()
    );
    assert_eq!(m.held.len(), 200 * 256);
    m.mm.check().unwrap();
}

/// With mem_maps from Normal, a Normal zone too small for the request still plugs in the
/// largest runs its room allows (a few requests, not one block per request), then stalls
/// at once with `no_memory` and what it reached; with memmap on memory the same boot
/// memory plugs all of it.
#[test]
fn short_normal_plugs_in_large_runs_then_stalls() {
    let plugs = |d: &FakeDevice| {
        d.log
            .iter()
            .filter(|r| matches!(r, Request::Plug { .. }))
            .count()
    };
    let (mut v, mut d, mut m) = setup(2 * MIB, 16 * GIB, 96 * MIB);
    d.set_requested(16 * GIB);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert!(matches!(n, Next::RetryAt(_)), "{n:?}");
    assert_eq!((v.state(), v.reason()), (State::Stalled, Reason::NoMemory));
    let plugged = d.plugged_bytes();
    eprintln!(
        "off: {} MiB plugged in {} PLUG requests",
        plugged >> 20,
        plugs(&d)
    );
    assert!(
        plugged >= 4 * GIB,
        "plugged as far as memory allows: {plugged}"
    );
    assert!(
        plugs(&d) <= 16,
        "{} PLUG requests for {plugged} bytes",
        plugs(&d)
    );
    assert_eq!(m.movable_free_bytes(), plugged);
    // Stalled means stopped: another step sends nothing.
    let sent = d.log.len();
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert!(matches!(n, Next::RetryAt(_)), "{n:?}");
    assert_eq!(d.log.len(), sent, "requests after the stall");

    let (mut v, mut d, mut m) = setup(2 * MIB, 16 * GIB, 96 * MIB);
    m.mm.set_memmap_on_memory(true);
    d.set_requested(16 * GIB);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::Idle);
    assert_eq!(d.plugged_bytes(), 16 * GIB);
    eprintln!("on: 16 GiB plugged in {} PLUG requests", plugs(&d));
    assert!(m.mm.check().is_ok());
}
