//! The unplug path against the fake device: used units emptied in one pass leave in one
//! UNPLUG per contiguous run; NACK, BUSY and ERROR to such a batched run bring every unit
//! of the pass back; units are taken down before the UNPLUG that names them and never
//! touched after it ([`down_before_unplug`], also checked by every `converge`); and no page
//! moves twice in a pass (property test over random plugs, data and targets).

use super::fake::Event;
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const BASE: u64 = 0x1_0000_0000;

/// Checks a trace for the UNPLUGGED_INACCESSIBLE order: every UNPLUG names only memory the
/// model no longer holds (taken down before: `remove`), and no memory call but
/// `add_online` (bringing a unit back, or plugging it anew) touches memory the model does
/// not hold. Tracked per MiB (the smallest block).
pub(super) fn down_before_unplug(events: &[Event], block: u64) -> Result<(), String> {
    // MiB -> held by the model; a MiB the trace has not seen yet (a test may clear the
    // trace) is taken as it first shows itself.
    let mut held: BTreeMap<u64, bool> = BTreeMap::new();
    let mibs = |r: PhysRange| (r.base >> 20)..(r.end() >> 20);
    for (i, e) in events.iter().enumerate() {
        match *e {
            Event::Mem("add_online", r) => held.extend(mibs(r).map(|m| (m, true))),
            Event::Mem(call, r) => {
                if let Some(m) = mibs(r).find(|m| !*held.entry(*m).or_insert(true)) {
                    return Err(format!(
                        "event {i}: {call} of {r:?} touches MiB {m:#x}, which the model does \
                         not hold"
                    ));
                }
                if call == "remove" {
                    held.extend(mibs(r).map(|m| (m, false)));
                }
            }
            Event::Req(Request::Unplug { addr, nb_blocks }, _) => {
                let r = PhysRange {
                    base: addr,
                    size: u64::from(nb_blocks) * block,
                };
                if let Some(m) = mibs(r).find(|m| held.get(m) == Some(&true)) {
                    return Err(format!(
                        "event {i}: UNPLUG of {r:?} while the model still holds MiB {m:#x}"
                    ));
                }
                held.extend(mibs(r).map(|m| (m, false)));
            }
            Event::Req(Request::UnplugAll, _) if held.values().any(|&h| h) => {
                return Err(format!(
                    "event {i}: UNPLUG_ALL while the model holds memory"
                ));
            }
            Event::Req(..) => {}
        }
    }
    Ok(())
}

/// UNPLUG requests in the trace, with their answers.
fn unplugs(m: &TestMem) -> Vec<(Request, Response)> {
    m.trace
        .borrow()
        .iter()
        .filter_map(|e| match *e {
            Event::Req(r @ Request::Unplug { .. }, a) => Some((r, a)),
            _ => None,
        })
        .collect()
}

/// 64 MiB plugged in 2 MiB units, `used` of them full of held pages, the rest free and
/// already unplugged: the next unplug is one pass over the used units.
fn used_units_left(used: usize) -> (Vmem, FakeDevice, TestMem) {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    m.hold(used * 512);
    d.set_requested(used as u64 * 2 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(m.movable_free_bytes(), 0, "setup: only full units left");
    assert!(
        m.held.iter().all(|p| p.addr().0 >= BASE),
        "setup: data plugged"
    );
    m.trace.borrow_mut().clear();
    (v, d, m)
}

#[test]
fn used_units_leave_in_one_request_per_contiguous_run() {
    let (mut v, mut d, mut m) = used_units_left(12);
    d.set_requested(0);
    let (n, _) = converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(n, Next::Idle);
    assert_eq!((d.plugged_bytes(), v.plugged_bytes()), (0, 0));
    assert!(
        m.held.iter().all(|p| p.addr().0 < BASE),
        "moved to boot memory"
    );
    assert_eq!(m.moved_twice, 0);
    assert_eq!(v.progress().migrated_bytes, 12 * 2 * MIB);
    let sent = unplugs(&m);
    // One pass; its units went offline in victim order and leave in as few requests as
    // their runs: here the 12 used units are contiguous, so one request.
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0],
        (
            Request::Unplug {
                addr: BASE + 20 * 2 * MIB,
                nb_blocks: 12
            },
            Response::Ack
        )
    );
    m.mm.check().unwrap();
}

#[test]
fn nack_busy_error_on_a_batched_run_bring_the_whole_pass_back() {
    for answer in [Response::Nack, Response::Busy, Response::Error] {
        let (mut v, mut d, mut m) = used_units_left(6);
        d.set_requested(0);
        match answer {
            // ERROR with nothing done: STATE says plugged.
            Response::Error => d.partial.push_back((Response::Error, |_| false)),
            a => d.script.push_back(a),
        }
        let n = loop {
            match v.step(&mut d, &mut m, 1_000) {
                Next::Again if !unplugs(&m).is_empty() => break Next::Again,
                Next::Again => {}
                n => break n,
            }
        };
        // The pass's pages moved out, the run was refused: every unit is back, online and
        // free, and the device still holds them.
        assert_eq!(unplugs(&m).len(), 1, "{answer:?}: {:?}", unplugs(&m));
        assert_eq!(d.plugged_bytes(), 12 * MIB, "{answer:?}");
        assert_eq!(v.plugged_bytes(), 12 * MIB, "{answer:?}");
        assert_eq!(m.movable_free_bytes(), 12 * MIB, "{answer:?}: {n:?}");
        assert_eq!(m.moved_twice, 0);
        m.mm.check().unwrap();
        down_before_unplug(&m.trace.borrow(), 2 * MIB).unwrap();
        // Later it goes through.
        let (n, _) = converge(&mut v, &mut d, &mut m, 3);
        assert_eq!(n, Next::Idle, "{answer:?}");
        assert_eq!((d.plugged_bytes(), v.plugged_bytes()), (0, 0), "{answer:?}");
    }
}

#[test]
fn the_trace_check_catches_an_unplug_before_the_teardown() {
    let r = PhysRange {
        base: BASE,
        size: 2 * MIB,
    };
    let unplug = Request::Unplug {
        addr: BASE,
        nb_blocks: 1,
    };
    let good = [
        Event::Mem("add_online", r),
        Event::Mem("offline", r),
        Event::Mem("remove", r),
        Event::Req(unplug, Response::Ack),
    ];
    assert!(down_before_unplug(&good, 2 * MIB).is_ok());
    let late = [
        Event::Mem("add_online", r),
        Event::Mem("offline", r),
        Event::Req(unplug, Response::Ack),
        Event::Mem("remove", r),
    ];
    assert!(down_before_unplug(&late, 2 * MIB).is_err());
    let touched = [
        Event::Mem("add_online", r),
        Event::Mem("offline", r),
        Event::Mem("remove", r),
        Event::Req(unplug, Response::Ack),
        Event::Mem("reonline", r),
    ];
    assert!(down_before_unplug(&touched, 2 * MIB).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random plugs, data spread over the units (freed in part again, so units are mixed),
    /// random targets: every pass isolates its units before moving, so no page moves
    /// twice in a pass; the order of teardown and UNPLUG holds; nothing is lost.
    #[test]
    fn no_page_moves_twice_in_a_pass(
        plugged in 8u64..48,
        data in 0usize..6000,
        freed in 0usize..3000,
        targets in proptest::collection::vec(0u64..48, 1..4),
    ) {
        let (mut v, mut d, mut m) = setup(2 * MIB, GIB, GIB);
        d.set_requested(plugged * 2 * MIB);
        converge(&mut v, &mut d, &mut m, 0);
        m.hold(data.min(plugged as usize * 512));
        // Free every other page of the first `freed`: units half used.
        let all = core::mem::take(&mut m.held);
        for (i, p) in all.into_iter().enumerate() {
            if i < freed && i % 2 == 1 {
                m.mm.free_pages(p, 0).unwrap();
            } else {
                m.held.push(p);
            }
        }
        let held = m.held.len();
        for t in targets {
            d.set_requested(t * 2 * MIB);
            converge(&mut v, &mut d, &mut m, 3);
            prop_assert_eq!(m.moved_twice, 0);
            prop_assert_eq!(d.plugged_bytes(), v.plugged_bytes());
            prop_assert_eq!(m.held.len(), held);
            m.mm.check().unwrap();
        }
        down_before_unplug(&m.trace.borrow(), 2 * MIB).map_err(TestCaseError::fail)?;
    }
}
