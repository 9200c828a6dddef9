//! Device-tree parsing: turns the untrusted flattened device tree that QEMU (or any
//! boot loader) hands us in `x0` into a plain [`BootInfo`] value.
//!
//! Design:
//! - Parsing runs before the kernel has a heap, so every list is a fixed-capacity
//!   [`ArrayVec`]; entries beyond a capacity are dropped with a [`DtWarning`].
//! - The input is untrusted and nothing here may panic on it. Three stages:
//!   1. `header`: [`parse`] checks the header itself (magic, `totalsize` against the
//!      slice, every block inside `totalsize`, no `u32` overflow) and then walks the whole
//!      structure block token by token (nesting, property lengths, name offsets, UTF-8
//!      names, depth at most [`MAX_DEPTH`]). Only a blob that passes is handed to the
//!      `fdt` crate, whose own arithmetic is not overflow-safe on hostile headers and
//!      whose node iterator silently stops below 15 levels.
//!   2. `walk`: one depth-first walk with `fdt` keeps a stack of ancestor frames
//!      (`#address-cells`, `#size-cells`, `ranges`, inherited `interrupt-parent`), so
//!      every `reg` is decoded with its parent's cell counts and translated up through
//!      each ancestor's `ranges` (an absent `ranges` is taken as identity). Property
//!      values are decoded from raw bytes (`cells`), not with `fdt`'s typed helpers (its
//!      `Reg` divides by the entry width, which is zero when both cell counts are 0).
//!   3. After the walk (`Walk::finish`): interrupt specifiers are resolved, because the
//!      GIC can come after the devices that use it (it does in QEMU's tree). They become
//!      GIC INTIDs (SPI n -> 32 + n, PPI n -> 16 + n). Memory is sorted and overlaps
//!      trimmed.
//! - Errors vs warnings: a blob we cannot read at all (short slice, bad magic, a header
//!   or structure block that does not hold together) is a [`DtError`]. A broken or
//!   missing piece inside a readable blob (a memory node without `reg`, a `reg` whose
//!   length is not a whole number of entries, an interrupt whose parent is not a GIC,
//!   a full list) becomes a [`DtWarning`] and that piece is left out, so the kernel
//!   continues with what it could understand.
//! - Nodes whose `status` is neither "okay" nor "ok" are ignored (QEMU's `secure=on`
//!   marks the secure UART and secure RAM "disabled").
//! - Nothing here touches hardware; host tests (`tests/dt/`) feed DTBs dumped from
//!   QEMU (`-M virt,dumpdtb=FILE`) kept under `tests/dtb/`, plus truncated and
//!   bit-flipped copies of them.
//!
//! Files: this one holds the public types (the contract with the kernel, `src/kernel/`)
//! and the entry points; `header` is stage 1; `cells` decodes words and property values;
//! `walk` is stage 2's walk and address translation and stage 3's finish; what the walk
//! takes from each kind of node lives in one file per kind: `memory` (RAM,
//! `/memreserve/`, `/reserved-memory`), `cpus` (CPUs, PSCI), `irq` (interrupt
//! controllers, GIC, timer, specifiers), `uart` (`/chosen`, PL011), `pci` (ECAM host
//! bridge, `ranges`, `interrupt-map`).
#![forbid(unsafe_code)]

use arrayvec::{ArrayString, ArrayVec};

mod cells;
mod cpus;
mod header;
mod irq;
mod memory;
mod pci;
mod uart;
mod walk;

use cells::be32;
use header::{block, check_structure, from_fdt, Fdt, Header, FDT_MAGIC};
use walk::Walk;

/// Most memory nodes / ranges we keep.
pub const MAX_MEMORY_REGIONS: usize = 64;
/// Most reserved ranges (`/memreserve/` plus `/reserved-memory` children) we keep.
pub const MAX_RESERVED: usize = 64;
/// Most CPUs we keep.
pub const MAX_CPUS: usize = 16;
/// Most warnings we keep.
pub const MAX_WARNINGS: usize = 16;
/// Deepest node accepted (the root is depth 0). `fdt`'s node iterator keeps 16 parents
/// and silently ends the walk below that, so deeper trees are refused up front.
pub const MAX_DEPTH: usize = 15;

/// The ranges of the tree (`reg` entries, translated to CPU physical addresses): the
/// kernel-wide half-open range. Memory and reservation ranges are cut so that
/// `base + size` does not pass 2^64; device ranges are as the tree gives them.
pub use hotmem_arch::addr::PhysRange;

/// One contiguous range of RAM from a `memory` node (a node with several `reg` entries
/// gives several regions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// The RAM, already translated to a CPU physical address.
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

/// A physical range the kernel must not use as free RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The reserved bytes.
    pub range: PhysRange,
    /// Where the reservation came from.
    pub kind: ReserveKind,
}

/// One `cpu` node under `/cpus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuInfo {
    /// The `reg` property: MPIDR affinity bits (Aff3..Aff0), the PSCI CPU_ON target.
    pub mpidr: u64,
    /// `numa-node-id`, 0 when absent.
    pub node: u32,
}

/// How PSCI calls reach the firmware (`/psci`'s `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciMethod {
    /// `hvc`: the hypervisor (QEMU's default).
    Hvc,
    /// `smc`: the secure monitor (QEMU with `virtualization=on`).
    Smc,
}

/// The interrupt controller: the first GIC in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicInfo {
    /// `arm,cortex-a15-gic` / `arm,gic-400` / `arm,cortex-a7-gic`: distributor and CPU
    /// interface, optional v2m MSI frame (child `arm,gic-v2m-frame`).
    V2 {
        /// Distributor (first `reg` entry).
        gicd: PhysRange,
        /// CPU interface (second `reg` entry).
        gicc: PhysRange,
        /// The first `arm,gic-v2m-frame` child's `reg`.
        v2m: Option<PhysRange>,
    },
    /// `arm,gic-v3`: distributor, the first redistributor region, optional ITS
    /// (child `arm,gic-v3-its`).
    V3 {
        /// Distributor (first `reg` entry).
        gicd: PhysRange,
        /// The first redistributor region (second `reg` entry).
        gicr: PhysRange,
        /// The first `arm,gic-v3-its` child's `reg`.
        its: Option<PhysRange>,
    },
}

/// Architected timer (`arm,armv8-timer` / `arm,armv7-timer`) interrupts as INTIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerInfo {
    /// Non-secure physical timer (the binding's second interrupt).
    pub phys_intid: u32,
    /// Virtual timer (the binding's third interrupt).
    pub virt_intid: u32,
}

/// PL011 (`arm,pl011`): the UART that `/chosen/stdout-path` names, else the first
/// enabled one with a usable `reg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UartInfo {
    /// Its registers (first `reg` entry).
    pub range: PhysRange,
    /// Its first interrupt as a GIC INTID; `None` when absent or not resolvable.
    pub intid: Option<u32>,
}

/// Address space of a PCI `ranges` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciSpace {
    /// I/O space (space code 1).
    Io,
    /// 32-bit memory space (space code 2).
    Mem32,
    /// 64-bit memory space (space code 3).
    Mem64,
}

/// One `ranges` entry of the host bridge: `size` bytes at `pci_addr` on the bus appear
/// at `cpu_addr` for the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciWindow {
    /// Which PCI address space the window is in.
    pub space: PciSpace,
    /// `phys.hi` bit 30.
    pub prefetchable: bool,
    /// Start on the PCI bus.
    pub pci_addr: u64,
    /// Start as the CPU sees it, translated through the ancestors' `ranges`.
    pub cpu_addr: u64,
    /// Length in bytes, never 0.
    pub size: u64,
}

/// One `interrupt-map` entry, already resolved to a GIC INTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIrqMapEntry {
    /// Child unit address, high cell (bus/device/function bits as in `phys.hi`).
    pub child_hi: u32,
    /// INTx pin, 1 = INTA .. 4 = INTD.
    pub pin: u32,
    /// The GIC INTID the pin raises.
    pub intid: u32,
}

/// The MSI controller a host bridge's `msi-map` or `msi-parent` names: a child frame of the
/// GIC we use with `msi-controller`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiController {
    /// GICv3 ITS (`arm,gic-v3-its`): MSIs become LPIs; the doorbell (GITS_TRANSLATER) is in
    /// the second 64 KiB frame of `regs`.
    Its {
        /// The ITS's `reg`.
        regs: PhysRange,
    },
    /// GICv2m frame (`arm,gic-v2m-frame`): MSIs become edge-triggered SPIs.
    V2m {
        /// The frame's `reg`.
        regs: PhysRange,
        /// (first INTID, count) from `arm,msi-base-spi` and `arm,msi-num-spis` (read as
        /// MSI_TYPER's fields are: an INTID and a count); `None` when absent or bad, and
        /// the driver reads MSI_TYPER.
        spis: Option<(u32, u32)>,
    },
}

/// One `msi-map` entry (PCI msi-map binding): requester IDs `rid_base .. rid_base +
/// length` (after `msi-map-mask`) become MSI specifiers (ITS DeviceIDs) from `msi_base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMapEntry {
    /// First requester ID.
    pub rid_base: u32,
    /// The specifier of `rid_base`.
    pub msi_base: u32,
    /// How many IDs, never 0.
    pub length: u32,
}

/// How the host bridge's functions signal MSIs: the controller and the requester-ID map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciMsi {
    /// Where the MSIs go.
    pub controller: MsiController,
    /// `msi-map-mask`, all ones when absent.
    pub map_mask: u32,
    /// The `msi-map` entries to `controller`; `msi-parent` is one identity entry over all
    /// 16-bit requester IDs.
    pub map: ArrayVec<MsiMapEntry, 8>,
}

impl PciMsi {
    /// The MSI specifier (the ITS DeviceID) of requester ID `rid` (`bus << 8 | device << 3
    /// | function`), `None` when no entry covers it.
    pub fn device_id(&self, rid: u16) -> Option<u32> {
        let rid = u32::from(rid) & self.map_mask;
        self.map.iter().find_map(|e| {
            let off = rid.checked_sub(e.rid_base)?;
            (off < e.length).then(|| e.msi_base.wrapping_add(off))
        })
    }
}

/// ECAM host bridge (`pci-host-ecam-generic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciHostInfo {
    /// ECAM config space (first `reg` entry), starting at bus `bus_start`.
    pub ecam: PhysRange,
    /// First bus of `bus-range` (0 when absent).
    pub bus_start: u8,
    /// Last bus of `bus-range` (255 when absent).
    pub bus_end: u8,
    /// The I/O and memory windows of `ranges`, in tree order.
    pub windows: ArrayVec<PciWindow, 8>,
    /// `interrupt-map-mask`: (phys.hi mask, pin mask); all ones when absent.
    pub irq_map_mask: (u32, u32),
    /// The `interrupt-map` entries that lead to our GIC, in tree order.
    pub irq_map: ArrayVec<PciIrqMapEntry, 32>,
    /// `msi-parent` / `msi-map` present.
    pub has_msi: bool,
    /// The MSI controller and requester-ID map, when `msi-map` / `msi-parent` name a usable
    /// frame of our GIC.
    pub msi: Option<PciMsi>,
}

/// Something in the tree we could not use; parsing went on without it. The text names
/// the node and what was wrong, cut at 96 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtWarning(pub ArrayString<96>);

/// Everything the kernel takes from the device tree.
#[derive(Debug, Clone)]
pub struct BootInfo<'a> {
    /// Every memory node's ranges, sorted by base, never overlapping (overlaps are warnings
    /// and the later range is trimmed).
    pub memory: ArrayVec<MemoryRegion, MAX_MEMORY_REGIONS>,
    /// `/memreserve/` entries first, then `/reserved-memory` children, in tree order.
    pub reserved: ArrayVec<Reservation, MAX_RESERVED>,
    /// The blob itself (`[dtb_pa, dtb_pa + totalsize)`), filled in by [`parse`] from the
    /// address the caller passes.
    pub dtb: PhysRange,
    /// `/chosen/bootargs`, "" when absent.
    pub bootargs: &'a str,
    /// The `cpu` nodes under `/cpus`, in tree order.
    pub cpus: ArrayVec<CpuInfo, MAX_CPUS>,
    /// `/psci`'s method; `None` without a usable PSCI node.
    pub psci: Option<PsciMethod>,
    /// The first GIC with both `reg` entries.
    pub gic: Option<GicInfo>,
    /// The architected timer, when both its interrupts resolve to the GIC.
    pub timer: Option<TimerInfo>,
    /// The console UART.
    pub uart: Option<UartInfo>,
    /// The first ECAM host bridge.
    pub pci: Option<PciHostInfo>,
    /// What was left out, in the order it was found (the first [`MAX_WARNINGS`]).
    pub warnings: ArrayVec<DtWarning, MAX_WARNINGS>,
}

/// A blob we cannot read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtError {
    /// Fewer bytes than the header or than `totalsize`.
    Truncated,
    /// Header magic is not 0xd00dfeed.
    BadMagic,
    /// A header or structure block that does not hold together (offsets or sizes outside
    /// the blob, an unreadable version, unbalanced nodes, bad names or tokens, deeper than
    /// [`MAX_DEPTH`]), or anything else the `fdt` crate refused.
    Malformed,
}

/// Parses `blob`, which was found at physical address `dtb_pa`.
///
/// `blob` may be longer than the tree (the caller can map a whole window); only
/// `totalsize` bytes are read.
pub fn parse(blob: &[u8], dtb_pa: u64) -> Result<BootInfo<'_>, DtError> {
    let header = Header::read(blob)?;
    let blob = blob.get(..header.total_size).ok_or(DtError::Truncated)?;
    let structs = block(blob, header.off_struct, header.size_struct)?;
    let strings = block(blob, header.off_strings, header.size_strings)?;
    check_structure(structs, strings)?;
    let fdt = Fdt::new_unaligned_fallible(blob).map_err(from_fdt)?;

    let mut walk = Walk::new(PhysRange {
        base: dtb_pa,
        size: header.total_size as u64,
    });
    // The reservation block ends where the next block starts, so a lost end marker does
    // not turn the structure block into reservations.
    let rsv_end = [header.off_struct, header.off_strings]
        .into_iter()
        .filter(|&off| off > header.off_rsvmap)
        .min()
        .unwrap_or(header.total_size);
    walk.read_memreserve(blob.get(..rsv_end).unwrap_or(blob), header.off_rsvmap);
    walk.read_chosen(&fdt)?;
    walk.walk(&fdt)?;
    Ok(walk.finish())
}

/// `totalsize` from the header, so the caller knows how much to map before [`parse`].
/// Errors on a bad magic.
pub fn total_size(header: &[u8]) -> Result<usize, DtError> {
    let magic = be32(header, 0).ok_or(DtError::Truncated)?;
    let total = be32(header, 4).ok_or(DtError::Truncated)?;
    if magic != FDT_MAGIC {
        return Err(DtError::BadMagic);
    }
    Ok(total as usize)
}
