//! PCIe native hotplug of virtio-mem: the kernel side of each hotplug port's slot machine
//! (`hotmem_drivers::pci::slot`).
//!
//! Flow: the port's interrupt (its INTx, swizzled like any function's: [`port_irq`] is the
//! one place that picks the source) masks the line and schedules [`SLOTS`]; the work, in
//! the worker task, reads each port's Slot Status, feeds the machine and carries out its
//! actions in order, then unmasks the lines:
//! - `ClearStatus`: the 16-bit RW1C write, first, so no later event is lost;
//! - `PowerOn` / `PowerOff`: one Slot Control write each (PCC and the power indicator
//!   together); the write's completion is the Command Completed event, the machine's next
//!   input. QEMU latches it during the write itself, and the interrupt that should follow
//!   was not seen on QEMU 10 while the work held the line masked, so the work reads every
//!   port's status again before it ends (at most [`MAX_ROUNDS`] rounds, each only reading
//!   what is latched: nothing waits or sleeps); a CC latched later raises the interrupt;
//! - `Enumerate`: the port's secondary bus is scanned and its BARs placed in the port's
//!   reservation (`PciHost::scan_slot`), each virtio-mem function is started like at boot
//!   (`probe::Probed::bring_up`) and added to the device list, which converges it;
//! - `Release` (an eject): `device::release` refuses while memory is plugged or requested
//!   (QEMU refuses `device_del` then, so this is a defence) and otherwise removes the device
//!   from `vmem`, resets it and frees its queue; the port's records go
//!   (`PciHost::clear_slot`) and the machine's answer powers the slot off in one write,
//!   which makes QEMU detach the device;
//! - `SurpriseRemoval`: the device is dropped without touching it (`release(.., true)`) and
//!   the kernel says so.
//!
//! Device interrupts on a line a port also uses: the handler here serves both (the
//! device's count and the convergence work, then the slot work), since a line has one
//! handler. Hot-added devices get this handler too.
//!
//! Locks: [`STATE`] (the host bridge, the ports, the ranges taken) is taken out by the work
//! and put back after, in thread context only; the work runs in the single worker task, so
//! it never overlaps a convergence pass (which is why no request is in flight at a release).
//! The interrupt handler reads only [`PORT_LINES`], set once at start.

use super::device::{self, ReleaseError, CONVERGE};
use super::probe::{self, Probed};
use crate::kernel::work::Work;
use alloc::vec::Vec;
use hotmem::vmem::PciAddr;
use hotmem_arch::cpu::IrqSpinLock;
use hotmem_arch::gic::{self, Trigger};
use hotmem_drivers::pci::slot::{self, control, Action, Slot};
use hotmem_drivers::pci::PciFunction;
use virtio_drivers::transport::pci::bus::DeviceFunction;

/// One hotplug port.
struct Port {
    df: DeviceFunction,
    slot: Slot,
    /// The vmem id of the device in the slot, if one is bound.
    device: Option<usize>,
}

struct State {
    probed: Probed,
    ports: Vec<Port>,
}

/// See the module doc.
static STATE: IrqSpinLock<Option<State>> =
    IrqSpinLock::new(None).with_class(hotmem_arch::lock_class!("vmem_slots"));

/// The interrupt lines of the ports; set once at start, read by the handler.
static PORT_LINES: spin::Once<Vec<u32>> = spin::Once::new();

/// The slot work, run by the worker once registered (`kernel/mod.rs`): scheduled by a
/// port's interrupt.
pub static SLOTS: Work = Work::new(slot_work);

/// The interrupt source of a port's hotplug events: its INTx route for now.
fn port_irq(f: &PciFunction) -> Option<u32> {
    f.intid
}

fn addr(df: DeviceFunction) -> PciAddr {
    PciAddr {
        bus: df.bus,
        device: df.device,
        function: df.function,
    }
}

/// Interrupt handler of every line a port or a hot-added device uses: mask it, count it
/// for the devices on it (which schedules the convergence work), and schedule the slot
/// work when a port is on it.
fn irq_handler(intid: u32) {
    device::irq_handler(intid);
    if PORT_LINES.get().is_some_and(|l| l.contains(&intid)) {
        SLOTS.schedule();
    }
}

/// Takes over the host bridge after probe: one machine per hotplug port, from the slot's
/// registers (a slot occupied at boot is bound to the device probed in it), stale events
/// cleared, hotplug interrupts enabled.
pub(super) fn start(mut probed: Probed) {
    let ports_df = probed.pci.hotplug_ports();
    let mut ports = Vec::with_capacity(ports_df.len());
    let mut lines = Vec::new();
    for df in ports_df {
        let Some((ctl, sts)) = probed.pci.slot_registers(df) else {
            continue;
        };
        let f = probed.pci.functions().iter().find(|f| f.df == df);
        let intid = f.and_then(port_irq);
        let buses = f.and_then(|f| f.bridge);
        let (slot, actions) = Slot::new(ctl, sts);
        let device = buses.and_then(|b| {
            device::id_at(PciAddr {
                bus: b.secondary,
                device: 0,
                function: 0,
            })
        });
        log::info!(
            "pcie: {df}: hotplug slot {:?}, interrupt {intid:?}, device {}",
            slot.state(),
            device.map_or_else(|| "none".into(), |id| alloc::format!("vmem{id}"))
        );
        let mut port = Port { df, slot, device };
        probed.pci.clear_slot_status(df, sts & slot::status::EVENTS);
        for &a in actions.as_slice() {
            perform(&mut probed, &mut port, a);
        }
        let (ctl, _) = probed.pci.slot_registers(df).unwrap_or((ctl, 0));
        probed
            .pci
            .write_slot_control(df, ctl | control::EVENTS_ENABLED);
        if let Some(i) = intid {
            lines.push(i);
        }
        ports.push(port);
    }
    PORT_LINES.call_once(|| lines.clone());
    *STATE.lock() = Some(State { probed, ports });
    for i in lines {
        probe::enable_irq(&"pcie: hotplug port", Some(i), irq_handler);
    }
    // Events raised before the lines were enabled (the enable writes' Command Completed).
    SLOTS.schedule();
}

/// Rounds of [`slot_work`] over the ports' latched events: a Slot Control write may latch
/// Command Completed at once, which the next round handles; more rounds than actions a
/// slot can chain means a port that keeps raising events, left to its next interrupt.
const MAX_ROUNDS: usize = 8;

/// The deferred work: every port's latched events, round after round while a round found
/// any, then the port lines unmasked.
fn slot_work() {
    let Some(mut st) = STATE.lock().take() else {
        return;
    };
    for _ in 0..MAX_ROUNDS {
        let mut any = false;
        for port in st.ports.iter_mut() {
            let Some((_, sts)) = st.probed.pci.slot_registers(port.df) else {
                continue;
            };
            if sts & slot::status::EVENTS == 0 {
                continue;
            }
            any = true;
            log::debug!("pcie: {}: slot status {sts:#06x}", port.df);
            let actions = port.slot.event(sts);
            for &a in actions.as_slice() {
                perform(&mut st.probed, port, a);
            }
        }
        if !any {
            break;
        }
    }
    *STATE.lock() = Some(st);
    for i in PORT_LINES.get().into_iter().flatten() {
        let _ = gic::enable(*i, Trigger::Level);
    }
}

/// Carries out one action of `port`'s machine (module doc).
fn perform(probed: &mut Probed, port: &mut Port, action: Action) {
    let df = port.df;
    match action {
        Action::ClearStatus(bits) => probed.pci.clear_slot_status(df, bits),
        Action::PowerOn | Action::PowerOff => {
            let (ctl, _) = probed.pci.slot_registers(df).unwrap_or_default();
            if let Some(v) = slot::control_for(action, ctl) {
                probed.pci.write_slot_control(df, v);
            }
            log::info!(
                "pcie: {df}: slot power {}",
                if action == Action::PowerOn {
                    "on"
                } else {
                    "off"
                }
            );
        }
        Action::Enumerate => enumerate(probed, port),
        Action::Release => {
            let done = match port.device {
                None => true,
                Some(id) => match device::release(id, false) {
                    Ok(region) => {
                        probed.give_back(region);
                        log::info!("vmem{id}: ejected from {}", addr(df));
                        true
                    }
                    Err(ReleaseError::NoDevice) => true,
                    Err(ReleaseError::Plugged) => {
                        log::warn!("vmem{id}: eject refused: memory still plugged or requested");
                        false
                    }
                },
            };
            if done {
                port.device = None;
                probed.pci.clear_slot(df);
            }
            for &a in port.slot.released(done).as_slice() {
                perform(probed, port, a);
            }
        }
        Action::SurpriseRemoval => {
            if let Some(id) = port.device.take() {
                let _ = device::release(id, true);
                log::warn!(
                    "vmem{id}: device behind {} vanished without an eject; dropped, never touched again",
                    addr(df)
                );
            }
            probed.pci.clear_slot(df);
        }
    }
}

/// The slot is powered: enumerate behind the port and start what is virtio-mem.
fn enumerate(probed: &mut Probed, port: &mut Port) {
    let functions = match probed.pci.scan_slot(port.df) {
        Ok(f) => f,
        Err(e) => {
            log::error!("pcie: {}: {e}", port.df);
            return;
        }
    };
    let mut found = Vec::new();
    for f in &functions {
        if let Some((d, l)) = probed.bring_up(f) {
            log::info!("vmem{}: hot-added at {}", d.policy.id, addr(f.df));
            probe::enable_irq(&d.pci, d.intid, irq_handler);
            port.device = Some(d.policy.id);
            found.push((d, l));
        }
    }
    if found.is_empty() {
        log::warn!("pcie: {}: no virtio-mem device in the slot", port.df);
        return;
    }
    device::add(found);
    CONVERGE.schedule();
}
