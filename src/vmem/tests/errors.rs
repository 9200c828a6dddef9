//! The policy's error paths against the fake device: ERROR to UNPLUG and PLUG resolved with
//! STATE (plugged, unplugged, mixed), NACK to UNPLUG, BUSY splitting against a host that
//! backs only part of a run, the `plugged_size` audit, and the checks at probe.
//!
//! Ordering checks read the shared trace (`fake::Trace`): a unit is taken down (removed from
//! the model and the linear map) before the UNPLUG that names it, nothing touches it after
//! an UNPLUG the device may have done, and the unit an UNPLUG refused comes back (added and
//! online) only after a STATE answer covering it.

use super::fake::{Blocks, Event};
use super::*;

const BASE: u64 = 0x1_0000_0000;

/// The range a request covers.
fn req_range(r: &Request, block: u64) -> Option<PhysRange> {
    match *r {
        Request::Plug { addr, nb_blocks }
        | Request::Unplug { addr, nb_blocks }
        | Request::State { addr, nb_blocks } => Some(PhysRange {
            base: addr,
            size: u64::from(nb_blocks) * block,
        }),
        Request::UnplugAll => None,
    }
}

/// UNPLUG and STATE of one 2 MiB block at `r`.
fn unplug_and_state(r: PhysRange) -> (Request, Request) {
    let (addr, nb_blocks) = (r.base, 1);
    (
        Request::Unplug { addr, nb_blocks },
        Request::State { addr, nb_blocks },
    )
}

/// What the trace shows for `victim` when the device did unplug it yet answered `answer` to
/// the UNPLUG: offline, taken down, the UNPLUG, STATE saying unplugged; never touched
/// after the UNPLUG.
fn removed_after_state(victim: PhysRange, answer: Response) -> [Event; 4] {
    let (unplug, state) = unplug_and_state(victim);
    [
        Event::Mem("offline", victim),
        Event::Mem("remove", victim),
        Event::Req(unplug, answer),
        Event::Req(state, Response::AckState(BlockState::Unplugged)),
    ]
}

/// The events that touch `range`, from the first `offline` of it on.
fn from_offline(m: &TestMem, range: PhysRange, block: u64) -> Vec<Event> {
    let touches = |e: &Event| match e {
        Event::Req(r, _) => req_range(r, block).is_some_and(|x| x.overlaps(range)),
        Event::Mem(_, x) => x.overlaps(range),
    };
    let all: Vec<Event> = m.trace.borrow().iter().copied().filter(touches).collect();
    let first = all
        .iter()
        .position(|e| matches!(e, Event::Mem("offline", _)))
        .expect("the range was offlined");
    all[first..].to_vec()
}

/// The PLUG requests sent so far, as block counts.
fn plug_blocks(d: &FakeDevice) -> Vec<u16> {
    d.log
        .iter()
        .filter_map(|r| match r {
            Request::Plug { nb_blocks, .. } => Some(*nb_blocks),
            _ => None,
        })
        .collect()
}

/// Steps at `now` until the policy asks for a time or goes idle.
fn step_until_wait(v: &mut Vmem, d: &mut FakeDevice, m: &mut TestMem, now: u64) -> Next {
    loop {
        match v.step(d, m, now) {
            Next::Again => m.mm.check().expect("memory model invariants"),
            n => return n,
        }
    }
}

/// A policy at 64 MiB plugged (2 MiB blocks), then asked for 62: the next unplug takes the
/// highest unit. Returns it too.
fn at_64_then_62() -> (Vmem, FakeDevice, TestMem, PhysRange) {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    d.set_requested(62 * MIB);
    let victim = PhysRange {
        base: BASE + 62 * MIB,
        size: 2 * MIB,
    };
    (v, d, m, victim)
}

#[test]
fn unplug_error_keeps_the_unit_offline_until_state_says_plugged() {
    let (mut v, mut d, mut m, victim) = at_64_then_62();
    // ERROR with nothing done, then STATE answers BUSY once: the step backs off.
    d.partial.push_back((Response::Error, |_| false));
    d.script.push_back(Response::Busy);
    let n = step_until_wait(&mut v, &mut d, &mut m, 1_000);
    let Next::RetryAt(t) = n else { panic!("{n:?}") };
    assert_eq!(v.state(), State::Busy);
    // Meanwhile the unit is offline: 62 MiB online, the device and the policy at 64.
    assert_eq!(m.movable_free_bytes(), 62 * MIB);
    assert_eq!((d.plugged_bytes(), v.plugged_bytes()), (64 * MIB, 64 * MIB));
    // Still offline when asked again too early.
    assert_eq!(v.step(&mut d, &mut m, t - 1), Next::RetryAt(t));
    assert_eq!(m.movable_free_bytes(), 62 * MIB);
    // STATE says plugged: back online, and counted as a contradiction.
    let n = step_until_wait(&mut v, &mut d, &mut m, t);
    assert!(matches!(n, Next::RetryAt(_)), "{n:?}");
    assert_eq!(
        (v.state(), v.reason()),
        (State::Stalled, Reason::DeviceError)
    );
    assert_eq!(m.movable_free_bytes(), 64 * MIB);
    let (unplug, state) = unplug_and_state(victim);
    assert_eq!(
        from_offline(&m, victim, 2 * MIB),
        [
            Event::Mem("offline", victim),
            Event::Mem("remove", victim),
            Event::Req(unplug, Response::Error),
            Event::Req(state, Response::Busy),
            Event::Req(state, Response::AckState(BlockState::Plugged)),
            Event::Mem("add_online", victim),
        ]
    );
    // The next try goes through.
    let (n, _) = converge(&mut v, &mut d, &mut m, 1);
    assert_eq!(n, Next::Idle);
    assert_eq!(
        (d.plugged_bytes(), v.plugged_bytes(), m.movable_free_bytes()),
        (62 * MIB, 62 * MIB, 62 * MIB)
    );
}

#[test]
fn unplug_error_then_state_unplugged_removes_without_onlining() {
    let (mut v, mut d, mut m, victim) = at_64_then_62();
    // The device did unplug, yet answered ERROR.
    d.partial.push_back((Response::Error, |_| true));
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::Idle);
    assert_eq!((v.state(), v.reason()), (State::Ok, Reason::None));
    assert_eq!(
        (d.plugged_bytes(), v.plugged_bytes(), m.movable_free_bytes()),
        (62 * MIB, 62 * MIB, 62 * MIB)
    );
    assert_eq!(
        from_offline(&m, victim, 2 * MIB),
        removed_after_state(victim, Response::Error)
    );
    let r = v.take_resized().expect("a resize report");
    assert_eq!(r.progress.unplugged_bytes, 2 * MIB);
}

#[test]
fn unplug_error_then_mixed_is_resolved_block_by_block() {
    // 1 MiB blocks: 32 units of two blocks, all free, unplugged in one request of 64 blocks.
    let (mut v, mut d, mut m) = setup(MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    d.set_requested(0);
    // The device unplugged units 0..8 whole, left 8..16 plugged, and unplugged only the
    // first block of each of 16..32 — and answered ERROR.
    let pick: Blocks = |i| i < 16 || (i >= 32 && i % 2 == 0);
    d.partial.push_back((Response::Error, pick));
    assert_eq!(v.step(&mut d, &mut m, 1_000), Next::Again);
    // One step resolved it: 8..16 back online, everything else removed, the half units'
    // second blocks unplugged; nothing left offline.
    let units = |first: u64, count: u64| PhysRange {
        base: BASE + first * 2 * MIB,
        size: count * 2 * MIB,
    };
    assert_eq!(v.plugged_bytes(), 16 * MIB);
    assert_eq!(d.plugged_bytes(), 16 * MIB);
    assert!(d.plugged[16..32].iter().all(|&p| p));
    assert_eq!(m.movable_free_bytes(), 16 * MIB);
    m.mm.check().unwrap();
    let events = from_offline(&m, units(0, 32), MIB);
    assert_eq!(events[0], Event::Mem("offline", units(0, 32)));
    // Taken down as a whole before the UNPLUG, never again after.
    assert_eq!(events[1], Event::Mem("remove", units(0, 32)));
    assert!(matches!(
        events[2],
        Event::Req(Request::Unplug { .. }, Response::Error)
    ));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Mem("remove", _)))
            .count(),
        1,
        "{events:#?}"
    );
    // Back: only units 8..16, after STATE said they are plugged.
    let onlined: Vec<usize> = (0..events.len())
        .filter(|&i| matches!(events[i], Event::Mem("add_online" | "reonline", _)))
        .collect();
    assert_eq!(onlined.len(), 1, "{events:#?}");
    assert_eq!(events[onlined[0]], Event::Mem("add_online", units(8, 8)));
    let said_plugged = events.iter().position(|e| {
        *e == Event::Req(
            Request::State {
                addr: units(8, 8).base,
                nb_blocks: 16,
            },
            Response::AckState(BlockState::Plugged),
        )
    });
    assert!(said_plugged.is_some_and(|i| i < onlined[0]), "{events:#?}");
    // Each half unit: STATE of its first block, then UNPLUG of its second.
    for u in 16..32 {
        let second = units(u, 1).base + MIB;
        assert!(events.contains(&Event::Req(
            Request::Unplug {
                addr: second,
                nb_blocks: 1
            },
            Response::Ack
        )));
    }
    // Then the normal unplug finishes the job.
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::Idle);
    assert_eq!((d.plugged_bytes(), v.plugged_bytes()), (0, 0));
    assert_eq!(m.mm.sections().filter(|s| !s.boot).count(), 0);
}

#[test]
fn plug_error_then_mixed_adopts_what_plugged_and_gives_back_halves() {
    let (mut v, mut d, mut m) = setup(MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    // One PLUG of 64 blocks: the device plugged units 0..10, not 10..20, and only the
    // second block of each of 20..32 — and answered ERROR.
    let pick: Blocks = |i| i < 20 || (i >= 40 && i % 2 == 1);
    d.partial.push_back((Response::Error, pick));
    assert_eq!(v.step(&mut d, &mut m, 1_000), Next::Again);
    // Accounted at once: what plugged is online, the half units were given back.
    assert_eq!(v.plugged_bytes(), 20 * MIB);
    assert_eq!(d.plugged_bytes(), 20 * MIB, "no block leaked");
    assert!(d.plugged[..20].iter().all(|&p| p));
    assert_eq!(m.movable_free_bytes(), 20 * MIB);
    assert_eq!(v.progress().plugged_bytes, 20 * MIB);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::Idle);
    assert_eq!(
        (d.plugged_bytes(), v.plugged_bytes(), m.movable_free_bytes()),
        (64 * MIB, 64 * MIB, 64 * MIB)
    );
    assert_eq!((v.state(), v.reason()), (State::Ok, Reason::None));
}

#[test]
fn nack_to_unplug_goes_back_online_at_once_unless_plugged_size_moved() {
    let (mut v, mut d, mut m, victim) = at_64_then_62();
    // Refused (nothing done): back online at once, no STATE needed.
    d.script.push_back(Response::Nack);
    assert_eq!(v.step(&mut d, &mut m, 1_000), Next::Again);
    let (unplug, _) = unplug_and_state(victim);
    assert_eq!(
        from_offline(&m, victim, 2 * MIB),
        [
            Event::Mem("offline", victim),
            Event::Mem("remove", victim),
            Event::Req(unplug, Response::Nack),
            Event::Mem("add_online", victim),
        ]
    );
    m.trace.borrow_mut().clear();
    // A NACK although the device did unplug: `plugged_size` moved, so the unit stays
    // offline until STATE, which says unplugged.
    d.partial.push_back((Response::Nack, |_| true));
    assert_eq!(v.step(&mut d, &mut m, 1_000), Next::Again);
    assert_eq!(
        from_offline(&m, victim, 2 * MIB),
        removed_after_state(victim, Response::Nack)
    );
    assert_eq!((d.plugged_bytes(), v.plugged_bytes()), (62 * MIB, 62 * MIB));
}

#[test]
fn busy_splits_the_run_plugs_what_the_host_backs_then_grows_back() {
    let (mut v, mut d, mut m) = setup(2 * MIB, 4 * GIB, GIB);
    d.capacity = Some(100 * MIB);
    d.set_requested(GIB);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert!(matches!(n, Next::RetryAt(_)), "{n:?}");
    assert_eq!(
        (v.state(), v.reason()),
        (State::Stalled, Reason::DeviceBusy)
    );
    assert_eq!(
        (d.plugged_bytes(), v.plugged_bytes(), m.movable_free_bytes()),
        (100 * MIB, 100 * MIB, 100 * MIB),
        "everything the host could back"
    );
    let plugs = plug_blocks(&d);
    assert_eq!(plugs[..5], [512, 256, 128, 64, 32], "halved: {plugs:?}");
    assert!(plugs.len() < 40, "{} requests: {plugs:?}", plugs.len());
    // Retried later: still nothing more to back, still stalled, nothing lost.
    let (n, _) = converge(&mut v, &mut d, &mut m, 3);
    assert!(matches!(n, Next::RetryAt(_)));
    assert_eq!(d.plugged_bytes(), 100 * MIB);
    // The host can back everything again (a migration ended): the run size grows back
    // after each success, so the rest goes in a few requests.
    d.capacity = None;
    let before = plug_blocks(&d).len();
    let (n, _) = converge(&mut v, &mut d, &mut m, 1);
    assert_eq!(n, Next::Idle);
    assert_eq!((d.plugged_bytes(), v.plugged_bytes()), (GIB, GIB));
    assert_eq!((v.state(), v.reason()), (State::Ok, Reason::None));
    let after = &plug_blocks(&d)[before..];
    assert_eq!(after[..8], [1, 2, 4, 8, 16, 32, 64, 128], "{after:?}");
    assert!(after.len() <= 10, "{after:?}");
}

#[test]
fn audit_adopts_blocks_the_device_plugged_behind_a_busy() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    // The first PLUG is done, but answered BUSY.
    d.partial.push_back((Response::Busy, |_| true));
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::Idle);
    assert_eq!(
        (d.plugged_bytes(), v.plugged_bytes(), m.movable_free_bytes()),
        (64 * MIB, 64 * MIB, 64 * MIB)
    );
    assert!(d.log.iter().any(|r| matches!(r, Request::State { .. })));
    assert_eq!((v.state(), v.reason()), (State::Ok, Reason::None));
}

#[test]
fn audit_takes_out_memory_the_device_dropped() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    m.trace.borrow_mut().clear();
    // Unit 5 disappears on the device side (a reset of one block, say).
    d.plugged[5] = false;
    let unit5 = PhysRange {
        base: BASE + 10 * MIB,
        size: 2 * MIB,
    };
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::Idle);
    let events = from_offline(&m, unit5, 2 * MIB);
    assert_eq!(events[0], Event::Mem("offline", unit5));
    assert_eq!(events[1], Event::Mem("remove", unit5));
    // Then plugged again, as the request still wants 64 MiB.
    assert!(events[2..].contains(&Event::Mem("add_online", unit5)));
    assert_eq!(
        (d.plugged_bytes(), v.plugged_bytes(), m.movable_free_bytes()),
        (64 * MIB, 64 * MIB, 64 * MIB)
    );
}

#[test]
fn audit_gives_back_a_stray_block() {
    let (mut v, mut d, mut m) = setup(MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    // Block 100 (the first of unit 50) plugged without the policy.
    d.plugged[100] = true;
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::Idle);
    assert!(d.log.contains(&Request::Unplug {
        addr: BASE + 100 * MIB,
        nb_blocks: 1
    }));
    assert_eq!((d.plugged_bytes(), v.plugged_bytes()), (64 * MIB, 64 * MIB));
}

#[test]
fn a_plugged_size_that_state_never_bears_out_breaks_the_device() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    d.plugged_size_error = 2 * MIB;
    converges_to_broken_keeping(&mut v, &mut d, &mut m, 64 * MIB);
}

#[test]
fn audit_asks_state_in_requests_of_at_most_65535_blocks() {
    let (mut v, mut d, mut m) = setup(MIB, 256 * GIB, GIB);
    d.cfg.usable_region_size = 256 * GIB;
    d.plugged_size_error = MIB;
    let n = v.step(&mut d, &mut m, 1_000);
    assert!(matches!(n, Next::RetryAt(_)), "{n:?}");
    let states: Vec<(u64, u16)> = d
        .log
        .iter()
        .filter_map(|r| match *r {
            Request::State { addr, nb_blocks } => Some((addr, nb_blocks)),
            _ => None,
        })
        .collect();
    assert!(states.len() >= 5, "{states:?}");
    let mut next = BASE;
    for &(addr, n) in &states {
        assert_eq!(addr, next, "contiguous: {states:?}");
        next += u64::from(n) * MIB;
    }
    assert_eq!(next, BASE + 256 * GIB, "the whole usable region");
}

#[test]
fn probe_refuses_an_unaligned_region_at_once() {
    let unaligned = |addr_off: u64, region: u64| {
        let mut d = FakeDevice::new(MIB, region);
        d.cfg.addr += addr_off;
        d.set_requested(64 * MIB);
        let cfg = d.config().unwrap();
        let mut v = Vmem::new(0, cfg);
        let mut m = TestMem::new(GIB);
        let state = (v.state(), v.reason());
        let n = v.step(&mut d, &mut m, 1_000);
        (state, n, d.log.len(), m.adds)
    };
    let broken = (State::Broken, Reason::UnalignedRegion);
    // An address at an odd MiB, a size of an odd number of MiB: broken, nothing sent.
    assert_eq!(unaligned(MIB, GIB), (broken, Next::Idle, 0, 0));
    assert_eq!(unaligned(0, GIB + MIB), (broken, Next::Idle, 0, 0));
    assert_eq!(Reason::UnalignedRegion.name(), "unaligned_region");
    // Aligned to the unit: plugs.
    let ((state, _), n, sent, adds) = unaligned(0, GIB);
    assert_eq!((state, n), (State::Ok, Next::Again));
    assert!(sent > 0 && adds == 1);
}

#[test]
fn probe_accepts_every_node_the_model_holds() {
    let mut d = FakeDevice::new(2 * MIB, GIB);
    d.cfg.node_id = (crate::mm::MAX_NODES - 1) as u16;
    let cfg = d.config().unwrap();
    let (mut v, mut m) = (Vmem::new(0, cfg), TestMem::new(GIB));
    assert_eq!(v.state(), State::Ok);
    d.set_requested(64 * MIB);
    assert_eq!(converge(&mut v, &mut d, &mut m, 0).0, Next::Idle);
    let node: u64 =
        m.mm.stats()
            .filter(|z| z.node.index() == crate::mm::MAX_NODES - 1)
            .map(|z| z.present_pages * 4096)
            .sum();
    assert_eq!(node, 64 * MIB, "plugged into the device's node");
}

#[test]
fn contradictions_broken_up_by_acks_do_not_disable_the_device() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(256 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    // Many more contradictions than MAX_CONTRADICTIONS over the device's life, but never
    // MAX_CONTRADICTIONS in a row: each ERROR (with STATE still plugged) is followed by an
    // UNPLUG the device ACKs.
    for i in 1..=3 * MAX_CONTRADICTIONS as u64 {
        d.set_requested((256 - 2 * i) * MIB);
        error_then_state(&mut d, BlockState::Plugged, 1);
        converge(&mut v, &mut d, &mut m, 5);
        assert_ne!(v.state(), State::Broken, "round {i}");
        assert_eq!(d.plugged_bytes(), (256 - 2 * i) * MIB, "round {i}");
        assert_eq!(v.plugged_bytes(), d.plugged_bytes());
    }
    // MAX_CONTRADICTIONS in a row still disable it.
    d.set_requested(0);
    error_then_state(&mut d, BlockState::Plugged, MAX_CONTRADICTIONS);
    converge(&mut v, &mut d, &mut m, 5);
    assert_eq!(v.state(), State::Broken);
}
