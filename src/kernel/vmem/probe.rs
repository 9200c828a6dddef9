//! PCI bring-up of virtio-mem: map the ECAM of the device tree's host bridge (the whole bus
//! range), enumerate depth-first through bridges (bus numbers, windows, every BAR: the
//! driver's `pci` module), start the driver of every virtio-mem function, route its
//! interrupt, and hand the devices to the device list (`super::device`).
//!
//! Runs once at boot, in thread context, before the first convergence pass. A device that
//! fails any step is logged and left disabled; the others go on. The driver is told which
//! physical ranges a device region must not overlap: RAM, the bridge's windows, its ECAM
//! and the regions of the devices found before it. Each device also gets a second PCI
//! transport that only reads its configuration (`device::Live`); the interrupt lines are
//! enabled once every device's `Live` is in place, so the handler finds them.

use super::device::{self, Dev, Live};
use super::hal::KernelHal;
use super::msix;
use super::transport::InjectTransport;
use alloc::vec::Vec;
use hotmem::dt::BootInfo;
use hotmem::vmem::{PciAddr, Vmem};
use hotmem_arch::addr::PhysRange;
use hotmem_arch::gic::{self, Trigger};
use hotmem_arch::irq;
use hotmem_arch::layout;
use hotmem_arch::mmu;
use hotmem_arch::pgtable::{Attrs, Granule};
use hotmem_drivers::pci::{self, Ecam, PciHost};
use hotmem_drivers::virtio_mem::{Limits, VirtioMem};

fn dt_windows(info: &hotmem::dt::PciHostInfo) -> Vec<pci::Window> {
    use hotmem::dt::PciSpace;
    info.windows
        .iter()
        .map(|w| pci::Window {
            space: match w.space {
                PciSpace::Io => pci::Space::Io,
                PciSpace::Mem32 => pci::Space::Mem32,
                PciSpace::Mem64 => pci::Space::Mem64,
            },
            prefetchable: w.prefetchable,
            pci_addr: w.pci_addr,
            cpu_addr: w.cpu_addr,
            size: w.size,
        })
        .collect()
}

/// Finds and starts every virtio-mem device behind the DT's PCIe host bridge; returns the
/// host bridge for the hotplug slots (`None` without one).
pub(super) fn probe(info: &BootInfo, pa_bits: u32) -> Option<Probed> {
    let Some(host) = info.pci.as_ref() else {
        log::info!("pci: no host bridge in the device tree; no virtio-mem");
        return None;
    };
    // All of the ECAM (1 MiB per bus of `bus-range`; 256 MiB on QEMU `virt`), in 2 MiB
    // blocks: that costs one page-table page, and buses numbered later (behind a hotplug
    // port) are reachable without mapping anything at run time.
    let ecam_size = host.ecam.size.min(
        (u64::from(host.bus_end) - u64::from(host.bus_start) + 1) * pci::ECAM_BUS_BYTES as u64,
    );
    let ecam = PhysRange {
        base: host.ecam.base,
        size: ecam_size,
    };
    if let Err(e) = mmu::map_linear(ecam, Attrs::MMIO, Granule::Block2M) {
        log::error!("pci: cannot map ECAM: {e:?}");
        return None;
    }
    let irq_map = pci::IrqMap {
        mask_hi: host.irq_map_mask.0,
        mask_pin: host.irq_map_mask.1,
        entries: host
            .irq_map
            .iter()
            .map(|e| pci::IrqMapEntry {
                child_hi: e.child_hi,
                pin: e.pin,
                intid: e.intid,
            })
            .collect(),
    };
    let windows = dt_windows(host);
    let va = layout::phys_to_virt(host.ecam.base) as *mut u8;
    // SAFETY: the ECAM's first `ecam_size` bytes were just mapped as Device memory and stay
    // mapped; only the PCI code accesses them.
    let pci = unsafe {
        PciHost::new_ecam(
            va,
            ecam_size as usize,
            host.bus_start,
            host.bus_end,
            &windows,
            irq_map,
        )
    };
    // SAFETY: as above; the MSI-X setup's second handle only writes capability registers,
    // between the host's own calls, in this one thread (probe, then the slot work).
    let cam = pci
        .and_then(|p| unsafe { Ecam::new(va, ecam_size as usize, host.bus_start) }.map(|c| (p, c)));
    let (mut pci, cam) = match cam {
        Ok(p) => p,
        Err(e) => {
            log::error!("pci: {e}");
            return None;
        }
    };
    // What a device region must not overlap: RAM, the bridge's windows and ECAM.
    let mut taken: Vec<PhysRange> = info.memory.iter().map(|m| m.range).collect();
    taken.extend(windows.iter().map(|w| PhysRange {
        base: w.cpu_addr,
        size: w.size,
    }));
    taken.push(host.ecam);
    let functions = pci.enumerate();
    let mut probed = Probed {
        pci,
        cam,
        taken,
        pa_bits,
    };
    let mut found = Vec::new();
    for f in &functions {
        if let Some(d) = probed.bring_up(f) {
            found.push(d);
        }
    }
    for (d, _) in &found {
        enable_irq(&d.pci, d.intid, device::irq_handler);
    }
    // `vmem` shows the devices from the prompt on, before the first convergence pass, which
    // converges to the initial request (and cleans up leftovers) right away.
    device::add(found);
    Some(probed)
}

/// What probe leaves for the hotplug slots: the host bridge and what a device region must
/// not overlap.
pub(super) struct Probed {
    pub(super) pci: PciHost,
    /// A second config-space handle for MSI-X capability writes (`msix`, the ports' MSI-X
    /// in `slots`).
    pub(super) cam: Ecam,
    taken: Vec<PhysRange>,
    pa_bits: u32,
}

/// Registers `handler` for the interrupt line of `who` and enables it (level-triggered).
pub(super) fn enable_irq(who: &dyn core::fmt::Display, intid: Option<u32>, handler: irq::Handler) {
    if let Some(intid) = intid {
        if irq::register(intid, handler).is_err() || gic::enable(intid, Trigger::Level).is_err() {
            log::error!("{who}: cannot enable interrupt {intid}");
        }
    }
}

impl Probed {
    /// The region of a device released empty (nothing plugged, nothing mapped), free for a
    /// device added later.
    pub(super) fn give_back(&mut self, region: PhysRange) {
        self.taken.retain(|r| *r != region);
    }

    /// Starts the driver of virtio-mem function `f` (BARs already placed by enumeration or
    /// [`PciHost::scan_slot`]): the device and its `Live`, not yet in the list. `None` for
    /// other functions and for a device that fails (logged).
    pub(super) fn bring_up(&mut self, f: &pci::PciFunction) -> Option<(Dev, Live)> {
        if f.virtio != Some(virtio_drivers::transport::DeviceType::Memory) {
            return None;
        }
        // Taken before the device is known to work: an id is never given twice, even to a
        // device that failed.
        let Some(id) = device::next_id() else {
            log::error!("vmem: {}: no device id left; device disabled", f.df);
            return None;
        };
        let pci = &mut self.pci;
        let bars = pci.setup_bars(f.df);
        let transport = match bars
            .clone()
            .and_then(|_| pci.virtio_transport::<KernelHal>(f.df))
        {
            Ok(t) => InjectTransport::new(t),
            Err(e) => {
                log::error!("vmem{id}: {}: {e}; device disabled", f.df);
                return None;
            }
        };
        let bars = bars.unwrap_or_default();
        let msix = msix::prepare(id, &mut self.cam, f.df, &bars, device::msi_handler);
        let transport = transport.with_vectors(msix.as_ref().map(msix::Prepared::vectors));
        let limits = Limits {
            pa_bits: self.pa_bits,
            taken: &self.taken,
        };
        let driver = match VirtioMem::<KernelHal, _>::new(transport, &limits) {
            Ok(d) => d,
            Err(e) => {
                log::error!("vmem{id}: {}: invalid device: {e:?}; device disabled", f.df);
                msix::abandon(&mut self.cam, msix);
                return None;
            }
        };
        let cfg = match driver.config() {
            Ok(c) => c,
            Err(e) => {
                log::error!("vmem{id}: {e:?}; device disabled");
                msix::abandon(&mut self.cam, msix);
                return None;
            }
        };
        // Taken until the device is released (`Probed::give_back`).
        self.taken.push(PhysRange {
            base: cfg.addr,
            size: cfg.region_size,
        });
        log::info!(
            "vmem{id}: {} region 0x{:x}+{} MiB, block {} KiB, node {}, plugged {} MiB, requested {} MiB",
            f.df,
            cfg.addr,
            cfg.region_size >> 20,
            cfg.block_size >> 10,
            cfg.node_id,
            cfg.plugged_size >> 20,
            cfg.requested_size >> 20
        );
        // The INTx line, or `None` on MSI-X (a device without either is logged there).
        let intid = msix::finish(id, &mut self.cam, msix, f.intid);
        let pci = &mut self.pci;
        let reader = pci.virtio_transport::<KernelHal>(f.df);
        if let Err(e) = &reader {
            log::warn!("vmem{id}: no configuration reader ({e}); `vmem` shows the last pass");
        }
        let live = Live::new(reader.ok(), driver.node_id_valid(), intid);
        let dev = Dev {
            driver,
            policy: Vmem::new(id, cfg),
            pci: PciAddr {
                bus: f.df.bus,
                device: f.df.device,
                function: f.df.function,
            },
            intid,
            answered: 0,
        };
        Some((dev, live))
    }
}
