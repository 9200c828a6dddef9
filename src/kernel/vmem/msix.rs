//! How a virtio-mem device interrupts: MSI-X (two vectors: 0 configuration change, 1 the
//! request queue) when an MSI controller exists and the device accepts the vectors, else
//! its INTx line.
//!
//! Bring-up, per device, in probe's order:
//! 1. [`prepare`], after the BARs are placed and before the driver starts: MSI-X is set up
//!    with the function masked (`msi::msix_enable`), and a [`Vectors`] over the device's
//!    common configuration is made for the transport, which programs `msix_config` and
//!    `queue_msix_vector` in its `queue_set`, i.e. after reset and feature negotiation and
//!    before the queue is enabled (virtio 1.2, 4.1.5.1.2).
//! 2. the driver starts (`VirtioMem::new`);
//! 3. [`finish`]: if both vectors read back as written, the function is unmasked and the
//!    device's INTx line (which MSI-X turns off) gets a handler that only masks it, so a
//!    stray INTx would show in its count; if the device answered NO_VECTOR (or anything
//!    else), MSI-X is disabled again and the device stays on INTx, with a warning.
//!
//! Interrupts: an MSI is an edge with no line to deassert, so the handler (`device`'s
//! `msi_handler`, through [`note`]) only notes which device and, for vector 0, that its
//! configuration changed; the work then asks [`config_changed`] instead of reading the
//! ISR (with MSI-X the ISR is not read). Both tables below are written in thread context
//! before the function is unmasked and only read by the handler: atomics, no lock.

use super::hal::KernelHal;
use crate::kernel::msi::{self, Kind, MsixFunction};
use alloc::format;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hotmem_arch::addr::PhysRange;
use hotmem_arch::gic::{self, Trigger};
use hotmem_arch::irq;
use hotmem_drivers::pci::{BarAssignment, Ecam};
use hotmem_drivers::virtio_msix::{find_common_cfg, Outcome, VectorPlan, Vectors};
use virtio_drivers::transport::pci::bus::DeviceFunction;
use virtio_drivers::Hal;

/// Devices with MSI-X state here; later ones stay on INTx.
const MAX_DEVS: usize = 16;
const PLAN: VectorPlan = VectorPlan {
    config: 0,
    queue: 1,
};

/// Per MSI INTID: `VALID | intid << 16 | dev << 1 | is_config`.
static ROUTES: [AtomicU64; 2 * MAX_DEVS] = [const { AtomicU64::new(0) }; 2 * MAX_DEVS];
const VALID: u64 = 1 << 63;
/// Per device: on MSI-X, and a configuration-change MSI not yet seen by the work.
static ON_MSIX: [AtomicBool; MAX_DEVS] = [const { AtomicBool::new(false) }; MAX_DEVS];
static CONFIG_PENDING: [AtomicBool; MAX_DEVS] = [const { AtomicBool::new(false) }; MAX_DEVS];

/// MSI-X half-way set up: masked, its vectors to be programmed by the transport.
pub(super) struct Prepared {
    function: MsixFunction,
    vectors: Arc<Vectors>,
}

impl Prepared {
    /// The vectors for the transport's `queue_set` hook.
    pub(super) fn vectors(&self) -> Arc<Vectors> {
        self.vectors.clone()
    }
}

/// Step 1 (see the module doc); `None` (logged) leaves the device on INTx.
pub(super) fn prepare(
    id: usize,
    cam: &mut Ecam,
    df: DeviceFunction,
    bars: &[BarAssignment],
    handler: irq::Handler,
) -> Option<Prepared> {
    if id >= MAX_DEVS {
        return None;
    }
    let bar_cpu = |bar: u8| bars.iter().find(|b| b.bar == bar).map(|b| b.cpu_addr);
    let (bar, offset) = match find_common_cfg(cam, df) {
        Ok(Some(c)) => c,
        _ => {
            log::warn!("vmem{id}: no virtio common configuration capability; INTx");
            return None;
        }
    };
    let names = [format!("vmem{id}.config"), format!("vmem{id}.queue")];
    let function = match msi::msix_enable(cam, df, bar_cpu, &names, handler) {
        Ok(f) => f,
        Err(msi::MsiError::NoController) => return None,
        Err(e) => {
            log::warn!("vmem{id}: no MSI-X ({e:?}); INTx");
            return None;
        }
    };
    let Some(common) = bar_cpu(bar).and_then(|b| b.checked_add(u64::from(offset))) else {
        function.abandon(cam);
        return None;
    };
    let regs = PhysRange {
        base: common,
        size: 0x1c,
    };
    // SAFETY: the common configuration lies inside a BAR probe assigned; the Hal maps it
    // as Device memory for good (as it does for the transport itself).
    let va = unsafe { KernelHal::mmio_phys_to_virt(regs.base, regs.size as usize) };
    // SAFETY: `va` maps the device's common configuration (above) for the rest of the run.
    let vectors = Arc::new(unsafe { Vectors::new(va.as_ptr() as usize, PLAN) });
    Some(Prepared { function, vectors })
}

/// Step 3 (see the module doc): returns the INTx INTID the device uses, `None` on MSI-X
/// (or without any interrupt, which is logged).
pub(super) fn finish(
    id: usize,
    cam: &mut Ecam,
    prepared: Option<Prepared>,
    intx: Option<u32>,
) -> Option<u32> {
    let Some(p) = prepared else {
        match intx {
            Some(intid) => msi::add_source(format!("vmem{id}.intx"), Kind::Intx, intid, None),
            None => log::warn!("vmem{id}: no interrupt route; resizes only converge on retries"),
        }
        return intx;
    };
    match p.vectors.outcome() {
        Outcome::Msix => {
            let [config, queue] = [p.function.intids[0], p.function.intids[1]];
            for (slot, (intid, is_config)) in
                [(config, true), (queue, false)].into_iter().enumerate()
            {
                let v = VALID | u64::from(intid) << 16 | (id as u64) << 1 | is_config as u64;
                ROUTES[2 * id + slot].store(v, Ordering::Release);
            }
            ON_MSIX[id].store(true, Ordering::Release);
            p.function.start(cam);
            log::info!(
                "vmem{id}: MSI-X: config vector 0 -> {} {config}, queue vector 1 -> {} {queue}",
                p.function.kind.name(),
                p.function.kind.name()
            );
            if let Some(intid) = intx {
                // MSI-X turned the line off; count (and mask) it if it fires anyway. A line
                // that already has a handler is shared (a device behind a root port has the
                // port's INTx) and keeps it: replacing it would mask the port's hotplug
                // interrupts for good.
                if irq::register_if_free(intid, stray_intx).is_ok() {
                    let _ = gic::enable(intid, Trigger::Level);
                }
                msi::add_source(format!("vmem{id}.intx"), Kind::Intx, intid, None);
            }
            None
        }
        refused => {
            log::warn!("vmem{id}: device refused its MSI-X vectors ({refused:?}); using INTx");
            p.function.abandon(cam);
            if let Some(intid) = intx {
                msi::add_source(format!("vmem{id}.intx"), Kind::Intx, intid, None);
            }
            intx
        }
    }
}

/// A device that failed between [`prepare`] and [`finish`]: MSI-X off, handlers gone.
pub(super) fn abandon(cam: &mut Ecam, prepared: Option<Prepared>) {
    if let Some(p) = prepared {
        p.function.abandon(cam);
    }
}

/// An INTx line of a device on MSI-X fired: mask it (it has no handler to quiet it).
fn stray_intx(intid: u32) {
    let _ = gic::disable(intid);
}

/// The handler's half: the device `intid` belongs to, noting a configuration change.
pub(super) fn note(intid: u32) -> Option<usize> {
    let v = ROUTES
        .iter()
        .map(|r| r.load(Ordering::Acquire))
        .find(|&v| v & VALID != 0 && (v >> 16) as u32 == intid)?;
    let dev = ((v >> 1) & 0x7fff) as usize;
    if v & 1 != 0 {
        CONFIG_PENDING[dev].store(true, Ordering::Release);
    }
    Some(dev)
}

/// Whether device `dev`'s configuration changed since the last call: on MSI-X, whether its
/// vector 0 fired; on INTx, what `read_isr` (the driver reading the ISR) says.
pub(super) fn config_changed(dev: usize, read_isr: impl FnOnce() -> bool) -> bool {
    match ON_MSIX.get(dev) {
        Some(on) if on.load(Ordering::Acquire) => CONFIG_PENDING[dev].swap(false, Ordering::AcqRel),
        _ => read_isr(),
    }
}
