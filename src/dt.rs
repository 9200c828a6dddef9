//! Device-tree parsing: turns the untrusted flattened device tree that QEMU (or any
//! boot loader) hands us in `x0` into a plain [`BootInfo`] value.
//!
//! Design:
//! - Parsing runs before the kernel has a heap, so every list is a fixed-capacity
//!   [`ArrayVec`]; entries beyond a capacity are dropped with a [`DtWarning`].
//! - The input is untrusted. A structurally broken blob (bad magic, truncated, offsets out
//!   of range) is a [`DtError`]; a broken or missing piece inside a valid blob (a memory
//!   node without `reg`, a PCI node with an odd `ranges`) becomes a warning and that piece
//!   is left out, so the kernel continues with what it could understand.
//! - Interrupt specifiers are translated to GIC INTIDs (SPI n -> 32 + n, PPI n -> 16 + n).
//! - Nothing here touches hardware; host tests feed DTBs dumped from QEMU
//!   (`-M virt,dumpdtb=FILE`) kept under `tests/dtb/`.
//!
//! TYPES BELOW ARE THE CONTRACT WITH THE KERNEL (src/main.rs, arch glue).  TODO(dt): implement.

use arrayvec::{ArrayString, ArrayVec};

/// Most memory nodes / ranges we keep.
pub const MAX_MEMORY_REGIONS: usize = 64;
/// Most reserved ranges (`/memreserve/` plus `/reserved-memory` children) we keep.
pub const MAX_RESERVED: usize = 64;
/// Most CPUs we keep.
pub const MAX_CPUS: usize = 16;
/// Most warnings we keep.
pub const MAX_WARNINGS: usize = 16;

/// A half-open physical range `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysRange {
    pub base: u64,
    pub size: u64,
}

/// One contiguous range of RAM from a `memory` node (a node with several `reg` entries
/// gives several regions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    pub range: PhysRange,
    /// `numa-node-id` of the memory node, 0 when absent.
    pub node: u32,
}

/// Why a range is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveKind {
    /// From the header's `/memreserve/` block.
    MemReserve,
    /// A child of `/reserved-memory` with a static `reg`.
    ReservedMemory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub range: PhysRange,
    pub kind: ReserveKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuInfo {
    /// The `reg` property: MPIDR affinity bits (Aff3..Aff0), the PSCI CPU_ON target.
    pub mpidr: u64,
    /// `numa-node-id`, 0 when absent.
    pub node: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciMethod {
    Hvc,
    Smc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicInfo {
    /// `arm,cortex-a15-gic` / `arm,gic-400`: distributor and CPU interface, optional v2m
    /// MSI frame (child `arm,gic-v2m-frame`).
    V2 { gicd: PhysRange, gicc: PhysRange, v2m: Option<PhysRange> },
    /// `arm,gic-v3`: distributor, the first redistributor region, optional ITS
    /// (child `arm,gic-v3-its`).
    V3 { gicd: PhysRange, gicr: PhysRange, its: Option<PhysRange> },
}

/// Architected timer (`arm,armv8-timer`) interrupts as INTIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerInfo {
    pub phys_intid: u32,
    pub virt_intid: u32,
}

/// PL011 (`arm,pl011`): the UART that `/chosen/stdout-path` names, else the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UartInfo {
    pub range: PhysRange,
    pub intid: Option<u32>,
}

/// Address space of a PCI `ranges` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciSpace {
    Io,
    Mem32,
    Mem64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciWindow {
    pub space: PciSpace,
    pub prefetchable: bool,
    pub pci_addr: u64,
    pub cpu_addr: u64,
    pub size: u64,
}

/// One `interrupt-map` entry, already resolved to a GIC INTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIrqMapEntry {
    /// Child unit address, high cell (bus/device/function bits as in `phys.hi`).
    pub child_hi: u32,
    /// INTx pin, 1 = INTA .. 4 = INTD.
    pub pin: u32,
    pub intid: u32,
}

/// ECAM host bridge (`pci-host-ecam-generic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciHostInfo {
    pub ecam: PhysRange,
    pub bus_start: u8,
    pub bus_end: u8,
    pub windows: ArrayVec<PciWindow, 8>,
    /// `interrupt-map-mask`: (phys.hi mask, pin mask).
    pub irq_map_mask: (u32, u32),
    pub irq_map: ArrayVec<PciIrqMapEntry, 32>,
    /// `msi-parent` / `msi-map` present.
    pub has_msi: bool,
}

/// Something in the tree we could not use; parsing went on without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtWarning(pub ArrayString<96>);

/// Everything the kernel takes from the device tree.
#[derive(Debug, Clone)]
pub struct BootInfo<'a> {
    /// Every memory node's ranges, sorted by base, never overlapping (overlaps are warnings
    /// and the later range is trimmed).
    pub memory: ArrayVec<MemoryRegion, MAX_MEMORY_REGIONS>,
    pub reserved: ArrayVec<Reservation, MAX_RESERVED>,
    /// The blob itself (`[dtb_pa, dtb_pa + totalsize)`), filled in by [`parse`] from the
    /// address the caller passes.
    pub dtb: PhysRange,
    /// `/chosen/bootargs`, "" when absent.
    pub bootargs: &'a str,
    pub cpus: ArrayVec<CpuInfo, MAX_CPUS>,
    pub psci: Option<PsciMethod>,
    pub gic: Option<GicInfo>,
    pub timer: Option<TimerInfo>,
    pub uart: Option<UartInfo>,
    pub pci: Option<PciHostInfo>,
    pub warnings: ArrayVec<DtWarning, MAX_WARNINGS>,
}

/// A blob we cannot read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtError {
    /// Fewer bytes than the header or than `totalsize`.
    Truncated,
    /// Header magic is not 0xd00dfeed.
    BadMagic,
    /// Anything else the `fdt` crate refused (bad offsets, bad strings, ...).
    Malformed,
}

/// Parses `blob`, which was found at physical address `dtb_pa`.
pub fn parse(blob: &[u8], dtb_pa: u64) -> Result<BootInfo<'_>, DtError> {
    let _ = (blob, dtb_pa);
    todo!("dt::parse")
}

/// `totalsize` from the header, so the caller knows how much to map before [`parse`].
/// Errors on a bad magic.
pub fn total_size(header: &[u8]) -> Result<usize, DtError> {
    if header.len() < 8 {
        return Err(DtError::Truncated);
    }
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if magic != 0xd00d_feed {
        return Err(DtError::BadMagic);
    }
    Ok(u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize)
}
