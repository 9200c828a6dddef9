//! What the kernel publishes and prints about a device (`status.rs`) against the fake
//! device: the `vmem` record is busy from the moment the configuration changes until a
//! finished pass answers it, the final record only after the pass, `guest_plugged` is the
//! policy's bitmap (not the device's count), `moved`/`left` follow an unplug, the STATE
//! spot check, and the progress line and its pace.

use super::fake::{FakeDevice, TestMem};
use super::{converge, setup, GIB, MIB};
use crate::vmem::*;
use hotmem_arch::addr::PhysRange;
use hotmem_drivers::virtio_mem::BlockState;

/// The record `vmem` would print now: the policy's snapshot under the device's newest
/// configuration.
fn record(v: &Vmem, d: &mut FakeDevice, unanswered: bool) -> Record {
    let live = d.config().unwrap();
    Record::new(&v.snapshot(), Some(&live), unanswered)
}

/// Steps one pass to its end, checking the record after each step that is not the last;
/// returns the number of steps.
fn pass_checking(
    v: &mut Vmem,
    d: &mut FakeDevice,
    m: &mut TestMem,
    mut mid: impl FnMut(&Vmem, &mut FakeDevice, usize),
) -> usize {
    for n in 1..10_000 {
        if v.step(d, m, 1_000 + n as u64) != Next::Again {
            return n;
        }
        mid(v, d, n);
    }
    panic!("the pass does not end");
}

#[test]
fn a_config_change_is_busy_at_once_and_ok_only_after_the_pass() {
    let (mut v, mut d, mut m) = setup(2 * MIB, 4 * GIB, GIB);
    d.set_requested(GIB);
    converge(&mut v, &mut d, &mut m, 0);
    let r = record(&v, &mut d, false);
    assert_eq!(
        (r.state, r.reason, r.pending()),
        (State::Ok, Reason::None, 0)
    );
    // The host asks for more: no step has seen it, yet the record shows the new request,
    // busy; an interrupt no pass answered is busy on its own.
    d.set_requested(3 * GIB);
    let r = record(&v, &mut d, false);
    assert_eq!(r.state, State::Busy);
    assert_eq!(r.cfg.requested_size, 3 * GIB);
    assert_eq!(r.pending(), 2 * GIB);
    let s = v.snapshot();
    assert_eq!(Record::new(&s, Some(&s.cfg), true).state, State::Busy);
    assert_eq!(Record::new(&s, Some(&s.cfg), false).state, State::Ok);
    // During the pass every record is busy; the request changes once more mid-pass.
    let steps = pass_checking(&mut v, &mut d, &mut m, |v, d, n| {
        let r = record(v, d, false);
        assert_eq!(r.state, State::Busy, "after step {n}: {r:?}");
        if n == 1 {
            d.set_requested(2 * GIB);
        }
    });
    assert!(steps >= 2, "{steps} steps");
    let r = record(&v, &mut d, false);
    assert_eq!((r.state, r.reason), (State::Ok, Reason::None));
    assert_eq!(r.cfg.plugged_size, 2 * GIB);
    assert_eq!(r.cfg.requested_size, 2 * GIB);
    assert!(r.settled());
}

#[test]
fn never_ok_while_the_policy_has_work() {
    let (mut v, mut d, mut m) = setup(2 * MIB, 4 * GIB, GIB);
    d.set_requested(GIB);
    // A step that plugged: state ok, but the policy is not done.
    assert_eq!(v.step(&mut d, &mut m, 1_000), Next::Again);
    assert_eq!(v.state(), State::Ok);
    let s = v.snapshot();
    assert!(s.working);
    assert_eq!(Record::new(&s, Some(&s.cfg), false).state, State::Busy);
    // A stall is shown as a stall (it settles `vmem wait`), a broken device as broken.
    let mut stalled = s;
    stalled.state = State::Stalled;
    stalled.reason = Reason::NoMemory;
    let r = Record::new(&stalled, Some(&s.cfg), false);
    assert_eq!((r.state, r.reason), (State::Stalled, Reason::NoMemory));
    assert!(r.settled());
    let mut broken = s;
    broken.state = State::Broken;
    assert_eq!(Record::new(&broken, None, true).state, State::Broken);
    // Granularity: converged below the request, ok with the reason.
    let (mut v, mut d, mut m) = setup(MIB, GIB, GIB);
    d.set_requested(5 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    let r = record(&v, &mut d, false);
    assert_eq!((r.state, r.reason), (State::Ok, Reason::Granularity));
    assert_eq!(r.pending(), MIB);
}

#[test]
fn guest_plugged_is_the_bitmap_and_moved_left_follow_an_unplug() {
    let (mut v, mut d, mut m) = setup(2 * MIB, GIB, 64 * MIB);
    d.set_requested(64 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(v.snapshot().guest_plugged, 64 * MIB);
    assert_eq!((v.snapshot().moved, v.snapshot().left), (0, 0));
    // A device whose count is off: `plugged_kib` shows it, `guest_plugged_kib` does not.
    d.plugged_size_error = 2 * MIB;
    let r = record(&v, &mut d, false);
    assert_eq!(r.cfg.plugged_size, 66 * MIB);
    assert_eq!(r.guest_plugged, 64 * MIB);
    d.plugged_size_error = 0;
    // Used memory to move out: the unplug goes unit by unit; `left` shrinks as the bitmap
    // does, and `moved` counts what moved.
    m.hold(600);
    d.set_requested(0);
    let mut lefts = Vec::new();
    pass_checking(&mut v, &mut d, &mut m, |v, _, _| {
        let s = v.snapshot();
        assert_eq!(s.left, s.guest_plugged, "unplugging to 0");
        lefts.push(s.left);
    });
    assert!(lefts.windows(2).all(|w| w[1] <= w[0]), "{lefts:?}");
    assert!(lefts.len() >= 2, "{lefts:?}");
    let s = v.snapshot();
    assert_eq!((s.guest_plugged, s.left, s.to_plug), (0, 0, 0));
    assert_eq!(s.moved, 600 * 4096, "every held page moved once");
    assert_eq!(s.moved, s.progress.migrated_bytes);
    // A plug keeps the last unplug's `moved`; the next unplug starts it again.
    d.set_requested(4 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(v.snapshot().moved, 600 * 4096);
    d.set_requested(0);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(v.snapshot().moved, 0);
}

#[test]
fn state_query_compares_the_device_with_the_bitmap() {
    let (mut v, mut d, mut m) = setup(MIB, GIB, GIB);
    d.set_requested(8 * MIB);
    converge(&mut v, &mut d, &mut m, 0);
    let base = d.cfg.addr;
    let range = |off: u64, size: u64| PhysRange {
        base: base + off * MIB,
        size: size * MIB,
    };
    let q = |v: &Vmem, d: &mut FakeDevice, r| v.query_state(d, r).map(|s| (s.device, s.guest));
    use BlockState::*;
    assert_eq!(q(&v, &mut d, range(0, 8)), Ok((Plugged, Plugged)));
    assert_eq!(q(&v, &mut d, range(8, 8)), Ok((Unplugged, Unplugged)));
    assert_eq!(q(&v, &mut d, range(4, 8)), Ok((Mixed, Mixed)));
    // Half a unit (1 MiB of a 2 MiB unit): the guest holds the whole unit.
    assert_eq!(q(&v, &mut d, range(1, 1)), Ok((Plugged, Plugged)));
    // The device dropped a block behind the policy's back: the query shows it.
    d.plugged[3] = false;
    assert_eq!(q(&v, &mut d, range(0, 8)), Ok((Mixed, Plugged)));
    d.plugged[3] = true;
    // Refusals, before anything is sent.
    let sent = d.log.len();
    let mut e = |r| v.query_state(&mut d, r).unwrap_err();
    assert_eq!(e(range(0, 0)), QueryError::Empty);
    assert_eq!(
        e(PhysRange {
            base: base + 4096,
            size: MIB
        }),
        QueryError::Unaligned
    );
    let usable_mib = v.config().usable_region_size / MIB;
    assert_eq!(e(range(usable_mib - 1, 2)), QueryError::OutsideUsable);
    assert_eq!(
        e(PhysRange {
            base: base - MIB,
            size: MIB
        }),
        QueryError::OutsideUsable
    );
    assert_eq!(d.log.len(), sent);
    // More than one request covers.
    let (mut v2, mut d2, mut m2) = setup(MIB, 128 * GIB, GIB);
    d2.set_requested(0);
    converge(&mut v2, &mut d2, &mut m2, 0);
    d2.cfg.usable_region_size = 128 * GIB;
    v2.step(&mut d2, &mut m2, 1_000);
    let base2 = d2.cfg.addr;
    assert_eq!(
        v2.query_state(&mut d2, range_at(base2, 65_536 * MIB)),
        Err(QueryError::TooManyBlocks)
    );
    assert!(v2
        .query_state(&mut d2, range_at(base2, 65_535 * MIB))
        .is_ok());
    // The device's refusals.
    d.script.push_back(Response::Busy);
    assert_eq!(q(&v, &mut d, range(0, 2)), Err(QueryError::DeviceBusy));
    d.script.push_back(Response::Nack);
    assert_eq!(q(&v, &mut d, range(0, 2)), Err(QueryError::DeviceError));
    v.set_broken();
    assert_eq!(q(&v, &mut d, range(0, 2)), Err(QueryError::DeviceBroken));
}

fn range_at(base: u64, size: u64) -> PhysRange {
    PhysRange { base, size }
}

#[test]
fn progress_lines_say_what_is_done_and_come_at_a_pace() {
    let line = ProgressLine {
        id: 0,
        unplug: true,
        done: 1229 * MIB,
        total: 3 * GIB,
        migrated: 300 * MIB,
    };
    assert_eq!(
        line.to_string(),
        "vmem0: unplug 1.2 of 3.0 GiB done, 300 MiB migrated"
    );
    let plug = ProgressLine {
        id: 1,
        unplug: false,
        done: 0,
        total: 256 * GIB,
        migrated: 0,
    };
    assert_eq!(plug.to_string(), "vmem1: plug 0.0 of 256.0 GiB done");
    // From a snapshot: what is done and what is left make the total.
    let (mut v, mut d, mut m) = setup(GIB, 4 * GIB, GIB);
    assert_eq!(v.snapshot().progress_line(0), None);
    let mut s = v.snapshot();
    s.to_plug = GIB;
    s.progress.plugged_bytes = 2 * GIB;
    let l = s.progress_line(0).unwrap();
    assert_eq!((l.unplug, l.done, l.total), (false, 2 * GIB, 3 * GIB));
    s.to_plug = 0;
    s.left = GIB;
    s.progress.unplugged_bytes = GIB;
    s.progress.migrated_bytes = 5 * MIB;
    let l = s.progress_line(0).unwrap();
    assert_eq!(
        (l.unplug, l.done, l.total, l.migrated),
        (true, GIB, 2 * GIB, 5 * MIB)
    );
    d.set_requested(3 * GIB);
    converge(&mut v, &mut d, &mut m, 0);
    assert_eq!(v.snapshot().progress_line(0), None);
    // The pace: publish every 100 ms; lines once the resize ran 1 s, then every second.
    let s = 1_000_000_000;
    let mut p = Pace::new(0);
    assert!(!p.publish_due(PUBLISH_EVERY_NS - 1));
    assert!(p.publish_due(PUBLISH_EVERY_NS));
    assert!(!p.publish_due(PUBLISH_EVERY_NS + 1));
    assert!(!p.line_due(s / 2, Some(0)));
    assert!(!p.line_due(5 * s, None));
    assert!(p.line_due(s, Some(0)));
    assert!(!p.line_due(s + s / 2, Some(0)));
    assert!(p.line_due(2 * s, Some(0)));
}

#[test]
fn record_carries_the_device_id_and_pci_address() {
    let (v, mut d, _) = setup(MIB, GIB, GIB);
    let r = record(&v, &mut d, false);
    assert_eq!((r.id, r.pci, r.pci_text().as_str()), (0, None, "-"));
    let pci = PciAddr {
        bus: 0x1a,
        device: 0x1f,
        function: 7,
    };
    let r = r.device(7, pci);
    assert_eq!((r.id, r.pci), (7, Some(pci)));
    assert_eq!(r.pci_text(), "1a:1f.7");
    // The rest of the record is untouched.
    assert_eq!(r.cfg, record(&v, &mut d, false).cfg);
}
