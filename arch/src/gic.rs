//! The Generic Interrupt Controller, versions 2 (GICD + GICC MMIO) and 3 (GICD + per-CPU
//! redistributors + system-register CPU interface).
//!
//! Model: the boot CPU initialises the distributor once ([`init`]); every CPU then
//! initialises its own CPU interface (and, on v3, its redistributor) with [`init_cpu`].
//! SPIs are routed to the boot CPU; PPIs (the timer) are enabled per CPU. All interrupts are
//! Group 1 (non-secure) with one priority, so they never preempt each other.
//! The IRQ vector calls [`handle_irq`], which acknowledges, dispatches through
//! [`crate::irq`], and ends each interrupt until none is pending.
//!
//! SGIs: [`send_sgi`] raises one on another CPU, named by its CPU index. [`init_cpu`]
//! records, per CPU index, what the GIC calls that CPU: its CPU interface mask on v2 (the
//! banked GICD_ITARGETSR0 reads back the caller's own bit; GICD_SGIR takes it as the
//! target list), its MPIDR affinity on v3 (ICC_SGI1R_EL1 names the target by Aff3.Aff2.Aff1
//! and a bit for Aff0). A CPU that has not run [`init_cpu`] cannot be targeted.
//!
//! LPIs (v3 with an ITS, see [`crate::its`]): [`enable_lpis`] gives the calling CPU's
//! redistributor an LPI configuration table (one byte per LPI, all disabled at first) and
//! a zeroed pending table from the kernel's memory, programs GICR_PROPBASER and
//! GICR_PENDBASER (cacheable, inner shareable; a table that reads back non-shareable is
//! cleaned to memory on every change) and sets EnableLPIs. Only the boot CPU does this:
//! every LPI is routed to CPU 0's collection. The LPI INTID space is capped at 14 bits
//! (8192 LPIs, an 8 KiB configuration table), or less when GICD_TYPER.IDbits or the
//! PROPBASER read back say so. [`set_lpi_enabled`] writes one configuration byte; the ITS
//! must then `INV` it.
//!
//! References: Arm IHI 0048B (GICv2), Arm IHI 0069 (GICv3/v4).

use crate::mmio::Mmio;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    /// Distributor registers shared by v2 and v3 (IHI 0069 12.9).
    pub GicdRegs {
        (0x000 => ctlr: ReadWrite<u32>),
        (0x004 => typer: ReadOnly<u32>),
        (0x008 => iidr: ReadOnly<u32>),
        (0x00c => _reserved0),
        (0x080 => igroupr: [ReadWrite<u32>; 32]),
        (0x100 => isenabler: [ReadWrite<u32>; 32]),
        (0x180 => icenabler: [ReadWrite<u32>; 32]),
        (0x200 => ispendr: [ReadWrite<u32>; 32]),
        (0x280 => icpendr: [ReadWrite<u32>; 32]),
        (0x300 => isactiver: [ReadWrite<u32>; 32]),
        (0x380 => icactiver: [ReadWrite<u32>; 32]),
        (0x400 => ipriorityr: [ReadWrite<u32>; 255]),
        (0x7fc => _reserved1),
        (0x800 => itargetsr: [ReadWrite<u32>; 255]),
        (0xbfc => _reserved2),
        (0xc00 => icfgr: [ReadWrite<u32>; 64]),
        (0xd00 => _reserved3),
        (0xf00 => sgir: WriteOnly<u32>),
        (0xf04 => @END),
    },
    /// GICD_IROUTER<n> (v3), at distributor + 0x6000; index n = INTID.
    pub GicdRouter {
        (0x0000 => irouter: [ReadWrite<u64>; 1020]),
        (0x1fe0 => @END),
    },
    /// GICv2 CPU interface (IHI 0048B 4.3).
    pub GiccRegs {
        (0x00 => ctlr: ReadWrite<u32>),
        (0x04 => pmr: ReadWrite<u32>),
        (0x08 => bpr: ReadWrite<u32>),
        (0x0c => iar: ReadOnly<u32>),
        (0x10 => eoir: WriteOnly<u32>),
        (0x14 => @END),
    },
    /// GICv3 redistributor, RD_base frame (IHI 0069 12.10).
    pub GicrRd {
        (0x00 => ctlr: ReadWrite<u32>),
        (0x04 => iidr: ReadOnly<u32>),
        (0x08 => typer: ReadOnly<u64>),
        (0x10 => statusr: ReadWrite<u32>),
        (0x14 => waker: ReadWrite<u32>),
        (0x18 => _reserved0),
        (0x70 => propbaser: ReadWrite<u64>),
        (0x78 => pendbaser: ReadWrite<u64>),
        (0x80 => @END),
    },
    /// GICv3 redistributor, SGI_base frame (RD_base + 64 KiB).
    pub GicrSgi {
        (0x000 => _reserved0),
        (0x080 => igroupr0: ReadWrite<u32>),
        (0x084 => _reserved1),
        (0x100 => isenabler0: ReadWrite<u32>),
        (0x104 => _reserved2),
        (0x180 => icenabler0: ReadWrite<u32>),
        (0x184 => _reserved3),
        (0x400 => ipriorityr: [ReadWrite<u32>; 8]),
        (0x420 => _reserved4),
        (0xc00 => icfgr0: ReadWrite<u32>),
        (0xc04 => icfgr1: ReadWrite<u32>),
        (0xc08 => @END),
    }
}

/// Where the kernel mapped the GIC (virtual addresses).
#[derive(Debug, Clone, Copy)]
pub enum GicConfig {
    /// GICv2: distributor and CPU interface.
    V2 {
        /// Distributor registers.
        gicd_va: usize,
        /// CPU interface registers.
        gicc_va: usize,
    },
    /// GICv3: distributor and redistributors (the CPU interface is system registers).
    V3 {
        /// Distributor registers.
        gicd_va: usize,
        /// First redistributor frame.
        gicr_va: usize,
        /// Its physical address (an ITS may name redistributors by address).
        gicr_pa: u64,
        /// Bytes of the redistributor region.
        gicr_size: usize,
    },
}

/// Why a GIC call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicError {
    /// No redistributor frame matches this CPU's MPIDR.
    NoRedistributor(u64),
    /// The GIC was not initialised.
    NotInitialised,
    /// No LPIs: GICv2, GICD_TYPER.LPIS or GICR_TYPER.PLPIS clear, or EnableLPIs already
    /// set by someone before us (its tables cannot be replaced).
    NoLpis,
    /// The kernel had no memory for the LPI tables.
    NoMemory,
}

const PRIORITY: u32 = 0xa0;
const SPURIOUS: u32 = 1020;

enum Gic {
    V2 {
        gicd: Mmio<GicdRegs>,
        gicc: Mmio<GiccRegs>,
    },
    V3 {
        gicd: Mmio<GicdRegs>,
        router: Mmio<GicdRouter>,
        gicr_va: usize,
        gicr_pa: u64,
        gicr_size: usize,
    },
}

/// The LPI configuration table (its virtual address, 0 before [`enable_lpis`]), the first
/// INTID past it, and whether writes to it must be cleaned to memory.
static LPI_PROP_VA: AtomicUsize = AtomicUsize::new(0);
static LPI_LIMIT: AtomicU32 = AtomicU32::new(0);
static LPI_CLEAN: AtomicBool = AtomicBool::new(false);
/// Most LPI INTID bits we configure (see the module doc).
const MAX_LPI_ID_BITS: u32 = 14;

static GIC: spin::Once<Gic> = spin::Once::new();
/// Per-CPU redistributor RD_base (v3), indexed by CPU index.
static GICR_OF_CPU: [AtomicUsize; crate::layout::MAX_CPUS] =
    [const { AtomicUsize::new(0) }; crate::layout::MAX_CPUS];
/// Per CPU index, how SGIs address it: v2, its CPU interface mask (bits 7:0); v3, its
/// MPIDR affinity. Bit 63 is set once the CPU ran [`init_cpu`].
static SGI_TARGET_OF_CPU: [AtomicU64; crate::layout::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::layout::MAX_CPUS];
const SGI_TARGET_VALID: u64 = 1 << 63;

fn gic() -> Result<&'static Gic, GicError> {
    GIC.get().ok_or(GicError::NotInitialised)
}

/// GICv3 CPU interface system registers (not in aarch64-cpu).
mod icc {
    macro_rules! sysreg {
        ($read:ident, $write:ident, $name:literal) => {
            #[allow(dead_code)]
            pub fn $read() -> u64 {
                let v: u64;
                // SAFETY: reading a GIC CPU interface register has no side effects except
                // for IAR, which the caller reads on purpose to acknowledge an interrupt.
                unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nostack)) };
                v
            }
            #[allow(dead_code)]
            pub fn $write(v: u64) {
                // SAFETY: writes to the CPU interface configure interrupt delivery on this
                // CPU only; callers pass architecturally valid values.
                unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nostack)) };
            }
        };
    }
    sysreg!(sre, set_sre, "S3_0_C12_C12_5");
    sysreg!(pmr, set_pmr, "S3_0_C4_C6_0");
    sysreg!(iar1, set_iar1, "S3_0_C12_C12_0");
    sysreg!(eoir1, set_eoir1, "S3_0_C12_C12_1");
    sysreg!(bpr1, set_bpr1, "S3_0_C12_C12_3");
    sysreg!(igrpen1, set_igrpen1, "S3_0_C12_C12_7");
    sysreg!(sgi1r, set_sgi1r, "S3_0_C12_C11_5");
}

/// Initialises the distributor. Call once, on the boot CPU, before [`init_cpu`].
///
/// # Safety
/// The addresses in `cfg` must be live Device mappings of the GIC described by the DT, and
/// stay mapped forever.
pub unsafe fn init(cfg: GicConfig) {
    let g = GIC.call_once(|| match cfg {
        // SAFETY: the caller guarantees the mappings (function contract).
        GicConfig::V2 { gicd_va, gicc_va } => unsafe {
            Gic::V2 {
                gicd: Mmio::new(gicd_va),
                gicc: Mmio::new(gicc_va),
            }
        },
        GicConfig::V3 {
            gicd_va,
            gicr_va,
            gicr_pa,
            gicr_size,
        } => {
            // SAFETY: as above; GICD_IROUTER lives at distributor + 0x6000.
            let (gicd, router) = unsafe { (Mmio::new(gicd_va), Mmio::new(gicd_va + 0x6000)) };
            Gic::V3 {
                gicd,
                router,
                gicr_va,
                gicr_pa,
                gicr_size,
            }
        }
    });
    match g {
        Gic::V2 { gicd, .. } => {
            gicd.ctlr.set(0);
            let lines = lines(gicd);
            // Target the calling (boot) CPU: ITARGETSR0 reads back this CPU's own mask.
            let me = gicd.itargetsr[0].get() & 0xff;
            for n in (32..lines).step_by(4) {
                gicd.ipriorityr[n / 4].set(PRIORITY * 0x0101_0101);
                gicd.itargetsr[n / 4].set(me * 0x0101_0101);
            }
            for n in (32..lines).step_by(32) {
                gicd.icenabler[n / 32].set(u32::MAX);
                gicd.icpendr[n / 32].set(u32::MAX);
            }
            gicd.ctlr.set(1);
        }
        Gic::V3 { gicd, router, .. } => {
            gicd.ctlr.set(0);
            wait_rwp(gicd);
            let lines = lines(gicd);
            let aff = crate::cpu::mpidr_affinity();
            for n in (32..lines).step_by(32) {
                gicd.icenabler[n / 32].set(u32::MAX);
                gicd.icpendr[n / 32].set(u32::MAX);
                gicd.igroupr[n / 32].set(u32::MAX);
            }
            for n in (32..lines).step_by(4) {
                gicd.ipriorityr[n / 4].set(PRIORITY * 0x0101_0101);
            }
            for n in 32..lines.min(1020) {
                router.irouter[n].set(aff);
            }
            // ARE | EnableGrp1 | EnableGrp0 (single security state).
            gicd.ctlr.set((1 << 4) | (1 << 1) | 1);
            wait_rwp(gicd);
        }
    }
}

fn lines(gicd: &Mmio<GicdRegs>) -> usize {
    (((gicd.typer.get() & 0x1f) as usize + 1) * 32).min(1020)
}

fn wait_rwp(gicd: &Mmio<GicdRegs>) {
    while gicd.ctlr.get() & (1 << 31) != 0 {
        core::hint::spin_loop();
    }
}

/// Initialises this CPU's interface (and redistributor on v3). Call on every CPU after
/// [`crate::cpu::set_index`].
pub fn init_cpu() -> Result<(), GicError> {
    let target = match gic()? {
        Gic::V2 { gicd, .. } => u64::from(gicd.itargetsr[0].get() & 0xff),
        Gic::V3 { .. } => crate::cpu::mpidr_affinity(),
    };
    init_cpu_interface()?;
    if let Some(slot) = SGI_TARGET_OF_CPU.get(crate::cpu::index()) {
        slot.store(target | SGI_TARGET_VALID, Ordering::Release);
    }
    Ok(())
}

fn init_cpu_interface() -> Result<(), GicError> {
    match gic()? {
        Gic::V2 { gicd, gicc } => {
            // Banked SGI/PPI registers of this CPU.
            gicd.icenabler[0].set(u32::MAX);
            for n in (0..32).step_by(4) {
                gicd.ipriorityr[n / 4].set(PRIORITY * 0x0101_0101);
            }
            gicc.pmr.set(0xf0);
            gicc.bpr.set(0);
            gicc.ctlr.set(1);
        }
        Gic::V3 {
            gicr_va, gicr_size, ..
        } => {
            let rd = find_redistributor(*gicr_va, *gicr_size)?;
            GICR_OF_CPU[crate::cpu::index()].store(rd, Ordering::Release);
            // SAFETY: `rd` is a redistributor frame inside the mapped GICR region.
            let (rdr, sgi) =
                unsafe { (Mmio::<GicrRd>::new(rd), Mmio::<GicrSgi>::new(rd + 0x1_0000)) };
            // Wake the redistributor: clear ProcessorSleep, wait for ChildrenAsleep = 0.
            rdr.waker.set(rdr.waker.get() & !(1 << 1));
            while rdr.waker.get() & (1 << 2) != 0 {
                core::hint::spin_loop();
            }
            sgi.icenabler0.set(u32::MAX);
            sgi.igroupr0.set(u32::MAX);
            for i in 0..8 {
                sgi.ipriorityr[i].set(PRIORITY * 0x0101_0101);
            }
            icc::set_sre(icc::sre() | 0x7);
            crate::cpu::isb();
            icc::set_pmr(0xf0);
            icc::set_bpr1(0);
            icc::set_igrpen1(1);
            crate::cpu::isb();
        }
    }
    Ok(())
}

/// Raises SGI `intid` (0-15) on the CPU with index `cpu` (which may be the caller). Earlier
/// memory writes of this CPU are visible to the target before it takes the interrupt.
pub fn send_sgi(intid: u32, cpu: usize) -> Result<(), GicError> {
    let g = gic()?;
    let target = SGI_TARGET_OF_CPU
        .get(cpu)
        .map(|t| t.load(Ordering::Acquire))
        .filter(|t| t & SGI_TARGET_VALID != 0)
        .ok_or(GicError::NotInitialised)?
        & !SGI_TARGET_VALID;
    let intid = intid & 0xf;
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    match g {
        // TargetListFilter = 0 (the list), CPUTargetList [23:16], NSATT = 0, INTID [3:0].
        Gic::V2 { gicd, .. } => gicd.sgir.set(((target as u32 & 0xff) << 16) | intid),
        Gic::V3 { .. } => {
            let aff0 = target & 0xff;
            let aff1 = (target >> 8) & 0xff;
            let aff2 = (target >> 16) & 0xff;
            let aff3 = (target >> 32) & 0xff;
            // TargetList [15:0] holds Aff0 % 16; RS [47:44] selects the range Aff0 / 16;
            // IRM [40] = 0: only the listed CPUs.
            icc::set_sgi1r(
                (1 << (aff0 % 16))
                    | (aff1 << 16)
                    | (u64::from(intid) << 24)
                    | (aff2 << 32)
                    | ((aff0 / 16) << 44)
                    | (aff3 << 48),
            );
            crate::cpu::isb();
        }
    }
    Ok(())
}

fn find_redistributor(base: usize, size: usize) -> Result<usize, GicError> {
    let aff = crate::cpu::mpidr_affinity();
    // GICR_TYPER.Affinity_Value is Aff3.Aff2.Aff1.Aff0 packed in bits [63:32].
    let want = ((aff >> 8) & 0xff00_0000) | (aff & 0xff_ffff);
    let mut off = 0;
    while off + 0x2_0000 <= size {
        // SAFETY: `base + off` is a frame inside the mapped redistributor region.
        let rd = unsafe { Mmio::<GicrRd>::new(base + off) };
        let typer = rd.typer.get();
        if typer >> 32 == want {
            return Ok(base + off);
        }
        if typer & (1 << 4) != 0 {
            break; // Last redistributor in this region.
        }
        // VLPIS (bit 1): two extra 64 KiB frames.
        off += if typer & (1 << 1) != 0 {
            0x4_0000
        } else {
            0x2_0000
        };
    }
    Err(GicError::NoRedistributor(aff))
}

/// Trigger mode of an interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Level-sensitive.
    Level,
    /// Edge-triggered.
    Edge,
}

/// Enables `intid`: an SPI globally (routed to the boot CPU), a PPI or SGI on this CPU.
pub fn enable(intid: u32, trigger: Trigger) -> Result<(), GicError> {
    let n = intid as usize;
    let bit = 1u32 << (n % 32);
    match gic()? {
        Gic::V2 { gicd, .. } => {
            set_cfg(gicd, n, trigger);
            gicd.isenabler[n / 32].set(bit);
        }
        Gic::V3 { gicd, .. } if n >= 32 => {
            set_cfg(gicd, n, trigger);
            gicd.isenabler[n / 32].set(bit);
        }
        Gic::V3 { .. } => {
            let rd = GICR_OF_CPU[crate::cpu::index()].load(Ordering::Acquire);
            if rd == 0 {
                return Err(GicError::NotInitialised);
            }
            // SAFETY: `rd` was found by `init_cpu` inside the mapped GICR region.
            let sgi = unsafe { Mmio::<GicrSgi>::new(rd + 0x1_0000) };
            if n >= 16 {
                let shift = (n % 16) * 2;
                let v = sgi.icfgr1.get() & !(0b10 << shift);
                sgi.icfgr1.set(
                    v | if trigger == Trigger::Edge {
                        0b10 << shift
                    } else {
                        0
                    },
                );
            }
            sgi.isenabler0.set(bit);
        }
    }
    Ok(())
}

/// Disables `intid` (SPI globally, PPI on this CPU).
pub fn disable(intid: u32) -> Result<(), GicError> {
    let n = intid as usize;
    let bit = 1u32 << (n % 32);
    match gic()? {
        Gic::V2 { gicd, .. } => gicd.icenabler[n / 32].set(bit),
        Gic::V3 { gicd, .. } if n >= 32 => gicd.icenabler[n / 32].set(bit),
        Gic::V3 { .. } => {
            let rd = GICR_OF_CPU[crate::cpu::index()].load(Ordering::Acquire);
            if rd != 0 {
                // SAFETY: `rd` was found by `init_cpu` inside the mapped GICR region.
                unsafe { Mmio::<GicrSgi>::new(rd + 0x1_0000) }
                    .icenabler0
                    .set(bit);
            }
        }
    }
    Ok(())
}

fn set_cfg(gicd: &Mmio<GicdRegs>, n: usize, trigger: Trigger) {
    if n < 16 {
        return; // SGIs are always edge-triggered.
    }
    let reg = &gicd.icfgr[n / 16];
    let shift = (n % 16) * 2;
    let v = reg.get() & !(0b10 << shift);
    reg.set(
        v | if trigger == Trigger::Edge {
            0b10 << shift
        } else {
            0
        },
    );
}

/// Acknowledges and dispatches every pending interrupt. Called by the IRQ vector hook.
pub fn handle_irq() {
    let Ok(g) = gic() else { return };
    loop {
        let (raw, intid) = match g {
            Gic::V2 { gicc, .. } => {
                let iar = gicc.iar.get();
                (iar, iar & 0x3ff)
            }
            Gic::V3 { .. } => {
                let iar = icc::iar1() as u32;
                (iar, iar & 0xff_ffff)
            }
        };
        if (SPURIOUS..1024).contains(&intid) {
            if intid == 1023 {
                crate::irq::note_spurious();
            }
            return;
        }
        crate::irq::dispatch(intid);
        match g {
            Gic::V2 { gicc, .. } => gicc.eoir.set(raw),
            Gic::V3 { .. } => icc::set_eoir1(raw as u64),
        }
    }
}

/// Gives the calling CPU's redistributor its LPI tables and enables LPIs there (see the
/// module doc). Returns the first INTID past the LPIs it configured.
pub fn enable_lpis(mem: &mut dyn crate::its::GicMemory) -> Result<u32, GicError> {
    use crate::its::{lpi_config, shareability, FIRST_LPI, INNER_SHAREABLE, INNER_WB};
    let Gic::V3 { gicd, .. } = gic()? else {
        return Err(GicError::NoLpis);
    };
    let rd = GICR_OF_CPU[crate::cpu::index()].load(Ordering::Acquire);
    if rd == 0 {
        return Err(GicError::NotInitialised);
    }
    // SAFETY: `rd` was found by `init_cpu` inside the mapped GICR region.
    let rdr = unsafe { Mmio::<GicrRd>::new(rd) };
    let gicd_typer = gicd.typer.get();
    if gicd_typer & (1 << 17) == 0 || rdr.typer.get() & 1 == 0 || rdr.ctlr.get() & 1 != 0 {
        return Err(GicError::NoLpis);
    }
    let gicd_bits = ((gicd_typer >> 19) & 0x1f) + 1;
    let mut bits = gicd_bits.min(MAX_LPI_ID_BITS);
    if bits <= 13 {
        return Err(GicError::NoLpis);
    }
    // IDbits [4:0] = bits - 1, InnerCache [9:7], Shareability [11:10], PA [51:12].
    let attrs = INNER_WB << 7 | INNER_SHAREABLE << 10;
    let prop_bytes = (1usize << bits) - FIRST_LPI as usize;
    let (prop_pa, prop_va) = mem
        .alloc_zeroed(prop_bytes, 4096)
        .ok_or(GicError::NoMemory)?;
    let pend_bytes = (1usize << bits) / 8;
    let (pend_pa, _) = mem
        .alloc_zeroed(pend_bytes, 64 << 10)
        .ok_or(GicError::NoMemory)?;
    // SAFETY: `prop_va` is `prop_bytes` of memory the kernel gave us for good.
    unsafe {
        core::ptr::write_bytes(
            prop_va as *mut u8,
            lpi_config(PRIORITY as u8, false),
            prop_bytes,
        )
    };
    crate::cpu::clean_dcache_range(prop_va as u64, prop_bytes as u64);
    rdr.propbaser
        .set((prop_pa & 0x000f_ffff_ffff_f000) | attrs | u64::from(bits - 1));
    let prop = rdr.propbaser.get();
    // A redistributor with fewer ID bits keeps fewer (IHI 0069 12.11.32).
    bits = bits.min((prop & 0x1f) as u32 + 1);
    // PTZ (bit 62): the pending table is zero.
    rdr.pendbaser
        .set((1 << 62) | (pend_pa & 0x000f_ffff_ffff_0000) | attrs);
    let clean = shareability(prop) == 0 || shareability(rdr.pendbaser.get()) == 0;
    LPI_CLEAN.store(clean, Ordering::Relaxed);
    LPI_PROP_VA.store(prop_va, Ordering::Release);
    LPI_LIMIT.store(1 << bits, Ordering::Release);
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    rdr.ctlr.set(rdr.ctlr.get() | 1);
    crate::cpu::isb();
    Ok(1 << bits)
}

/// The first INTID past the configured LPIs (0 before [`enable_lpis`]).
pub fn lpi_limit() -> u32 {
    LPI_LIMIT.load(Ordering::Acquire)
}

/// Sets LPI `intid`'s enable bit (priority as every other interrupt). The ITS must `INV`
/// it before the redistributor is sure to see the change.
pub fn set_lpi_enabled(intid: u32, enabled: bool) -> Result<(), GicError> {
    let va = LPI_PROP_VA.load(Ordering::Acquire);
    if va == 0 || !(crate::its::FIRST_LPI..lpi_limit()).contains(&intid) {
        return Err(GicError::NoLpis);
    }
    let byte = (va + (intid - crate::its::FIRST_LPI) as usize) as *mut u8;
    // SAFETY: `byte` is inside the configuration table `enable_lpis` allocated for good
    // (the range check above); the GIC only reads it.
    unsafe { byte.write_volatile(crate::its::lpi_config(PRIORITY as u8, enabled)) };
    if LPI_CLEAN.load(Ordering::Relaxed) {
        crate::cpu::clean_dcache_range(byte as u64, 1);
    }
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    Ok(())
}

/// CPU 0's redistributor: (physical address, GICR_TYPER.Processor_Number), for the ITS's
/// collection. `None` before CPU 0 ran [`init_cpu`] or on GICv2.
pub fn boot_redistributor() -> Option<(u64, u16)> {
    let Ok(Gic::V3 {
        gicr_va, gicr_pa, ..
    }) = gic()
    else {
        return None;
    };
    let rd = GICR_OF_CPU[0].load(Ordering::Acquire);
    if rd == 0 {
        return None;
    }
    // SAFETY: `rd` was found by `init_cpu` inside the mapped GICR region.
    let typer = unsafe { Mmio::<GicrRd>::new(rd) }.typer.get();
    Some((
        gicr_pa + (rd - gicr_va) as u64,
        ((typer >> 8) & 0xffff) as u16,
    ))
}

/// GIC version in use (2 or 3), 0 before [`init`].
pub fn version() -> u8 {
    match GIC.get() {
        Some(Gic::V2 { .. }) => 2,
        Some(Gic::V3 { .. }) => 3,
        None => 0,
    }
}
