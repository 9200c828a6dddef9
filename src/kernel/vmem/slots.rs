//! PCIe native hotplug of virtio-mem: the kernel side of each hotplug port's slot machine
//! (`hotmem_drivers::pci::slot`).
//!
//! Interrupt source of a port ([`port_irq`] is the one place that picks it): its MSI-X
//! vector 0 (QEMU's `pcie-root-port` has a one-entry table in BAR0, which enumeration
//! placed; the PCIe capability's Interrupt Message Number is 0) when an MSI controller
//! exists, else its INTx, swizzled like any function's. Either way the port signals when
//! (Slot Status & enabled events) goes from empty to non-empty, so the work clears every
//! status bit it handles. `irqs` lists the source as `pcie.BB:DD.F`.
//!
//! Flow: the port's interrupt schedules [`SLOTS`] (an INTx handler masks its line first;
//! an MSI is an edge with nothing to mask); the work, in the worker task, reads each port's
//! Slot Status, feeds the machine and carries out its actions in order, then unmasks the
//! INTx lines:
//! - `ClearStatus`: the 16-bit RW1C write, first, so no later event is lost;
//! - `PowerOn` / `PowerOff`: one Slot Control write each (PCC and the power indicator
//!   together); the write's completion is the Command Completed event, the machine's next
//!   input. QEMU latches CC during the write itself. On MSI the clear before it emptied the
//!   status, so CC is an edge: its MSI arrives and schedules the work again, which feeds it
//!   to the machine (measured: every hot-add takes at least two port MSIs, the arrival and
//!   the power-on's CC; without CCIE the hot-add stalls). The work still reads an MSI
//!   port's status once more after its actions: an event that latched between the work's
//!   read and its clear found the status non-empty and raised no edge, so only a re-read
//!   sees it; such bits (anything but CC, which only the work's own writes raise) are
//!   handled in another round, a lone CC is left to its interrupt. On INTx the CC interrupt was not seen on QEMU 10 while the
//!   work held the line masked, so there the work reads every INTx port's status again
//!   until nothing is latched (at most [`MAX_ROUNDS`] rounds, each only reading what is
//!   latched: nothing waits or sleeps); a CC latched later raises the interrupt;
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
//! Device interrupts on a line a port also uses (INTx): the handler here serves both (the
//! device's count and the convergence work, then the slot work), since a line has one
//! handler. Hot-added devices get this handler too.
//!
//! Locks: [`STATE`] (the host bridge, the ports, the ranges taken) is taken out by the work
//! and put back after, in thread context only; the work runs in the single worker task, so
//! it never overlaps a convergence pass (which is why no request is in flight at a release).
//! The interrupt handlers read only [`PORT_LINES`], set once at start.

use super::device::{self, ReleaseError, CONVERGE};
use super::probe::{self, Probed};
use crate::kernel::msi::{self, Kind, MsiError};
use crate::kernel::work::Work;
use alloc::format;
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
    /// Its hotplug events come as an MSI (else on its INTx line).
    msi: bool,
}

struct State {
    probed: Probed,
    ports: Vec<Port>,
}

/// See the module doc.
static STATE: IrqSpinLock<Option<State>> =
    IrqSpinLock::new(None).with_class(hotmem_arch::lock_class!("vmem_slots"));

/// The INTx lines of the ports not on MSI; set once at start, read by the handler.
static PORT_LINES: spin::Once<Vec<u32>> = spin::Once::new();

/// The slot work, run by the worker once registered (`kernel/mod.rs`): scheduled by a
/// port's interrupt.
pub static SLOTS: Work = Work::new(slot_work);

/// Where a port's hotplug events arrive.
#[derive(Clone, Copy)]
enum PortIrq {
    /// Its MSI-X vector 0, with this INTID (an LPI or a v2m SPI), handled by [`msi_handler`].
    Msi(u32),
    /// Its INTx line, handled by [`irq_handler`].
    Intx(u32),
}

impl core::fmt::Display for PortIrq {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            PortIrq::Msi(i) => write!(f, "MSI-X vector 0 -> {i}"),
            PortIrq::Intx(i) => write!(f, "INTx {i}"),
        }
    }
}

/// The interrupt source of a port's hotplug events (see the module doc): MSI-X vector 0,
/// set up masked and unmasked here, else the port's INTx route. Lists it in `irqs`.
fn port_irq(probed: &mut Probed, f: Option<&PciFunction>, df: DeviceFunction) -> Option<PortIrq> {
    let name = format!("pcie.{df}");
    let bars = probed.pci.bars(df).unwrap_or_default().to_vec();
    let bar_cpu = |bar: u8| bars.iter().find(|b| b.bar == bar).map(|b| b.cpu_addr);
    match msi::msix_enable(
        &mut probed.cam,
        df,
        bar_cpu,
        core::slice::from_ref(&name),
        msi_handler,
    ) {
        Ok(m) => {
            m.start(&mut probed.cam);
            return Some(PortIrq::Msi(m.intids[0]));
        }
        Err(MsiError::NoController) => {}
        Err(e) => log::warn!("pcie: {df}: no MSI-X for hotplug ({e:?}); INTx"),
    }
    let intid = f.and_then(|f| f.intid)?;
    msi::add_source(name, Kind::Intx, intid, None);
    Some(PortIrq::Intx(intid))
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

/// Handler of a port's hotplug MSI: an edge, nothing to mask or acknowledge at the port.
fn msi_handler(_intid: u32) {
    SLOTS.schedule();
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
        let f = probed.pci.functions().iter().find(|f| f.df == df).cloned();
        let irq = port_irq(&mut probed, f.as_ref(), df);
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
            "pcie: {df}: hotplug slot {:?}, interrupt {}, device {}",
            slot.state(),
            irq.map_or_else(|| "none".into(), |i| alloc::format!("{i}")),
            device.map_or_else(|| "none".into(), |id| alloc::format!("vmem{id}"))
        );
        let mut port = Port {
            df,
            slot,
            device,
            msi: matches!(irq, Some(PortIrq::Msi(_))),
        };
        probed.pci.clear_slot_status(df, sts & slot::status::EVENTS);
        for &a in actions.as_slice() {
            perform(&mut probed, &mut port, a);
        }
        let (ctl, _) = probed.pci.slot_registers(df).unwrap_or((ctl, 0));
        probed
            .pci
            .write_slot_control(df, ctl | control::EVENTS_ENABLED);
        if let Some(PortIrq::Intx(i)) = irq {
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

/// Rounds of [`slot_work`] over the ports' latched events: on INTx a Slot Control write
/// may latch Command Completed at once, which the next round handles; on MSI a round
/// follows only events that raised no edge (module doc). More rounds than actions a slot
/// can chain means a port that keeps raising events: the work runs again after
/// [`RETRY_NS`] (an INTx line would fire again, an MSI would not).
const MAX_ROUNDS: usize = 8;

/// Back-off before the work looks again at a port that kept raising events.
const RETRY_NS: u64 = 10_000_000;

/// The events of a port that the work handles in this round: on INTx all latched ones; on
/// MSI in a later round all but a lone Command Completed, whose MSI was raised (module doc).
fn events_now(port: &Port, round: usize, sts: u16) -> bool {
    let events = sts & slot::status::EVENTS;
    match (port.msi, round) {
        (true, 1..) => events & !slot::status::CC != 0,
        _ => events != 0,
    }
}

/// The deferred work: every port's latched events, round after round while a round found
/// any, then the INTx lines unmasked.
fn slot_work() {
    let Some(mut st) = STATE.lock().take() else {
        return;
    };
    let mut settled = false;
    for round in 0..MAX_ROUNDS {
        let mut any = false;
        for port in st.ports.iter_mut() {
            let Some((_, sts)) = st.probed.pci.slot_registers(port.df) else {
                continue;
            };
            if !events_now(port, round, sts) {
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
            settled = true;
            break;
        }
    }
    *STATE.lock() = Some(st);
    if !settled {
        // Events may still be latched, and on MSI no edge comes while they are.
        SLOTS.schedule_at(hotmem_arch::timer::now_ns().saturating_add(RETRY_NS));
    }
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
