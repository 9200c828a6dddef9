//! PCIe native hotplug of one slot, as a pure state machine over the Slot Status and Slot
//! Control registers (PCIe Base 4.0 §7.5.3.10-11); the kernel feeds it what it reads and
//! carries out the [`Action`]s it returns, in order.
//!
//! # The port's rules (QEMU's `pcie-root-port`, the reference this follows)
//! - An empty slot is powered off at reset (Power Controller Control = 1, power indicator
//!   off); a cold-plugged device's slot is powered on.
//! - Only Presence Detect Changed (PDC), Attention Button Pressed (ABP) and Command
//!   Completed (CC) are raised, never Data Link Layer State Changed. A hot-add raises PDC and
//!   ABP together, with Presence Detect State (PDS) set; `device_del` raises ABP alone.
//! - The interrupt fires only when (status & enabled) goes from empty to non-empty: every
//!   event bit that was read set is written back (RW1C) before anything else, including bits
//!   this machine ignores, or the next event is lost.
//! - Every Slot Control write raises CC. The port detaches a device when one Slot Control
//!   write sets PCC = 1 with the power indicator off on a populated slot.
//!
//! # States and transitions (one line each; "clear" = [`Action::ClearStatus`] first)
//! - `Empty` + PDC with PDS → [`Action::PowerOn`] (PCC = 0, indicator on), `PoweringOn`. The
//!   ABP of the same event is part of the arrival, not an eject.
//! - `PoweringOn` + CC (PDS still set) → [`Action::Enumerate`], `Occupied`: the kernel scans
//!   the secondary bus, places BARs in the port's reservation and probes the device.
//! - `PoweringOn` + PDS gone → [`Action::PowerOff`], `Empty` (the device left before it was
//!   used).
//! - `Occupied` + ABP with PDS → [`Action::Release`], `Releasing`: the kernel releases the
//!   device (refusing while memory is plugged) and answers [`Slot::released`]: done →
//!   [`Action::PowerOff`] in one write, `PoweringOff`; refused → `Occupied` again.
//! - `Occupied` or `Releasing` + PDS gone without an eject → [`Action::SurpriseRemoval`] (the
//!   device is gone: never touch it, nor its memory) then [`Action::PowerOff`], `Empty`.
//! - `PoweringOff` + CC or PDC → `Empty` (the port detached the device).
//! - Anything else: cleared and ignored.
//!
//! The machine never waits: a Slot Control write's completion is the next CC event.

/// Slot Status bits.
pub mod status {
    /// Attention Button Pressed.
    pub const ABP: u16 = 1 << 0;
    /// Power Fault Detected.
    pub const PFD: u16 = 1 << 1;
    /// MRL Sensor Changed.
    pub const MRLSC: u16 = 1 << 2;
    /// Presence Detect Changed.
    pub const PDC: u16 = 1 << 3;
    /// Command Completed.
    pub const CC: u16 = 1 << 4;
    /// Presence Detect State (read-only, not an event).
    pub const PDS: u16 = 1 << 6;
    /// Data Link Layer State Changed.
    pub const DLLSC: u16 = 1 << 8;
    /// Every RW1C event bit.
    pub const EVENTS: u16 = ABP | PFD | MRLSC | PDC | CC | DLLSC;
}

/// Slot Control bits.
pub mod control {
    /// Attention Button Pressed Enable.
    pub const ABPE: u16 = 1 << 0;
    /// Presence Detect Changed Enable.
    pub const PDCE: u16 = 1 << 3;
    /// Command Completed Interrupt Enable.
    pub const CCIE: u16 = 1 << 4;
    /// Hot-Plug Interrupt Enable.
    pub const HPIE: u16 = 1 << 5;
    /// Power Indicator Control field (bits 9:8).
    pub const PIC_MASK: u16 = 3 << 8;
    /// Power indicator on.
    pub const PIC_ON: u16 = 1 << 8;
    /// Power indicator off.
    pub const PIC_OFF: u16 = 3 << 8;
    /// Power Controller Control: 1 = power off.
    pub const PCC: u16 = 1 << 10;
    /// The interrupts the machine needs.
    pub const EVENTS_ENABLED: u16 = ABPE | PDCE | CCIE | HPIE;
}

/// Where a slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// No device in use; the slot is (being) powered off.
    Empty,
    /// Power-on written; waiting for its Command Completed.
    PoweringOn,
    /// Powered and enumerated.
    Occupied,
    /// Eject asked; waiting for the kernel to release the device ([`Slot::released`]).
    Releasing,
    /// Power-off written; waiting for the port to detach the device.
    PoweringOff,
}

/// What the kernel must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write these bits to Slot Status (RW1C): every event bit that was read set.
    ClearStatus(u16),
    /// One Slot Control write: PCC = 0, power indicator on.
    PowerOn,
    /// Enumerate the secondary bus and probe what is there.
    Enumerate,
    /// Release the device (reset it, free its state) and answer [`Slot::released`].
    Release,
    /// One Slot Control write: PCC = 1, power indicator off (detaches a populated slot).
    PowerOff,
    /// The device vanished: drop it without touching it or its memory.
    SurpriseRemoval,
}

/// The actions of one event, in order (at most a clear and two more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actions {
    list: [Action; 3],
    len: usize,
}

impl Actions {
    fn new() -> Actions {
        Actions {
            list: [Action::ClearStatus(0); 3],
            len: 0,
        }
    }

    fn push(&mut self, a: Action) {
        // At most three per event by construction (module doc).
        self.list[self.len] = a;
        self.len += 1;
    }

    /// The actions, in order.
    pub fn as_slice(&self) -> &[Action] {
        &self.list[..self.len]
    }
}

/// One hotplug slot's state machine (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    state: SlotState,
}

impl Slot {
    /// The machine of a slot found at boot with these Slot Control and Slot Status values:
    /// a present, powered device was enumerated at boot (`Occupied`); a present device in a
    /// powered-off slot is powered on (the returned actions); otherwise `Empty`.
    pub fn new(slot_control: u16, slot_status: u16) -> (Slot, Actions) {
        let present = slot_status & status::PDS != 0;
        let powered = slot_control & control::PCC == 0;
        let mut actions = Actions::new();
        let state = match (present, powered) {
            (true, true) => SlotState::Occupied,
            (true, false) => {
                actions.push(Action::PowerOn);
                SlotState::PoweringOn
            }
            (false, _) => SlotState::Empty,
        };
        (Slot { state }, actions)
    }

    /// Where the slot is.
    pub fn state(&self) -> SlotState {
        self.state
    }

    /// One interrupt's worth of Slot Status (as read). The first action always clears
    /// every event bit that was set.
    pub fn event(&mut self, slot_status: u16) -> Actions {
        use status::*;
        let mut actions = Actions::new();
        let events = slot_status & EVENTS;
        if events != 0 {
            actions.push(Action::ClearStatus(events));
        }
        let present = slot_status & PDS != 0;
        let (pdc, abp, cc) = (events & PDC != 0, events & ABP != 0, events & CC != 0);
        let next = match self.state {
            SlotState::Empty if pdc && present => {
                actions.push(Action::PowerOn);
                SlotState::PoweringOn
            }
            SlotState::PoweringOn if !present => {
                actions.push(Action::PowerOff);
                SlotState::Empty
            }
            SlotState::PoweringOn if cc => {
                actions.push(Action::Enumerate);
                SlotState::Occupied
            }
            SlotState::Occupied | SlotState::Releasing if !present => {
                actions.push(Action::SurpriseRemoval);
                actions.push(Action::PowerOff);
                SlotState::Empty
            }
            SlotState::Occupied if abp => {
                actions.push(Action::Release);
                SlotState::Releasing
            }
            SlotState::PoweringOff if cc || pdc => SlotState::Empty,
            s => s,
        };
        self.state = next;
        actions
    }

    /// The kernel's answer to [`Action::Release`]: `true` once the device is released (then
    /// power it off), `false` when it refused (the slot stays `Occupied`).
    pub fn released(&mut self, done: bool) -> Actions {
        let mut actions = Actions::new();
        if self.state != SlotState::Releasing {
            return actions;
        }
        if done {
            actions.push(Action::PowerOff);
            self.state = SlotState::PoweringOff;
        } else {
            self.state = SlotState::Occupied;
        }
        actions
    }
}

/// The Slot Control value for `action` (`PowerOn` or `PowerOff`) from the current value:
/// one write that sets PCC and the power indicator together and keeps the interrupt
/// enables. `None` for the other actions.
pub fn control_for(action: Action, slot_control: u16) -> Option<u16> {
    let keep = slot_control & !(control::PCC | control::PIC_MASK);
    match action {
        Action::PowerOn => Some(keep | control::PIC_ON),
        Action::PowerOff => Some(keep | control::PCC | control::PIC_OFF),
        _ => None,
    }
}
