//! Kernel glue of virtio-mem: the virtio `Hal`, PCI probing, one [`Vmem`] policy per device,
//! the interrupt handler, the deferred convergence work, and the `vmem` command.
//!
//! Interrupts: a device's INTx line is level-triggered and only drops when the device's ISR
//! is read. The handler masks the line at the GIC and schedules work; the work reads the ISR
//! (under the device lock), unmasks the line, and converges every device. Requests wait for
//! their response with `wfi` (the queue interrupt or the next tick wakes the CPU).
//!
//! Locks: `DEVICES` (an `IrqSpinLock` around the list) is taken only in thread context by
//! probe and by the work, which runs in the single `worker` task and takes the list out for
//! the pass (so interrupts stay enabled while it converges); never by the interrupt handler.
//! During a pass the memory side takes the memory-model lock per call, the page-table lock
//! while mapping, and the migration locks (`migrate`). `STATUS` snapshots are refreshed
//! after each pass (and at probe) for the `vmem` command.

use super::mem::{self, mm_lock};
use super::{work, BootInfo};
use crate::println;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hotmem::mm::{AllocFlags, PhysAddr, ZoneType};
use hotmem::vmem::{self, Device, HotplugMemory, MemError, Next, Range, Vmem};
use hotmem_arch::cpu::{self, IrqSpinLock};
use hotmem_arch::gic::{self, Trigger};
use hotmem_arch::layout::{self, PAGE_SIZE};
use hotmem_arch::pgtable::{Attrs, Granule};
use hotmem_arch::{irq, mmu, timer};
use hotmem_drivers::pci::{self, PciHost};
use hotmem_drivers::virtio_mem::{Config, Limits, Request, Response, VirtioMem, VirtioMemError};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::{BufferDirection, Hal};

/// DMA and MMIO for virtio-drivers: DMA memory is unmovable Normal memory from the model,
/// addressed through the linear map (the CPU and the device see the same physical address).
pub struct KernelHal;

fn virt_to_phys(va: u64) -> u64 {
    layout::linear_virt_to_phys(va).unwrap_or_else(|| mmu::image_virt_to_phys(va))
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory that nothing else uses until
// `dma_dealloc`; `mmio_phys_to_virt` returns a Device mapping of the range; `share` returns
// the physical address of the buffer (all kernel memory is identity-visible to the device).
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (u64, NonNull<u8>) {
        let order = pages.next_power_of_two().trailing_zeros();
        let pfn = mm_lock()
            .as_mut()
            .and_then(|m| m.alloc_pages(order, AllocFlags::UNMOVABLE).ok());
        match pfn {
            Some(pfn) => {
                let pa = pfn.addr().0;
                let va = layout::phys_to_virt(pa) as *mut u8;
                // SAFETY: freshly allocated RAM, mapped by the linear map, `pages` pages long.
                unsafe { core::ptr::write_bytes(va, 0, pages * PAGE_SIZE as usize) };
                (pa, NonNull::new(va).unwrap_or(NonNull::dangling()))
            }
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: u64, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let order = pages.next_power_of_two().trailing_zeros();
        match mm_lock()
            .as_mut()
            .map(|m| m.free_pages(PhysAddr(paddr).pfn_down(), order))
        {
            Some(Ok(())) => 0,
            _ => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: u64, size: usize) -> NonNull<u8> {
        // PCI bus addresses equal CPU addresses on this board (the DT `ranges` are 1:1).
        let va = mmu::map_mmio(paddr, size as u64).unwrap_or(0);
        NonNull::new(va as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _dir: BufferDirection) -> u64 {
        virt_to_phys(buffer.as_ptr() as *mut u8 as u64)
    }

    unsafe fn unshare(_paddr: u64, _buffer: NonNull<[u8]>, _dir: BufferDirection) {}
}

type Driver = VirtioMem<KernelHal, PciTransport>;

/// One probed device.
struct Dev {
    driver: Driver,
    policy: Vmem,
    intid: Option<u32>,
}

/// The driver as the policy's [`Device`].
struct DriverDevice<'a>(&'a mut Driver);

impl Device for DriverDevice<'_> {
    type Error = VirtioMemError;
    fn config(&mut self) -> Result<Config, VirtioMemError> {
        self.0.config()
    }
    fn request(&mut self, req: Request) -> Result<Response, VirtioMemError> {
        self.0.request(req, &mut cpu::wait_for_interrupt)
    }
}

/// The memory model plus the linear map as the policy's [`HotplugMemory`].
struct KernelMemory;

fn with<R>(f: impl FnOnce(&mut mem::KernelMm) -> Result<R, MemError>) -> Result<R, MemError> {
    match mm_lock().as_mut() {
        Some(m) => f(m),
        None => Err(MemError::Other("no memory model")),
    }
}

impl HotplugMemory for KernelMemory {
    fn can_add(&mut self, range: Range, _node: u32) -> bool {
        mm_lock()
            .as_ref()
            .is_some_and(|m| vmem::mm_can_add(m, range))
    }

    fn add_online(&mut self, range: Range, node: u32) -> Result<(), MemError> {
        let t0 = timer::now_ns();
        // Mapped first (not under the model's lock: table pages come from the model).
        // Nothing touches the range until the model hands out its pages.
        if let Err(e) = mmu::map_linear(range.base, range.size, Attrs::RAM, Granule::Block2M) {
            log::error!(
                "vmem: cannot map 0x{:x}+0x{:x}: {e:?}",
                range.base,
                range.size
            );
            let _ = mmu::unmap_linear(range.base, range.size);
            return Err(MemError::NoMemory);
        }
        let t1 = timer::now_ns();
        with(|m| vmem::mm_add_online(m, range, node, online_zone())).inspect_err(|_| {
            let _ = mmu::unmap_linear(range.base, range.size);
        })?;
        log::debug!(
            "vmem: added 0x{:x}+{} MiB: map {} us, sections and online {} us",
            range.base,
            range.size >> 20,
            (t1 - t0) / 1000,
            (timer::now_ns() - t1) / 1000
        );
        Ok(())
    }

    fn offline(&mut self, range: Range) -> Result<u64, MemError> {
        let floor = FLOOR_BYTES.load(Ordering::Relaxed);
        let pfns = vmem::pfn_range(range);
        with(|m| {
            if !vmem::mm_floor_allows(m, range, floor) {
                return Err(MemError::Floor);
            }
            m.isolate_range(pfns).map_err(vmem::mm_err)
        })?;
        // Isolated: nothing new lands here. Move what is mapped out, then offline.
        let moved = super::migrate::migrate_out(pfns);
        let r = moved.and_then(|report| {
            with(|m| m.offline_range(pfns).map_err(vmem::mm_err))?;
            Ok(report.moved_pages)
        });
        if r.is_err() {
            let _ = with(|m| m.unisolate_range(pfns).map_err(vmem::mm_err));
        }
        r
    }

    fn used_pages(&mut self, range: Range) -> u64 {
        mm_lock()
            .as_ref()
            .map_or(0, |m| vmem::mm_used_pages(m, range))
    }

    fn reonline(&mut self, range: Range) -> Result<(), MemError> {
        with(|m| vmem::mm_reonline(m, range, online_zone()))
    }

    fn remove(&mut self, range: Range) -> Result<(), MemError> {
        // Unmapped (and TLBs flushed on every CPU) before the model forgets the range.
        mmu::unmap_linear(range.base, range.size).map_err(|_| MemError::Other("unmap"))?;
        with(|m| vmem::mm_remove(m, range))
    }
}

static DEVICES: IrqSpinLock<Vec<Dev>> = IrqSpinLock::new(Vec::new());
/// Free memory unplug keeps (bootarg `unplug_floor_mib=`).
static FLOOR_BYTES: AtomicU64 = AtomicU64::new(64 << 20);
/// Hot-plugged memory goes to Normal instead of Movable (bootarg `memhp_online=normal`).
static ONLINE_NORMAL: AtomicBool = AtomicBool::new(false);

fn online_zone() -> ZoneType {
    if ONLINE_NORMAL.load(Ordering::Relaxed) {
        ZoneType::Normal
    } else {
        ZoneType::Movable
    }
}

/// Applies the boot arguments that shape hotplug.
pub fn configure(args: &hotmem::shell::BootArgs) {
    FLOOR_BYTES.store(args.unplug_floor_mib << 20, Ordering::Relaxed);
    ONLINE_NORMAL.store(args.memhp_online_normal, Ordering::Relaxed);
    if args.memhp_online_normal {
        log::warn!("vmem: hot-plugged memory goes to the Normal zone: unplug is best effort");
    }
}

/// What `vmem` prints, refreshed after every step.
#[derive(Clone, Copy)]
struct Status {
    cfg: Config,
    state: vmem::State,
    reason: vmem::Reason,
}

static STATUS: IrqSpinLock<Vec<Status>> = IrqSpinLock::new(Vec::new());

/// Interrupt handler: mask the line, leave the rest to the work.
fn irq_handler(intid: u32) {
    let _ = gic::disable(intid);
    work::schedule();
}

/// The deferred work: acknowledge interrupts, unmask lines, converge every device.
pub fn work() {
    // Only the worker task converges, so it takes the list out of the lock and works with
    // interrupts enabled (a convergence pass may migrate gigabytes) and puts it back after.
    let mut devs = core::mem::take(&mut *DEVICES.lock());
    for d in devs.iter_mut() {
        let (config_changed, _) = d.driver.ack_interrupt();
        if config_changed {
            d.policy.config_changed();
        }
    }
    for d in devs.iter() {
        if let Some(i) = d.intid {
            let _ = gic::enable(i, Trigger::Level);
        }
    }
    for d in devs.iter_mut() {
        loop {
            let next = d.policy.step(
                &mut DriverDevice(&mut d.driver),
                &mut KernelMemory,
                timer::now_ns(),
            );
            match next {
                Next::Again => continue,
                Next::RetryAt(t) => work::schedule_at(t),
                Next::Idle => {}
            }
            break;
        }
    }
    publish(&devs);
    // Only now that `vmem` shows the new state: whoever waits for the line finds it there.
    for d in devs.iter_mut() {
        if let Some(r) = d.policy.take_resized() {
            log::info!("{r}");
        }
    }
    *DEVICES.lock() = devs;
}

/// Refreshes what `vmem` prints.
fn publish(devs: &[Dev]) {
    let statuses: Vec<Status> = devs
        .iter()
        .map(|d| Status {
            cfg: *d.policy.config(),
            state: d.policy.state(),
            reason: d.policy.reason(),
        })
        .collect();
    *STATUS.lock() = statuses;
}

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

/// Finds and starts every virtio-mem device behind the DT's PCIe host bridge.
pub fn probe(info: &BootInfo, pa_bits: u32) {
    let Some(host) = info.pci.as_ref() else {
        log::info!("pci: no host bridge in the device tree; no virtio-mem");
        return;
    };
    // Only bus 0 is populated without bridges; map its 1 MiB of ECAM.
    let ecam_size = host.ecam.size.min(pci::ECAM_BUS_BYTES as u64);
    if let Err(e) = mmu::map_linear(host.ecam.base, ecam_size, Attrs::MMIO, Granule::Block2M) {
        log::error!("pci: cannot map ECAM: {e:?}");
        return;
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
    let mut pci = match pci {
        Ok(p) => p,
        Err(e) => {
            log::error!("pci: {e}");
            return;
        }
    };
    // What a device region must not overlap: RAM, the bridge's windows and ECAM.
    let mut taken: Vec<(u64, u64)> = info
        .memory
        .iter()
        .map(|m| (m.range.base, m.range.size))
        .collect();
    taken.extend(windows.iter().map(|w| (w.cpu_addr, w.size)));
    taken.push((host.ecam.base, host.ecam.size));
    let mut devs = Vec::new();
    for f in pci.enumerate() {
        if f.virtio != Some(virtio_drivers::transport::DeviceType::Memory) {
            continue;
        }
        let id = devs.len();
        let transport = match pci
            .setup_bars(f.df)
            .and_then(|_| pci.virtio_transport::<KernelHal>(f.df))
        {
            Ok(t) => t,
            Err(e) => {
                log::error!("vmem{id}: {}: {e}; device disabled", f.df);
                continue;
            }
        };
        let driver = match VirtioMem::<KernelHal, _>::new(
            transport,
            &Limits {
                pa_bits,
                taken: &taken,
            },
        ) {
            Ok(d) => d,
            Err(e) => {
                log::error!(
                    "vmem{id}: {:?}: invalid device: {e:?}; device disabled",
                    f.df
                );
                continue;
            }
        };
        let cfg = match driver.config() {
            Ok(c) => c,
            Err(e) => {
                log::error!("vmem{id}: {e:?}; device disabled");
                continue;
            }
        };
        taken.push((cfg.addr, cfg.region_size));
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
        if let Some(intid) = f.intid {
            if irq::register(intid, irq_handler).is_err()
                || gic::enable(intid, Trigger::Level).is_err()
            {
                log::error!("vmem{id}: cannot enable interrupt {intid}");
            }
        } else {
            log::warn!("vmem{id}: no interrupt route; resizes only converge on retries");
        }
        devs.push(Dev {
            driver,
            policy: Vmem::new(id, cfg),
            intid: f.intid,
        });
    }
    if devs.is_empty() {
        return;
    }
    // `vmem` shows the devices from the prompt on, before the first convergence pass.
    publish(&devs);
    *DEVICES.lock() = devs;
    // Converge to the initial request (and clean up leftovers) right away.
    work::schedule();
}

pub fn cmd_vmem() {
    let st = STATUS.lock().clone();
    if st.is_empty() {
        println!("vmem: no virtio-mem device");
        return;
    }
    for (i, s) in st.iter().enumerate() {
        let c = &s.cfg;
        println!(
            "id=vmem{i} addr=0x{:x} region_kib={} block_kib={} usable_kib={} plugged_kib={} requested_kib={} pending_kib={} node={} state={} reason={}",
            c.addr,
            c.region_size >> 10,
            c.block_size >> 10,
            c.usable_region_size >> 10,
            c.plugged_size >> 10,
            c.requested_size >> 10,
            c.requested_size.abs_diff(c.plugged_size) >> 10,
            c.node_id,
            s.state.name(),
            s.reason.name()
        );
    }
}
