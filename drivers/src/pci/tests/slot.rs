//! The hotplug slot machine against QEMU's root port rules: arrival with PDC and ABP
//! together, eject with and without plugged memory, surprise removal, and status bits that
//! must be cleared even when ignored.

use crate::pci::slot::status::*;
use crate::pci::slot::{control, control_for, Action, Slot, SlotState};

fn run(slot: &mut Slot, status: u16) -> Vec<Action> {
    slot.event(status).as_slice().to_vec()
}

/// A slot QEMU powered off at reset (empty).
fn empty() -> Slot {
    let (slot, actions) = Slot::new(control::PCC | control::PIC_OFF, 0);
    assert_eq!(actions.as_slice(), &[]);
    assert_eq!(slot.state(), SlotState::Empty);
    slot
}

#[test]
fn arrival_with_pdc_and_abp_powers_on_then_enumerates() {
    let mut s = empty();
    // device_add: PDC and ABP together, presence set. ABP is not an eject.
    assert_eq!(
        run(&mut s, PDC | ABP | PDS),
        vec![Action::ClearStatus(PDC | ABP), Action::PowerOn]
    );
    assert_eq!(s.state(), SlotState::PoweringOn);
    // The power-on write completes.
    assert_eq!(
        run(&mut s, CC | PDS),
        vec![Action::ClearStatus(CC), Action::Enumerate]
    );
    assert_eq!(s.state(), SlotState::Occupied);
}

#[test]
fn eject_without_plugged_memory_powers_off_in_one_write() {
    let mut s = Slot::new(control::PIC_ON, PDS).0;
    assert_eq!(s.state(), SlotState::Occupied);
    assert_eq!(
        run(&mut s, ABP | PDS),
        vec![Action::ClearStatus(ABP), Action::Release]
    );
    assert_eq!(s.released(true).as_slice(), &[Action::PowerOff]);
    assert_eq!(s.state(), SlotState::PoweringOff);
    // The write's CC, then QEMU's PDC as it detaches: empty, nothing more to do.
    assert_eq!(run(&mut s, CC | PDS), vec![Action::ClearStatus(CC)]);
    assert_eq!(s.state(), SlotState::Empty);
    assert_eq!(run(&mut s, PDC), vec![Action::ClearStatus(PDC)]);
    assert_eq!(s.state(), SlotState::Empty);
    // The single write sets PCC and the indicator off together, keeping the enables.
    let ctl = control::EVENTS_ENABLED | control::PIC_ON;
    assert_eq!(
        control_for(Action::PowerOff, ctl),
        Some(control::EVENTS_ENABLED | control::PCC | control::PIC_OFF)
    );
    assert_eq!(
        control_for(
            Action::PowerOn,
            control::EVENTS_ENABLED | control::PCC | control::PIC_OFF
        ),
        Some(control::EVENTS_ENABLED | control::PIC_ON)
    );
    assert_eq!(control_for(Action::Enumerate, ctl), None);
}

#[test]
fn eject_refused_while_memory_is_plugged_keeps_the_device() {
    let mut s = Slot::new(control::PIC_ON, PDS).0;
    assert_eq!(
        run(&mut s, ABP | PDS),
        vec![Action::ClearStatus(ABP), Action::Release]
    );
    assert_eq!(s.released(false).as_slice(), &[]);
    assert_eq!(s.state(), SlotState::Occupied);
    // A later press (after the host emptied it) ejects.
    assert_eq!(
        run(&mut s, ABP | PDS),
        vec![Action::ClearStatus(ABP), Action::Release]
    );
    assert_eq!(s.released(true).as_slice(), &[Action::PowerOff]);
    // An answer out of turn does nothing.
    assert_eq!(s.released(true).as_slice(), &[]);
}

#[test]
fn surprise_removal_drops_the_device_untouched() {
    let vanished = vec![
        Action::ClearStatus(PDC),
        Action::SurpriseRemoval,
        Action::PowerOff,
    ];
    let mut s = Slot::new(control::PIC_ON, PDS).0;
    assert_eq!(run(&mut s, PDC), vanished);
    assert_eq!(s.state(), SlotState::Empty);
    // Also while an eject is being released.
    let mut s = Slot::new(control::PIC_ON, PDS).0;
    run(&mut s, ABP | PDS);
    assert_eq!(run(&mut s, PDC), vanished);
    // And a device that leaves before its power-on completed.
    let mut s = empty();
    run(&mut s, PDC | ABP | PDS);
    assert_eq!(
        run(&mut s, PDC | CC),
        vec![Action::ClearStatus(PDC | CC), Action::PowerOff]
    );
    assert_eq!(s.state(), SlotState::Empty);
}

#[test]
fn every_event_bit_is_cleared_even_when_ignored() {
    // Bits QEMU never raises, and events that mean nothing in the state: cleared anyway,
    // or the port never interrupts again.
    let mut s = empty();
    for bits in [DLLSC, PFD, MRLSC, CC, ABP, PDC, DLLSC | PFD | CC] {
        assert_eq!(
            run(&mut s, bits),
            vec![Action::ClearStatus(bits)],
            "{bits:#x}"
        );
        assert_eq!(s.state(), SlotState::Empty);
    }
    // PDS alone is a state, not an event: nothing to clear.
    let mut s = Slot::new(control::PIC_ON, PDS).0;
    assert_eq!(run(&mut s, PDS), vec![]);
    assert_eq!(
        run(&mut s, PDS | DLLSC | CC),
        vec![Action::ClearStatus(DLLSC | CC)]
    );
    assert_eq!(s.state(), SlotState::Occupied);
}

#[test]
fn boot_states() {
    // A device in a powered-off slot at boot is powered on.
    let (s, a) = Slot::new(control::PCC | control::PIC_OFF, PDS);
    assert_eq!(
        (s.state(), a.as_slice()),
        (SlotState::PoweringOn, &[Action::PowerOn][..])
    );
    // Empty but powered: empty.
    assert_eq!(Slot::new(control::PIC_ON, 0).0.state(), SlotState::Empty);
}
