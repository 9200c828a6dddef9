//! Kernel glue: the boot sequence, SMP bring-up, the interrupt hooks, and the wiring of the
//! glue modules below it.
//!
//! Boot order (primary CPU, `kernel_main`):
//! 1. final kernel page tables (W^X image), switch TTBR1, stop TTBR0 walks;
//! 2. map and parse the device tree; bring up the console and the logger;
//! 3. check the memory ranges against the physical-address limit, map RAM in the linear
//!    map, boot the memory model (from then on the heap and the page tables draw from it);
//! 4. wire the glue: register the deferred work (the reaper, virtio-mem's convergence and
//!    hotplug slots) and the task-exit hook; exception hooks, GIC, timer tick, the reschedule
//!    SGI, UART receive interrupt; CPU 0's GIC interface; the MSI controller (`msi`: LPIs on
//!    CPU 0's redistributor and the ITS, or the v2m frame);
//! 5. this boot context becomes CPU 0's idle task; start the other CPUs through PSCI
//!    CPU_ON (each boot context becomes that CPU's idle task);
//! 6. probe virtio-mem; start the `worker` (deferred work) and `shell` tasks; CPU 0 idles.
//!
//! # Floors
//! Each module imports only modules on lower floors (its `use super::…` and
//! `crate::kernel::…` lines show it). A lower floor that must reach up offers a hook or a
//! registry instead (`task::set_exit_hook`, `work::register`, the `exception` and `irq`
//! hooks of `hotmem-arch`), and this module, the top floor, connects them. Nothing below
//! imports this module.
//! ```text
//! floor  module     holds                                           imports (kernel/)
//!   5    mod.rs     boot, SMP bring-up, interrupt hooks, wiring     any
//!   4    shell      executes commands, prints every record          console cpus hog inject
//!                                                                   mem msi spin_test task vmem
//!   3    vmem/      virtio-mem glue; inside it hal, memory, msix    inject mem migrate msi
//!                   < transport < device < probe < slots            work
//!        hog        the hog and pin workload                        cpus mem migrate task
//!   2    migrate    rmap lock, engine page tables, fault hook       inject mem task
//!        msi        MSI controller, MSI-X of a function, sources    mem
//!        work       the worker and its registry of Work items       task
//!        console    PL011 output and input, the logger              task
//!        spin_test  the spin test load                              mem task
//!   1    task       threads, switching, wait queues, address spaces mem
//!        heap       the global allocator                            inject mem
//!   0    mem        the memory model behind its lock, store, tables -
//!        inject     the fault-injection plan behind its lock        -
//!        cpus       per-CPU records                                 -
//! ```
//! `println!` belongs to `console`; only `shell` uses it (this module writes the panic line
//! through `console::emergency_line`).

pub mod console;
mod cpus;
mod heap;
mod hog;
mod inject;
pub mod mem;
mod migrate;
mod msi;
mod shell;
mod spin_test;
pub mod task;
mod vmem;
mod work;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use cpus::{CPUS, NR_CPUS};
use hotmem::dt::{self, BootInfo, GicInfo, PsciMethod};
use hotmem::shell::BootArgs;
use hotmem_arch::addr::PhysRange;
use hotmem_arch::cpu;
use hotmem_arch::gic::{self, GicConfig, Trigger};
use hotmem_arch::layout::{self, MAX_CPUS, PAGE_SIZE};
use hotmem_arch::pgtable::{Attrs, Granule, MapError};
use hotmem_arch::{boot, exception, irq, mmu, psci, timer};

/// Timer tick rate.
pub const TICK_HZ: u64 = 100;

static TIMER_INTID: AtomicU64 = AtomicU64::new(27);

/// Boot information, kept for the whole run (the DTB stays reserved and mapped).
pub static BOOT_INFO: spin::Once<BootInfo<'static>> = spin::Once::new();

/// Frees the stacks of exited tasks in the worker (scheduled by the task-exit hook).
static REAPER: work::Work = work::Work::new(task::reap);

#[no_mangle]
extern "C" fn kernel_main(dtb_pa: u64, kimage_pa: u64) -> ! {
    // SAFETY: `kernel_main` runs once, first, on the boot CPU, still on the boot tables
    // with their identity map; `kimage_pa` is what the boot code says KIMAGE_VA maps.
    if unsafe { mmu::init(kimage_pa) }.is_err() {
        // No console yet: nothing to print.
        psci_off_any();
    }
    mmu::disable_ttbr0_walks();
    exception::set_dump_printer(console::emergency_line);

    let blob = map_dtb(dtb_pa);
    let info = match blob.map(|b| dt::parse(b, dtb_pa)) {
        Some(Ok(info)) => info,
        // Without a device tree there is no console and no memory map.
        _ => psci_off_any(),
    };
    if let Some(m) = info.psci {
        psci::set_method(match m {
            PsciMethod::Hvc => psci::Method::Hvc,
            PsciMethod::Smc => psci::Method::Smc,
        });
    }
    let Some(uart) = info.uart else {
        psci_off_any()
    };
    let uart_regs = PhysRange {
        base: uart.range.base,
        size: uart.range.size.max(PAGE_SIZE),
    };
    match mmu::map_mmio(uart_regs) {
        // SAFETY: the UART's registers were just mapped as Device memory, permanently.
        Ok(va) => unsafe { console::init(va.0 as usize) },
        Err(_) => psci_off_any(),
    }
    // Unknown options are reported once the logger is up.
    let mut unknown: arrayvec::ArrayVec<&str, 8> = arrayvec::ArrayVec::new();
    let args = BootArgs::parse(info.bootargs, |bad| {
        let _ = unknown.try_push(bad);
    });
    console::init_logger(args.loglevel);
    log::info!("hotmem {} booting", env!("CARGO_PKG_VERSION"));
    for bad in unknown {
        log::warn!("bootargs: ignoring unknown option '{bad}'");
    }
    vmem::configure(&args);
    inject::configure(&args);
    for w in &info.warnings {
        log::warn!("device tree: {}", w.0);
    }

    let pa_bits = map_ram(&info);
    let info = BOOT_INFO.call_once(|| info);
    mem::init(info, pa_bits);
    // Fault injection of page allocations: the model asks the plan before each one.
    if let Some(mm) = mem::mm_lock().as_mut() {
        mm.set_alloc_fault(Some(inject::page_alloc_fails));
        mm.set_memmap_on_memory(args.memmap_on_memory);
    }
    log::info!(
        "mm: memmap_on_memory={}",
        if args.memmap_on_memory { "on" } else { "off" }
    );

    // Deferred work: the worker runs these, in this order; an exited task schedules the
    // reaper.
    work::register(&REAPER);
    work::register(&vmem::CONVERGE);
    work::register(&vmem::SLOTS);
    task::set_exit_hook(|| REAPER.schedule());
    exception::set_sync_hook(migrate::fault_hook);
    exception::set_irq_hook(|frame| {
        gic::handle_irq();
        task::irq_exit(frame);
    });
    init_gic(info);
    if let Some(t) = info.timer {
        TIMER_INTID.store(t.virt_intid as u64, Ordering::Relaxed);
    }
    let _ = irq::register(TIMER_INTID.load(Ordering::Relaxed) as u32, timer_irq);
    let _ = irq::register(task::RESCHED_SGI, task::resched_interrupt);
    if let Some(intid) = uart.intid {
        if irq::register(intid, console::rx_interrupt).is_ok() {
            if let Err(e) = gic::enable(intid, Trigger::Level) {
                log::error!("console: cannot enable UART interrupt {intid}: {e:?}");
            }
        }
    } else {
        log::warn!("console: the UART has no interrupt in the device tree; input will not work");
    }
    cpu_online(0);
    list_irq_sources(uart.intid);
    // MSIs (the ITS with LPIs to CPU 0, or the v2m frame) before PCI probe asks for them.
    msi::init(info, args.pci_msi);

    start_secondaries(info);
    vmem::probe(info, pa_bits);
    task::spawn("worker", work::worker);
    task::spawn("shell", || {
        shell::run();
    });
    task::idle_loop()
}

/// Maps the DTB (page by page, it need not be aligned) and returns it as a byte slice.
fn map_dtb(dtb_pa: u64) -> Option<&'static [u8]> {
    let map_pages = |pa: u64, len: u64| -> Result<(), MapError> {
        let start = pa & !(PAGE_SIZE - 1);
        let mut p = start;
        while p < pa + len {
            let page = PhysRange {
                base: p,
                size: PAGE_SIZE,
            };
            match mmu::map_linear(page, Attrs::RAM, Granule::Page4K) {
                Ok(()) | Err(MapError::AlreadyMapped(_)) => {}
                Err(e) => return Err(e),
            }
            p += PAGE_SIZE;
        }
        Ok(())
    };
    if dtb_pa == 0 || dtb_pa % 8 != 0 {
        return None;
    }
    map_pages(dtb_pa, 64).ok()?;
    let va = layout::phys_to_virt(dtb_pa) as *const u8;
    // SAFETY: the first 64 bytes at `va` were just mapped (the header is 40 bytes).
    let header = unsafe { core::slice::from_raw_parts(va, 64) };
    let size = dt::total_size(header).ok()?;
    if !(64..=(64 << 20)).contains(&size) {
        return None;
    }
    map_pages(dtb_pa, size as u64).ok()?;
    // SAFETY: `size` bytes from `va` are mapped RAM holding the DTB. The blob's range is
    // reserved (BootInfo::dtb) and never written, and it stays mapped: the RAM mapping added
    // later keeps these pages (same VA, same PA).
    Some(unsafe { core::slice::from_raw_parts(va, size) })
}

/// Maps every usable memory region into the linear map (1 GiB blocks where aligned).
fn map_ram(info: &BootInfo) -> u32 {
    let cpu_bits = cpu::pa_bits();
    let bits = layout::usable_pa_bits(cpu_bits);
    log::info!("physical addresses: CPU {cpu_bits} bits, kernel supports {bits} bits");
    for r in &info.memory {
        let (base, end) = (r.range.base, r.range.end());
        if end > 1 << bits {
            log::error!(
                "memory 0x{base:x}-0x{end:x} (node {}) lies above the {bits}-bit physical limit; not used",
                r.node
            );
            continue;
        }
        let (b, e) = (
            (base + PAGE_SIZE - 1) & !(PAGE_SIZE - 1),
            end & !(PAGE_SIZE - 1),
        );
        if e <= b {
            continue;
        }
        // Pages already mapped (the DTB) are mapped identically; map around them.
        if let Err(err) = map_skipping_mapped(b, e) {
            log::error!("memory 0x{b:x}-0x{e:x}: cannot map: {err:?}");
        }
        log::info!(
            "memory: node {} 0x{base:x}-0x{end:x} ({} MiB)",
            r.node,
            r.range.size >> 20
        );
    }
    bits
}

fn map_skipping_mapped(mut b: u64, e: u64) -> Result<(), MapError> {
    while b < e {
        let rest = PhysRange {
            base: b,
            size: e - b,
        };
        match mmu::map_linear(rest, Attrs::RAM, Granule::Block1G) {
            Ok(()) => return Ok(()),
            // `map` stops at the first mapped page, keeping what it mapped before it:
            // step over that page and go on.
            Err(MapError::AlreadyMapped(va)) => {
                b = layout::linear_virt_to_phys(va).unwrap_or(e) + PAGE_SIZE;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn init_gic(info: &BootInfo) {
    let map = |r: dt::PhysRange| mmu::map_mmio(r).map(|va| va.0 as usize);
    let cfg = match info.gic {
        Some(GicInfo::V2 { gicd, gicc, .. }) => match (map(gicd), map(gicc)) {
            (Ok(gicd_va), Ok(gicc_va)) => GicConfig::V2 { gicd_va, gicc_va },
            _ => {
                log::error!("gic: cannot map GICv2 registers");
                return;
            }
        },
        Some(GicInfo::V3 { gicd, gicr, .. }) => match (map(gicd), map(gicr)) {
            (Ok(gicd_va), Ok(gicr_va)) => GicConfig::V3 {
                gicd_va,
                gicr_va,
                gicr_pa: gicr.base,
                gicr_size: gicr.size as usize,
            },
            _ => {
                log::error!("gic: cannot map GICv3 registers");
                return;
            }
        },
        None => {
            log::error!("gic: no interrupt controller in the device tree; no interrupts");
            return;
        }
    };
    // SAFETY: the GIC's register ranges from the DT were just mapped as Device memory and
    // stay mapped forever.
    unsafe { gic::init(cfg) };
    log::info!("gic: version {}", gic::version());
}

/// The wired sources `irqs` lists next to the devices' (which their probe adds).
fn list_irq_sources(uart_intid: Option<u32>) {
    use alloc::string::ToString;
    let timer = TIMER_INTID.load(Ordering::Relaxed) as u32;
    msi::add_source("timer".to_string(), msi::Kind::Ppi, timer, None);
    msi::add_source(
        "resched".to_string(),
        msi::Kind::Sgi,
        task::RESCHED_SGI,
        None,
    );
    if let Some(intid) = uart_intid {
        msi::add_source("uart".to_string(), msi::Kind::Spi, intid, None);
    }
}

fn timer_irq(_intid: u32) {
    timer::rearm_tick();
    CPUS[cpu::index()].ticks.fetch_add(1, Ordering::Relaxed);
    work::tick();
    task::tick();
}

/// Per-CPU part of bring-up, on the CPU itself.
fn cpu_online(idx: usize) {
    cpu::set_index(idx);
    CPUS[idx]
        .mpidr
        .store(cpu::mpidr_affinity(), Ordering::Relaxed);
    if let Err(e) = gic::init_cpu() {
        log::error!("cpu{idx}: interrupt controller: {e:?}");
    }
    let intid = TIMER_INTID.load(Ordering::Relaxed) as u32;
    if let Err(e) = gic::enable(intid, Trigger::Level) {
        log::error!("cpu{idx}: cannot enable timer interrupt: {e:?}");
    }
    if let Err(e) = gic::enable(task::RESCHED_SGI, Trigger::Edge) {
        log::error!("cpu{idx}: cannot enable the reschedule SGI: {e:?}");
    }
    timer::start_tick(TICK_HZ);
    task::init_cpu(idx);
    CPUS[idx].online.store(true, Ordering::Release);
    cpu::irq_enable();
}

fn start_secondaries(info: &BootInfo) {
    let me = cpu::mpidr_affinity();
    let n = info.cpus.len().clamp(1, MAX_CPUS);
    NR_CPUS.store(n, Ordering::Relaxed);
    if info.cpus.len() > MAX_CPUS {
        log::warn!(
            "smp: {} CPUs in the device tree; starting the first {MAX_CPUS}",
            info.cpus.len()
        );
    }
    // SAFETY: written before any secondary CPU starts; secondaries only read it.
    unsafe { *boot::secondary_ttbr1_slot() = mmu::kernel_root() };
    cpu::clean_dcache_range(boot::secondary_ttbr1_slot() as u64, 8);
    let entry_pa = mmu::image_virt_to_phys(boot::secondary_entry_va());
    let mut idx = 1;
    for c in info.cpus.iter().take(MAX_CPUS) {
        if c.mpidr == me {
            continue;
        }
        if idx >= n {
            break;
        }
        CPUS[idx].mpidr.store(c.mpidr, Ordering::Relaxed);
        match psci::cpu_on(c.mpidr, entry_pa, idx as u64) {
            Ok(()) => {
                let deadline = timer::now_ns() + 5_000_000_000;
                while !CPUS[idx].online.load(Ordering::Acquire) && timer::now_ns() < deadline {
                    core::hint::spin_loop();
                }
                if !CPUS[idx].online.load(Ordering::Acquire) {
                    log::error!("smp: cpu{idx} (mpidr 0x{:x}) did not come online", c.mpidr);
                }
            }
            Err(e) => log::error!("smp: CPU_ON of mpidr 0x{:x} failed: {e:?}", c.mpidr),
        }
        idx += 1;
    }
    let online = CPUS
        .iter()
        .filter(|c| c.online.load(Ordering::Relaxed))
        .count();
    log::info!("smp: {online} of {n} CPUs online");
}

#[no_mangle]
extern "C" fn secondary_main(idx: u64) -> ! {
    mmu::disable_ttbr0_walks();
    cpu_online(idx as usize);
    task::idle_loop()
}

fn psci_off_any() -> ! {
    // The DT (and so the PSCI method) may be unknown: try HVC, then SMC.
    psci::set_method(psci::Method::Hvc);
    let _ = psci::version();
    psci::set_method(psci::Method::Smc);
    psci::system_off()
}

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    cpu::irq_save();
    if !PANICKING.swap(true, Ordering::SeqCst) {
        match info.location() {
            Some(l) => console::emergency_line(format_args!(
                "PANIC: {} at {}:{}",
                info.message(),
                l.file(),
                l.line()
            )),
            None => console::emergency_line(format_args!("PANIC: {}", info.message())),
        }
    }
    psci::system_off()
}
