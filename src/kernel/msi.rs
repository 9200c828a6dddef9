//! Message-signalled interrupts: which controller takes PCI MSIs, MSI-X for one function,
//! and the list of interrupt sources that `irqs` prints.
//!
//! Controller ([`init`], once at boot on CPU 0, after the GIC and before PCI probe): the
//! host bridge's `msi-map` / `msi-parent` (`PciHostInfo::msi`) names it.
//! - ITS: CPU 0's redistributor gets its LPI tables (`gic::enable_lpis`), then the ITS its
//!   command queue, device table (sized for the bridge's requester IDs) and collection
//!   table (`its::driver::init`). Every LPI targets collection 0 = CPU 0.
//! - GICv2m: the frame's SPIs (DT properties, else MSI_TYPER), edge-triggered.
//! - Neither (no property, `its=off`, the `pci_msi=off` bootarg, or a bring-up step failed,
//!   e.g. no memory for the tables): no MSIs; devices stay on INTx, and the log says why.
//!
//! Table memory comes from the memory model (unmovable pages, zeroed, linear map) and is
//! never given back: the GIC may write it at any time.
//!
//! MSI-X for a function ([`msix_enable`]): the caller gives config access, the function
//! (any bus: its requester ID `bus << 8 | device << 3 | function` goes through `msi-map`
//! to the ITS DeviceID), where its BARs are, one name per vector and a handler. Each
//! vector gets an LPI (`MAPD` once, `MAPTI` per event, EventID = vector) or a v2m SPI, the
//! handler is registered, MSI-X is enabled with the function masked and every entry
//! written and unmasked; the caller unmasks the function ([`MsixFunction::start`]) once the
//! device accepted its vectors, or goes back to INTx ([`MsixFunction::abandon`]). The
//! interrupts it allocated are then not reused (LPIs and SPIs are plentiful; a leak per
//! refused device, said in the log).
//!
//! Sources ([`add_source`], [`sources`]): a name, a kind, an INTID and the MSI-X vector;
//! the count is the IRQ registry's per-INTID dispatch count, so it includes interrupts
//! nobody handled.
//!
//! Locks: `BACKEND` (the controller and its allocator) and `SOURCES` are leaf
//! `IrqSpinLock`s taken in thread context only; the ITS's own lock is taken inside
//! `BACKEND`'s, and the memory-model lock inside the ITS's (table allocation).

use super::mem::mm_lock;
use alloc::string::String;
use alloc::vec::Vec;
use hotmem::dt::{BootInfo, MsiController, PciMsi};
use hotmem::mm::{AllocFlags, Pfn, PhysAddr};
use hotmem_arch::addr::PhysRange;
use hotmem_arch::cpu::IrqSpinLock;
use hotmem_arch::gic::{self, Trigger};
use hotmem_arch::gicv2m::V2m;
use hotmem_arch::its::{driver as its, GicMemory};
use hotmem_arch::layout::{self, PAGE_SIZE};
use hotmem_arch::{irq, mmu};
use hotmem_drivers::pci::msix::{self, MsiMessage, MsixCap, MsixTable};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

/// What kind of interrupt a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A PCI INTx line (a level SPI through the host bridge's `interrupt-map`).
    Intx,
    /// An MSI through the ITS.
    Lpi,
    /// An MSI through a GICv2m frame (an edge SPI).
    V2mSpi,
    /// Another wired SPI (the UART).
    Spi,
    /// A per-CPU peripheral interrupt (the timer).
    Ppi,
    /// A software-generated interrupt (the reschedule IPI).
    Sgi,
}

impl Kind {
    /// The `kind=` value of `irqs`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Intx => "intx",
            Kind::Lpi => "lpi",
            Kind::V2mSpi => "v2m-spi",
            Kind::Spi => "spi",
            Kind::Ppi => "ppi",
            Kind::Sgi => "sgi",
        }
    }
}

/// One interrupt source for `irqs`.
#[derive(Debug, Clone)]
pub struct Source {
    /// `vmem0.config`, `timer`, ...
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The GIC INTID.
    pub intid: u32,
    /// The MSI-X table entry, for MSI sources.
    pub vector: Option<u16>,
}

static SOURCES: IrqSpinLock<Vec<Source>> =
    IrqSpinLock::new(Vec::new()).with_class(hotmem_arch::lock_class!("irq_sources"));

/// Lists a source in `irqs`.
pub fn add_source(name: String, kind: Kind, intid: u32, vector: Option<u16>) {
    SOURCES.lock().push(Source {
        name,
        kind,
        intid,
        vector,
    });
}

/// Every listed source with its dispatch count, in the order they were added.
pub fn sources() -> Vec<(Source, u64)> {
    let list = SOURCES.lock().clone();
    list.into_iter()
        .map(|s| {
            let n = irq::count(s.intid);
            (s, n)
        })
        .collect()
}

enum Backend {
    Its { map: PciMsi },
    V2m { frame: V2m },
}

static BACKEND: IrqSpinLock<Option<Backend>> =
    IrqSpinLock::new(None).with_class(hotmem_arch::lock_class!("msi_backend"));

/// Table memory from the memory model (see the module doc).
struct ModelMemory;

// SAFETY: the pages come from the model's allocator as unmovable, so nothing else owns or
// moves them, and they are never freed; they are zeroed here and reached through the
// linear map, which maps RAM as Normal write-back memory.
unsafe impl GicMemory for ModelMemory {
    fn alloc_zeroed(&mut self, bytes: usize, align: usize) -> Option<(u64, usize)> {
        let page = PAGE_SIZE as usize;
        let pages = bytes.div_ceil(page).max(align / page).max(1);
        let order = pages.next_power_of_two().trailing_zeros();
        let mut mm = mm_lock();
        let model = mm.as_mut()?;
        let pfn = model.alloc_pages(order, AllocFlags::UNMOVABLE).ok()?;
        let pa = pfn.addr().0;
        if pa % align as u64 != 0 {
            let _ = model.free_pages(Pfn::down(PhysAddr(pa)), order);
            return None;
        }
        drop(mm);
        let va = layout::phys_to_virt(pa) as usize;
        // SAFETY: freshly allocated RAM of `page << order` bytes, mapped by the linear map.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, page << order) };
        Some((pa, va))
    }
}

/// Chooses and brings up the MSI controller (see the module doc), unless `enabled` is false
/// (`pci_msi=off`). Call once on CPU 0 after its GIC interface is up.
pub fn init(info: &BootInfo, enabled: bool) {
    if !enabled {
        log::info!("msi: off (pci_msi=off); PCI interrupts are INTx");
        return;
    }
    let Some(msi) = info.pci.as_ref().and_then(|p| p.msi.clone()) else {
        log::info!("msi: no msi-map/msi-parent to a usable frame; PCI interrupts are INTx");
        return;
    };
    let backend = match msi.controller {
        MsiController::Its { regs } => init_its(regs, msi),
        MsiController::V2m { regs, spis } => init_v2m(regs, spis),
    };
    *BACKEND.lock() = backend;
}

fn init_its(regs: PhysRange, map: PciMsi) -> Option<Backend> {
    let limit = match gic::enable_lpis(&mut ModelMemory) {
        Ok(l) => l,
        Err(e) => {
            log::error!("msi: cannot enable LPIs ({e:?}); PCI interrupts are INTx");
            return None;
        }
    };
    let va = match mmu::map_mmio(regs) {
        Ok(va) => va.0 as usize,
        Err(e) => {
            log::error!("msi: cannot map the ITS ({e:?}); PCI interrupts are INTx");
            return None;
        }
    };
    // The largest DeviceID the map can produce, plus one.
    let ids = map
        .map
        .iter()
        .map(|e| u64::from(e.msi_base) + u64::from(e.length))
        .max()
        .unwrap_or(0);
    // SAFETY: the ITS frame from the DT was just mapped as Device memory, for good; this
    // runs once, after LPIs were enabled on this (boot) CPU.
    match unsafe { its::init(va, regs.base, &mut ModelMemory, ids) } {
        Ok(i) => {
            log::info!(
                "msi: ITS at {:#x}: LPIs 8192..{limit}, {} DeviceIDs, collection 0 -> CPU 0{}",
                regs.base,
                i.device_ids,
                if i.clean { ", tables cleaned" } else { "" }
            );
            Some(Backend::Its { map })
        }
        Err(e) => {
            log::error!("msi: ITS bring-up failed ({e:?}); PCI interrupts are INTx");
            None
        }
    }
}

fn init_v2m(regs: PhysRange, spis: Option<(u32, u32)>) -> Option<Backend> {
    let va = match mmu::map_mmio(regs) {
        Ok(va) => va.0 as usize,
        Err(e) => {
            log::error!("msi: cannot map the v2m frame ({e:?}); PCI interrupts are INTx");
            return None;
        }
    };
    // SAFETY: the frame was just mapped as Device memory, for good.
    match unsafe { V2m::probe(va, regs.base, spis) } {
        Some(frame) => {
            log::info!("msi: GICv2m frame at {:#x}", regs.base);
            Some(Backend::V2m { frame })
        }
        None => {
            log::error!("msi: v2m frame without SPIs; PCI interrupts are INTx");
            None
        }
    }
}

/// Why a function gets no MSI-X.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiError {
    /// No MSI controller (see [`init`]).
    NoController,
    /// The function has no MSI-X capability, or a broken one.
    NoMsix,
    /// The table has fewer entries than asked for.
    TableTooSmall(u16),
    /// The table's BAR is not assigned, or cannot be mapped.
    TableUnmapped,
    /// `msi-map` has no DeviceID for the requester ID.
    NoDeviceId(u16),
    /// The controller refused (ITS command, no LPI or SPI left, no table memory).
    Controller,
    /// The IRQ registry has no slot for the INTID.
    NoSlot(u32),
}

/// One function's MSI-X after [`msix_enable`]: masked until [`MsixFunction::start`].
pub struct MsixFunction {
    cap: MsixCap,
    names: Vec<String>,
    /// The INTID of each vector, vector 0 first.
    pub intids: Vec<u32>,
    /// LPIs or v2m SPIs.
    pub kind: Kind,
}

impl MsixFunction {
    /// Unmasks the function: its vectors may fire from now on; they are listed in `irqs`.
    pub fn start(&self, access: &mut impl ConfigurationAccess) {
        for ((vector, name), &intid) in (0u16..).zip(&self.names).zip(&self.intids) {
            add_source(name.clone(), self.kind, intid, Some(vector));
        }
        msix::enable(access, &self.cap, false);
    }

    /// Disables MSI-X (the function is on INTx again) and unregisters the handlers.
    pub fn abandon(self, access: &mut impl ConfigurationAccess) {
        msix::disable(access, &self.cap);
        for &intid in &self.intids {
            irq::unregister(intid);
        }
    }
}

/// The requester ID of `df`.
pub fn requester_id(df: DeviceFunction) -> u16 {
    u16::from(df.bus) << 8 | u16::from(df.device) << 3 | u16::from(df.function)
}

/// Sets up `names.len()` MSI-X vectors of `df`, vector i named `names[i]` in `irqs`, all
/// handled by `handler` (see the module doc). `bar_cpu(bar)` is where the CPU sees that
/// BAR (`None`: not assigned).
pub fn msix_enable(
    access: &mut impl ConfigurationAccess,
    df: DeviceFunction,
    bar_cpu: impl Fn(u8) -> Option<u64>,
    names: &[String],
    handler: irq::Handler,
) -> Result<MsixFunction, MsiError> {
    let mut backend = BACKEND.lock();
    let backend = backend.as_mut().ok_or(MsiError::NoController)?;
    let cap = MsixCap::find(access, df)
        .ok()
        .flatten()
        .ok_or(MsiError::NoMsix)?;
    let n = u16::try_from(names.len()).unwrap_or(u16::MAX);
    if cap.table_size < n {
        return Err(MsiError::TableTooSmall(cap.table_size));
    }
    let base = bar_cpu(cap.table_bar)
        .and_then(|b| b.checked_add(u64::from(cap.table_offset)))
        .ok_or(MsiError::TableUnmapped)?;
    let range = PhysRange {
        base,
        size: cap.table_bytes(),
    };
    let va = mmu::map_mmio(range).map_err(|_| MsiError::TableUnmapped)?.0 as usize;
    // SAFETY: the table's range inside the assigned BAR was just mapped as Device memory,
    // for good; only this function's MSI-X code writes it.
    let table = unsafe { MsixTable::new(va, &cap) };
    let (kind, msgs) = match backend {
        Backend::Its { map } => {
            let rid = requester_id(df);
            let dev = map.device_id(rid).ok_or(MsiError::NoDeviceId(rid))?;
            its::map_device(dev, u32::from(n), &mut ModelMemory).map_err(|e| {
                log::error!("msi: {df}: MAPD {dev:#x}: {e:?}");
                MsiError::Controller
            })?;
            let doorbell = its::doorbell().map_err(|_| MsiError::Controller)?;
            let mut msgs = Vec::new();
            for event in 0..u32::from(n) {
                let intid = its::map_event(dev, event).map_err(|e| {
                    log::error!("msi: {df}: MAPTI {dev:#x}/{event}: {e:?}");
                    MsiError::Controller
                })?;
                let data = event;
                msgs.push((
                    intid,
                    MsiMessage {
                        address: doorbell,
                        data,
                    },
                ));
            }
            (Kind::Lpi, msgs)
        }
        Backend::V2m { frame } => {
            let mut msgs = Vec::new();
            for _ in 0..n {
                let intid = frame.alloc().ok_or(MsiError::Controller)?;
                let msg = MsiMessage {
                    address: frame.doorbell(),
                    data: intid,
                };
                msgs.push((intid, msg));
            }
            (Kind::V2mSpi, msgs)
        }
    };
    for &(intid, _) in &msgs {
        irq::register(intid, handler).map_err(|_| MsiError::NoSlot(intid))?;
        if kind == Kind::V2mSpi {
            gic::enable(intid, Trigger::Edge).map_err(|_| MsiError::Controller)?;
        }
    }
    msix::enable(access, &cap, true);
    for (vector, &(_, msg)) in (0u16..).zip(&msgs) {
        // The vector index is below the table size (checked above).
        let _ = table.write(vector, msg);
        let _ = table.set_masked(vector, false);
    }
    Ok(MsixFunction {
        cap,
        names: names.to_vec(),
        intids: msgs.iter().map(|&(i, _)| i).collect(),
        kind,
    })
}
