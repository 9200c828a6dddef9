//! Device-tree parsing: turns the untrusted flattened device tree that QEMU (or any
//! boot loader) hands us in `x0` into a plain [`BootInfo`] value.
//!
//! Design:
//! - Parsing runs before the kernel has a heap, so every list is a fixed-capacity
//!   [`ArrayVec`]; entries beyond a capacity are dropped with a [`DtWarning`].
//! - The input is untrusted and nothing here may panic on it. Three stages:
//!   1. [`parse`] checks the header itself (magic, `totalsize` against the slice, every
//!      block inside `totalsize`, no `u32` overflow) and then walks the whole structure
//!      block token by token (nesting, property lengths, name offsets, UTF-8 names,
//!      depth at most [`MAX_DEPTH`]). Only a blob that passes is handed to the `fdt`
//!      crate, whose own arithmetic is not overflow-safe on hostile headers and whose
//!      node iterator silently stops below 15 levels.
//!   2. One depth-first walk with `fdt` keeps a stack of ancestor `Frame`s
//!      (`#address-cells`, `#size-cells`, `ranges`, inherited `interrupt-parent`), so
//!      every `reg` is decoded with its parent's cell counts and translated up through
//!      each ancestor's `ranges` (an absent `ranges` is taken as identity). Property
//!      values are decoded here from raw bytes, not with `fdt`'s typed helpers (its
//!      `Reg` divides by the entry width, which is zero when both cell counts are 0).
//!   3. Interrupt specifiers are resolved after the walk, because the GIC can come after
//!      the devices that use it (it does in QEMU's tree). They become GIC INTIDs
//!      (SPI n -> 32 + n, PPI n -> 16 + n). Memory is sorted and overlaps trimmed.
//! - Errors vs warnings: a blob we cannot read at all (short slice, bad magic, a header
//!   or structure block that does not hold together) is a [`DtError`]. A broken or
//!   missing piece inside a readable blob (a memory node without `reg`, a `reg` whose
//!   length is not a whole number of entries, an interrupt whose parent is not a GIC,
//!   a full list) becomes a [`DtWarning`] and that piece is left out, so the kernel
//!   continues with what it could understand.
//! - Nodes whose `status` is neither "okay" nor "ok" are ignored (QEMU's `secure=on`
//!   marks the secure UART and secure RAM "disabled").
//! - Nothing here touches hardware; host tests (`tests/dt.rs`) feed DTBs dumped from
//!   QEMU (`-M virt,dumpdtb=FILE`) kept under `tests/dtb/`, plus truncated and
//!   bit-flipped copies of them.
//!
//! The public types below are the contract with the kernel (src/main.rs, arch glue).
#![forbid(unsafe_code)]

use core::fmt::{self, Write as _};

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
    V2 {
        gicd: PhysRange,
        gicc: PhysRange,
        v2m: Option<PhysRange>,
    },
    /// `arm,gic-v3`: distributor, the first redistributor region, optional ITS
    /// (child `arm,gic-v3-its`).
    V3 {
        gicd: PhysRange,
        gicr: PhysRange,
        its: Option<PhysRange>,
    },
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

// ---------------------------------------------------------------------------------------
// Stage 1: header and structure block, checked before `fdt` sees them.

type Mode<'a> = (
    fdt::parsing::unaligned::UnalignedParser<'a>,
    fdt::parsing::NoPanic,
);
type Fdt<'a> = fdt::Fdt<'a, Mode<'a>>;
type Node<'a> = fdt::nodes::Node<'a, Mode<'a>>;

const FDT_MAGIC: u32 = 0xd00d_feed;
/// Header size of a version 17 blob (DT spec 5.2).
const HEADER_BYTES: usize = 40;
/// Structure block tokens (DT spec 5.4.1).
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Deepest node accepted (the root is depth 0). `fdt`'s node iterator keeps 16 parents
/// and silently ends the walk below that, so deeper trees are refused up front.
pub const MAX_DEPTH: usize = 15;
/// Most interrupt controllers remembered for resolving `interrupt-parent` phandles.
const MAX_INTCS: usize = 8;
/// Most `reg` entries read from one node.
const MAX_REG_ENTRIES: usize = MAX_MEMORY_REGIONS;

struct Header {
    total_size: usize,
    off_struct: usize,
    size_struct: usize,
    off_strings: usize,
    size_strings: usize,
    off_rsvmap: usize,
}

impl Header {
    fn read(blob: &[u8]) -> Result<Self, DtError> {
        let total_size = total_size(blob)?;
        if blob.len() < HEADER_BYTES {
            return Err(DtError::Truncated);
        }
        if total_size < HEADER_BYTES {
            return Err(DtError::Malformed);
        }
        if blob.len() < total_size {
            return Err(DtError::Truncated);
        }
        let field = |index: usize| {
            be32(blob, index * 4)
                .map(|v| v as usize)
                .ok_or(DtError::Truncated)
        };
        let header = Header {
            total_size,
            off_struct: field(2)?,
            off_strings: field(3)?,
            off_rsvmap: field(4)?,
            size_strings: field(8)?,
            size_struct: field(9)?,
        };
        let (version, last_compatible) = (field(5)?, field(6)?);
        // Version 17 added `size_dt_struct`, which we need; a blob that is not readable by
        // a version 17 reader is refused.
        if version < 17 || last_compatible > 17 {
            return Err(DtError::Malformed);
        }
        let inside =
            |off: usize, size: usize| off.checked_add(size).is_some_and(|end| end <= total_size);
        if !inside(header.off_struct, header.size_struct)
            || !inside(header.off_strings, header.size_strings)
            || !inside(header.off_rsvmap, 16)
            || header.off_struct % 4 != 0
            || header.size_struct % 4 != 0
            || header.off_rsvmap % 8 != 0
        {
            return Err(DtError::Malformed);
        }
        Ok(header)
    }
}

fn block(blob: &[u8], off: usize, size: usize) -> Result<&[u8], DtError> {
    blob.get(off..off.checked_add(size).ok_or(DtError::Malformed)?)
        .ok_or(DtError::Malformed)
}

fn be32(bytes: &[u8], off: usize) -> Option<u32> {
    let word = bytes.get(off..off.checked_add(4)?)?;
    <[u8; 4]>::try_from(word).ok().map(u32::from_be_bytes)
}

fn be64(bytes: &[u8], off: usize) -> Option<u64> {
    let word = bytes.get(off..off.checked_add(8)?)?;
    <[u8; 8]>::try_from(word).ok().map(u64::from_be_bytes)
}

/// `n` rounded up to a whole token (4 bytes).
fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// A NUL-terminated UTF-8 string at the start of `bytes`; its length without the NUL.
fn cstr_len(bytes: &[u8]) -> Option<usize> {
    let len = bytes.iter().position(|&b| b == 0)?;
    core::str::from_utf8(bytes.get(..len)?).ok()?;
    Some(len)
}

/// Walks the structure block the way `fdt` will, and refuses anything it would choke on:
/// exactly one root, balanced nodes, properties only before a node's children, every
/// property and name inside its block, names valid UTF-8, `FDT_END` as the last token.
fn check_structure(structs: &[u8], strings: &[u8]) -> Result<(), DtError> {
    const BAD: DtError = DtError::Malformed;
    let mut pos = 0usize;
    // Open nodes; `has_child[d]` says the open node at depth d already has a child.
    let mut depth = 0usize;
    let mut has_child = [false; MAX_DEPTH + 1];
    let mut seen_root = false;
    loop {
        let token = be32(structs, pos).ok_or(BAD)?;
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                if depth == 0 && seen_root {
                    return Err(BAD);
                }
                if depth > 0 {
                    *has_child.get_mut(depth - 1).ok_or(BAD)? = true;
                }
                let name_len = cstr_len(structs.get(pos..).ok_or(BAD)?).ok_or(BAD)?;
                pos = pos
                    .checked_add(align4(name_len + 1).ok_or(BAD)?)
                    .ok_or(BAD)?;
                depth += 1;
                if depth > MAX_DEPTH + 1 {
                    return Err(BAD);
                }
                *has_child.get_mut(depth - 1).ok_or(BAD)? = false;
                seen_root = true;
            }
            FDT_END_NODE => {
                depth = depth.checked_sub(1).ok_or(BAD)?;
            }
            FDT_PROP => {
                if depth == 0 || *has_child.get(depth - 1).ok_or(BAD)? {
                    return Err(BAD);
                }
                let len = be32(structs, pos).ok_or(BAD)? as usize;
                let name_off = be32(structs, pos + 4).ok_or(BAD)? as usize;
                pos += 8;
                let end = pos.checked_add(len).ok_or(BAD)?;
                if end > structs.len() {
                    return Err(BAD);
                }
                pos = pos.checked_add(align4(len).ok_or(BAD)?).ok_or(BAD)?;
                cstr_len(strings.get(name_off..).ok_or(BAD)?).ok_or(BAD)?;
            }
            FDT_NOP => {}
            FDT_END => {
                return if depth == 0 && seen_root && pos == structs.len() {
                    Ok(())
                } else {
                    Err(BAD)
                };
            }
            _ => return Err(BAD),
        }
    }
}

fn from_fdt(e: fdt::FdtError) -> DtError {
    match e {
        fdt::FdtError::BadMagic => DtError::BadMagic,
        fdt::FdtError::SliceTooSmall => DtError::Truncated,
        _ => DtError::Malformed,
    }
}

// ---------------------------------------------------------------------------------------
// Property values.

/// A big-endian cell reader over a property value. Every read is bounds-checked.
#[derive(Clone, Copy)]
struct Cells<'a>(&'a [u8]);

impl<'a> Cells<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    /// `n` cells read as one number; `None` when the data runs out or the value does
    /// not fit 64 bits.
    fn number(&mut self, n: u32) -> Option<u64> {
        let mut value = 0u64;
        for _ in 0..n {
            let cell = self.u32()?;
            if value >> 32 != 0 {
                return None;
            }
            value = (value << 32) | u64::from(cell);
        }
        Some(value)
    }

    /// The next `n` cells as their own reader; `None` when the data runs out.
    fn split(&mut self, n: u64) -> Option<Cells<'a>> {
        let bytes = usize::try_from(n).ok()?.checked_mul(4)?;
        let (head, rest) = self.0.split_at_checked(bytes)?;
        self.0 = rest;
        Some(Cells(head))
    }

    /// Skips `n` cells; `None` when the data runs out.
    fn skip(&mut self, n: u32) -> Option<()> {
        let bytes = usize::try_from(n).ok()?.checked_mul(4)?;
        self.0 = self.0.get(bytes..)?;
        Some(())
    }
}

/// A single-cell property such as `#address-cells` or `numa-node-id`.
fn prop_u32(value: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(value).ok().map(u32::from_be_bytes)
}

/// The strings of a string-list property (`compatible`), skipping non-UTF-8 pieces.
fn strings(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| core::str::from_utf8(s).ok())
}

/// A single-string property: the bytes up to the first NUL, if UTF-8.
fn prop_str(value: &[u8]) -> Option<&str> {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    core::str::from_utf8(value.get(..end)?).ok()
}

fn compatible_with(value: Option<&[u8]>, any_of: &[&str]) -> bool {
    value.is_some_and(|v| strings(v).any(|s| any_of.contains(&s)))
}

/// The properties of one node that we look at, gathered in one pass.
#[derive(Default, Clone, Copy)]
struct Props<'a> {
    reg: Option<&'a [u8]>,
    ranges: Option<&'a [u8]>,
    compatible: Option<&'a [u8]>,
    device_type: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    address_cells: Option<&'a [u8]>,
    size_cells: Option<&'a [u8]>,
    interrupt_cells: Option<&'a [u8]>,
    interrupt_controller: bool,
    phandle: Option<&'a [u8]>,
    interrupt_parent: Option<&'a [u8]>,
    interrupts: Option<&'a [u8]>,
    numa_node_id: Option<&'a [u8]>,
    method: Option<&'a [u8]>,
    bus_range: Option<&'a [u8]>,
    interrupt_map: Option<&'a [u8]>,
    interrupt_map_mask: Option<&'a [u8]>,
    msi: bool,
}

impl<'a> Props<'a> {
    fn of(node: &Node<'a>) -> Result<Self, DtError> {
        let mut p = Props::default();
        for prop in node.properties().map_err(from_fdt)?.iter() {
            let prop = prop.map_err(from_fdt)?;
            let v = Some(prop.value);
            match prop.name {
                "reg" => p.reg = v,
                "ranges" => p.ranges = v,
                "compatible" => p.compatible = v,
                "device_type" => p.device_type = v,
                "status" => p.status = v,
                "#address-cells" => p.address_cells = v,
                "#size-cells" => p.size_cells = v,
                "#interrupt-cells" => p.interrupt_cells = v,
                "interrupt-controller" => p.interrupt_controller = true,
                "phandle" | "linux,phandle" => p.phandle = p.phandle.or(v),
                "interrupt-parent" => p.interrupt_parent = v,
                "interrupts" => p.interrupts = v,
                "numa-node-id" => p.numa_node_id = v,
                "method" => p.method = v,
                "bus-range" => p.bus_range = v,
                "interrupt-map" => p.interrupt_map = v,
                "interrupt-map-mask" => p.interrupt_map_mask = v,
                "msi-parent" | "msi-map" => p.msi = true,
                _ => {}
            }
        }
        Ok(p)
    }

    /// `status` absent, "okay" or "ok" (DT spec 2.3.4).
    fn enabled(&self) -> bool {
        self.status
            .is_none_or(|s| matches!(prop_str(s), Some("okay" | "ok")))
    }

    fn device_type_is(&self, ty: &str) -> bool {
        self.device_type.and_then(prop_str) == Some(ty)
    }
}

// ---------------------------------------------------------------------------------------
// Stage 2: the walk.

/// What a node is to us, so that its children can be recognised.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Role {
    #[default]
    Other,
    Cpus,
    ReservedMemory,
    /// The GIC we use (the first one found).
    Gic,
}

/// One ancestor on the walk's stack: what its children need from it.
#[derive(Clone, Copy)]
struct Frame<'a> {
    name: fdt::nodes::NodeName<'a>,
    /// `#address-cells` / `#size-cells` for this node's children (DT spec 2.3.5: 2 and 1
    /// when absent).
    address_cells: u32,
    size_cells: u32,
    /// Raw `ranges`; `None` when absent, empty for identity.
    ranges: Option<&'a [u8]>,
    /// `interrupt-parent` of this node, inherited from its ancestors when absent.
    interrupt_parent: Option<u32>,
    role: Role,
}

impl Default for Frame<'_> {
    fn default() -> Self {
        Frame {
            name: fdt::nodes::NodeName {
                name: "",
                unit_address: None,
            },
            address_cells: 2,
            size_cells: 1,
            ranges: None,
            interrupt_parent: None,
            role: Role::Other,
        }
    }
}

/// An interrupt controller seen in the walk, for resolving phandles afterwards.
#[derive(Clone, Copy)]
struct IntCtrl {
    phandle: u32,
    /// Its own `#address-cells` (0 when absent: the parent unit address in an
    /// `interrupt-map` entry uses this count, DT spec 2.4.3.1).
    address_cells: u32,
    interrupt_cells: Option<u32>,
    is_gic: bool,
}

/// An `interrupts` property waiting for the walk to find its controller.
#[derive(Clone, Copy)]
struct PendingIrqs<'a> {
    parent: Option<u32>,
    cells: &'a [u8],
}

#[derive(Clone, Copy)]
struct GicFound {
    v3: bool,
    gicd: PhysRange,
    /// GICC for v2, the first GICR region for v3.
    second: PhysRange,
    msi: Option<PhysRange>,
}

#[derive(Clone, Copy)]
struct UartFound<'a> {
    name: fdt::nodes::NodeName<'a>,
    range: PhysRange,
    irqs: Option<PendingIrqs<'a>>,
    is_stdout: bool,
}

struct PciFound<'a> {
    name: fdt::nodes::NodeName<'a>,
    info: PciHostInfo,
    address_cells: u32,
    interrupt_cells: Option<u32>,
    map: Option<&'a [u8]>,
    mask: Option<&'a [u8]>,
}

struct Walk<'a> {
    info: BootInfo<'a>,
    stdout_path: Option<&'a str>,
    intcs: ArrayVec<IntCtrl, MAX_INTCS>,
    gic: Option<GicFound>,
    timer: Option<(fdt::nodes::NodeName<'a>, PendingIrqs<'a>)>,
    uart: Option<UartFound<'a>>,
    pci: Option<PciFound<'a>>,
}

/// Text sink that silently stops at the capacity of a warning.
struct Truncating<'s>(&'s mut ArrayString<96>);

impl fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            self.0.try_push(c).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

macro_rules! warn_dt {
    ($walk:expr, $($arg:tt)*) => {
        $walk.warn(format_args!($($arg)*))
    };
}

impl<'a> Walk<'a> {
    fn new(dtb: PhysRange) -> Self {
        Walk {
            info: BootInfo {
                memory: ArrayVec::new(),
                reserved: ArrayVec::new(),
                dtb,
                bootargs: "",
                cpus: ArrayVec::new(),
                psci: None,
                gic: None,
                timer: None,
                uart: None,
                pci: None,
                warnings: ArrayVec::new(),
            },
            stdout_path: None,
            intcs: ArrayVec::new(),
            gic: None,
            timer: None,
            uart: None,
            pci: None,
        }
    }

    fn warn(&mut self, args: fmt::Arguments<'_>) {
        let mut text = ArrayString::new();
        // A full warning is cut short, not an error.
        let _ = Truncating(&mut text).write_fmt(args);
        // Warnings beyond the capacity are dropped.
        let _ = self.info.warnings.try_push(DtWarning(text));
    }

    /// The header's memory reservation block (DT spec 5.3): (address, size) pairs of
    /// u64 ending with (0, 0).
    fn read_memreserve(&mut self, blob: &'a [u8], off: usize) {
        let mut pos = off;
        loop {
            let (Some(address), Some(size)) = (be64(blob, pos), be64(blob, pos.saturating_add(8)))
            else {
                warn_dt!(self, "/memreserve/ block has no end marker");
                return;
            };
            pos = pos.saturating_add(16);
            if address == 0 && size == 0 {
                return;
            }
            if let Some(range) = self.clamped_range("/memreserve/", address, size) {
                self.push_reserved(range, ReserveKind::MemReserve);
            }
        }
    }

    /// `/chosen` (bootargs, stdout-path) before the walk, so the walk can tell which
    /// UART is the console. An alias in `stdout-path` is looked up in `/aliases`.
    fn read_chosen(&mut self, fdt: &Fdt<'a>) -> Result<(), DtError> {
        let Some(chosen) = fdt.find_node("/chosen").map_err(from_fdt)? else {
            return Ok(());
        };
        let mut bootargs = None;
        let mut stdout = None;
        for prop in chosen.properties().map_err(from_fdt)?.iter() {
            let prop = prop.map_err(from_fdt)?;
            match prop.name {
                "bootargs" => bootargs = Some(prop.value),
                "stdout-path" => stdout = Some(prop.value),
                _ => {}
            }
        }
        if let Some(value) = bootargs {
            match prop_str(value) {
                Some(args) => self.info.bootargs = args,
                None => warn_dt!(self, "/chosen/bootargs is not UTF-8"),
            }
        }
        let Some(value) = stdout else {
            return Ok(());
        };
        let Some(path) = prop_str(value) else {
            warn_dt!(self, "/chosen/stdout-path is not UTF-8");
            return Ok(());
        };
        // "path:options" (DT spec 3.6).
        let path = path.split(':').next().unwrap_or(path);
        if path.starts_with('/') {
            self.stdout_path = Some(path);
            return Ok(());
        }
        let alias = fdt
            .find_node("/aliases")
            .map_err(from_fdt)?
            .map(|aliases| aliases.raw_property(path).map_err(from_fdt))
            .transpose()?
            .flatten();
        match alias.and_then(|p| prop_str(p.value)) {
            Some(target) if target.starts_with('/') => self.stdout_path = Some(target),
            _ => warn_dt!(self, "stdout-path alias {} not found", path),
        }
        Ok(())
    }

    fn walk(&mut self, fdt: &Fdt<'a>) -> Result<(), DtError> {
        let root = fdt.root().map_err(from_fdt)?;
        let root_props = Props::of(&fdt::nodes::AsNode::as_node(&root))?;
        let mut stack = [Frame::default(); MAX_DEPTH + 1];
        stack[0] = self.frame(Frame::default(), &Frame::default(), &root_props);

        for item in fdt.all_nodes().map_err(from_fdt)? {
            let (depth, node) = item.map_err(from_fdt)?;
            if depth == 0 || depth > MAX_DEPTH {
                return Err(DtError::Malformed);
            }
            let props = Props::of(&node)?;
            let ancestors = stack.get(..depth).ok_or(DtError::Malformed)?;
            let parent = *ancestors.last().ok_or(DtError::Malformed)?;
            let this = Frame {
                name: node.name().map_err(from_fdt)?,
                ..Frame::default()
            };
            let mut frame = self.frame(this, &parent, &props);
            if props.enabled() {
                frame.role = self.visit(ancestors, &frame, &props);
            }
            *stack.get_mut(depth).ok_or(DtError::Malformed)? = frame;
        }
        Ok(())
    }

    /// The frame a node's children will see.
    fn frame(&mut self, mut frame: Frame<'a>, parent: &Frame<'a>, props: &Props<'a>) -> Frame<'a> {
        let name = frame.name;
        if let Some(v) = props.address_cells {
            match prop_u32(v) {
                Some(n) => frame.address_cells = n,
                None => warn_dt!(self, "{}: bad #address-cells", name),
            }
        }
        if let Some(v) = props.size_cells {
            match prop_u32(v) {
                Some(n) => frame.size_cells = n,
                None => warn_dt!(self, "{}: bad #size-cells", name),
            }
        }
        frame.ranges = props.ranges;
        frame.interrupt_parent = match props.interrupt_parent {
            Some(v) => {
                let phandle = prop_u32(v);
                if phandle.is_none() {
                    warn_dt!(self, "{}: bad interrupt-parent", name);
                }
                phandle
            }
            None => parent.interrupt_parent,
        };
        frame
    }

    /// Takes what we need from one enabled node; returns its role for its children.
    /// `ancestors` runs from the root to the node's parent.
    fn visit(&mut self, ancestors: &[Frame<'a>], this: &Frame<'a>, props: &Props<'a>) -> Role {
        let role = self.classify(ancestors, this, props);
        if props.interrupt_controller {
            self.note_intc(this, props, role == Role::Gic);
        }
        role
    }

    fn classify(&mut self, ancestors: &[Frame<'a>], this: &Frame<'a>, props: &Props<'a>) -> Role {
        let depth = ancestors.len();
        let parent_role = ancestors.last().map_or(Role::Other, |p| p.role);
        let name = this.name;
        let base = name.name;

        if depth == 1 && (props.device_type_is("memory") || base == "memory") {
            self.memory_node(ancestors, this, props);
        } else if depth == 1 && base == "reserved-memory" {
            return Role::ReservedMemory;
        } else if depth == 1 && base == "cpus" {
            return Role::Cpus;
        } else if parent_role == Role::ReservedMemory {
            if let Some(reg) = props.reg {
                for range in self.regs(ancestors, name, reg) {
                    if let Some(range) = self.clamped_range(name, range.base, range.size) {
                        self.push_reserved(range, ReserveKind::ReservedMemory);
                    }
                }
            }
        } else if parent_role == Role::Cpus && (props.device_type_is("cpu") || base == "cpu") {
            self.cpu_node(ancestors, this, props);
        } else if compatible_with(
            props.compatible,
            &["arm,psci", "arm,psci-0.2", "arm,psci-1.0"],
        ) || (depth == 1 && base == "psci")
        {
            self.psci_node(name, props);
        } else if compatible_with(props.compatible, &["arm,gic-v3"]) {
            return self.gic_node(ancestors, this, props, true);
        } else if compatible_with(
            props.compatible,
            &["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a7-gic"],
        ) {
            return self.gic_node(ancestors, this, props, false);
        } else if parent_role == Role::Gic
            && compatible_with(props.compatible, &["arm,gic-v2m-frame", "arm,gic-v3-its"])
        {
            self.gic_msi_node(ancestors, this, props);
        } else if compatible_with(props.compatible, &["arm,armv8-timer", "arm,armv7-timer"]) {
            self.timer_node(this, props);
        } else if compatible_with(props.compatible, &["arm,pl011"]) {
            self.uart_node(ancestors, this, props);
        } else if compatible_with(props.compatible, &["pci-host-ecam-generic"]) {
            self.pci_node(ancestors, this, props);
        }
        Role::Other
    }

    /// Remembers an interrupt controller; `is_gic` only for the GIC we use.
    fn note_intc(&mut self, this: &Frame<'a>, props: &Props<'a>, is_gic: bool) {
        let Some(phandle) = props.phandle.and_then(prop_u32) else {
            return; // Nobody can point at it.
        };
        let intc = IntCtrl {
            phandle,
            address_cells: props.address_cells.and_then(prop_u32).unwrap_or(0),
            interrupt_cells: props.interrupt_cells.and_then(prop_u32),
            is_gic,
        };
        if self.intcs.try_push(intc).is_err() {
            warn_dt!(self, "{}: too many interrupt controllers", this.name);
        }
    }

    fn memory_node(&mut self, ancestors: &[Frame<'a>], this: &Frame<'a>, props: &Props<'a>) {
        let name = this.name;
        let Some(reg) = props.reg else {
            warn_dt!(self, "{}: memory node without reg", name);
            return;
        };
        let node = self.numa_node(name, props);
        for range in self.regs(ancestors, name, reg) {
            let Some(range) = self.clamped_range(name, range.base, range.size) else {
                continue;
            };
            if self
                .info
                .memory
                .try_push(MemoryRegion { range, node })
                .is_err()
            {
                warn_dt!(
                    self,
                    "{}: more than {} memory ranges",
                    name,
                    MAX_MEMORY_REGIONS
                );
                return;
            }
        }
    }

    fn numa_node(&mut self, name: fdt::nodes::NodeName<'a>, props: &Props<'a>) -> u32 {
        match props.numa_node_id.map(prop_u32) {
            None => 0,
            Some(Some(node)) => node,
            Some(None) => {
                warn_dt!(self, "{}: bad numa-node-id", name);
                0
            }
        }
    }

    fn cpu_node(&mut self, ancestors: &[Frame<'a>], this: &Frame<'a>, props: &Props<'a>) {
        let name = this.name;
        let cells = ancestors.last().map_or(1, |cpus| cpus.address_cells);
        // Only the first `reg` entry: one thread per CPU node on arm64.
        let Some(mpidr) = props.reg.and_then(|reg| Cells(reg).number(cells)) else {
            warn_dt!(self, "{}: cpu without a usable reg", name);
            return;
        };
        let node = self.numa_node(name, props);
        if self.info.cpus.try_push(CpuInfo { mpidr, node }).is_err() {
            warn_dt!(self, "{}: more than {} CPUs", name, MAX_CPUS);
        }
    }

    fn psci_node(&mut self, name: fdt::nodes::NodeName<'a>, props: &Props<'a>) {
        if self.info.psci.is_some() {
            return;
        }
        match props.method.and_then(prop_str) {
            Some("hvc") => self.info.psci = Some(PsciMethod::Hvc),
            Some("smc") => self.info.psci = Some(PsciMethod::Smc),
            _ => warn_dt!(self, "{}: PSCI method is not hvc or smc", name),
        }
    }

    fn gic_node(
        &mut self,
        ancestors: &[Frame<'a>],
        this: &Frame<'a>,
        props: &Props<'a>,
        v3: bool,
    ) -> Role {
        let name = this.name;
        if self.gic.is_some() {
            warn_dt!(self, "{}: second GIC ignored", name);
            return Role::Other;
        }
        let regs = props
            .reg
            .map(|reg| self.regs(ancestors, name, reg))
            .unwrap_or_default();
        let (Some(&gicd), Some(&second)) = (regs.first(), regs.get(1)) else {
            warn_dt!(self, "{}: GIC needs two reg entries", name);
            return Role::Other;
        };
        self.gic = Some(GicFound {
            v3,
            gicd,
            second,
            msi: None,
        });
        Role::Gic
    }

    fn gic_msi_node(&mut self, ancestors: &[Frame<'a>], this: &Frame<'a>, props: &Props<'a>) {
        let name = this.name;
        let its = compatible_with(props.compatible, &["arm,gic-v3-its"]);
        let regs = props
            .reg
            .map(|reg| self.regs(ancestors, name, reg))
            .unwrap_or_default();
        let Some(gic) = self.gic.as_mut() else {
            return;
        };
        if gic.msi.is_some() || gic.v3 != its {
            return; // We use the first frame that matches the GIC version.
        }
        match regs.first() {
            Some(&range) => gic.msi = Some(range),
            None => warn_dt!(self, "{}: MSI frame without reg", name),
        }
    }

    fn timer_node(&mut self, this: &Frame<'a>, props: &Props<'a>) {
        if self.timer.is_some() {
            return;
        }
        match props.interrupts {
            Some(cells) => {
                self.timer = Some((
                    this.name,
                    PendingIrqs {
                        parent: this.interrupt_parent,
                        cells,
                    },
                ))
            }
            None => warn_dt!(self, "{}: timer without interrupts", this.name),
        }
    }

    fn uart_node(&mut self, ancestors: &[Frame<'a>], this: &Frame<'a>, props: &Props<'a>) {
        let name = this.name;
        let is_stdout = self
            .stdout_path
            .is_some_and(|path| path_is(path, ancestors, this));
        if self.uart.is_some_and(|u| u.is_stdout || !is_stdout) {
            return;
        }
        let regs = props
            .reg
            .map(|reg| self.regs(ancestors, name, reg))
            .unwrap_or_default();
        let Some(&range) = regs.first() else {
            warn_dt!(self, "{}: UART without usable reg", name);
            return;
        };
        let irqs = props.interrupts.map(|cells| PendingIrqs {
            parent: this.interrupt_parent,
            cells,
        });
        self.uart = Some(UartFound {
            name,
            range,
            irqs,
            is_stdout,
        });
    }

    fn pci_node(&mut self, ancestors: &[Frame<'a>], this: &Frame<'a>, props: &Props<'a>) {
        let name = this.name;
        if self.pci.is_some() {
            warn_dt!(self, "{}: second PCI host ignored", name);
            return;
        }
        let regs = props
            .reg
            .map(|reg| self.regs(ancestors, name, reg))
            .unwrap_or_default();
        let Some(&ecam) = regs.first() else {
            warn_dt!(self, "{}: PCI host without ECAM reg", name);
            return;
        };
        let (bus_start, bus_end) = match props.bus_range {
            None => (0, 255),
            Some(v) => {
                let mut c = Cells(v);
                let range = match (c.u32(), c.u32(), c.is_empty()) {
                    (Some(start), Some(end), true) => {
                        u8::try_from(start).ok().zip(u8::try_from(end).ok())
                    }
                    _ => None,
                };
                match range {
                    Some((start, end)) if start <= end => (start, end),
                    _ => {
                        warn_dt!(self, "{}: bad bus-range, using 0-255", name);
                        (0, 255)
                    }
                }
            }
        };
        let mut info = PciHostInfo {
            ecam,
            bus_start,
            bus_end,
            windows: ArrayVec::new(),
            irq_map_mask: (u32::MAX, u32::MAX),
            irq_map: ArrayVec::new(),
            has_msi: props.msi,
        };
        if let Some(ranges) = props.ranges {
            self.pci_windows(ancestors, this, ranges, &mut info.windows);
        }
        self.pci = Some(PciFound {
            name,
            info,
            address_cells: this.address_cells,
            interrupt_cells: props.interrupt_cells.and_then(prop_u32),
            map: props.interrupt_map,
            mask: props.interrupt_map_mask,
        });
    }

    /// PCI `ranges` (PCI bus binding, IEEE 1275): a 3-cell child address whose
    /// `phys.hi` holds the space code in bits 24-25 and prefetchable in bit 30.
    fn pci_windows(
        &mut self,
        ancestors: &[Frame<'a>],
        this: &Frame<'a>,
        ranges: &'a [u8],
        windows: &mut ArrayVec<PciWindow, 8>,
    ) {
        let name = this.name;
        if this.address_cells != 3 {
            warn_dt!(self, "{}: PCI #address-cells is not 3", name);
            return;
        }
        let parent_cells = ancestors.last().map_or(2, |p| p.address_cells);
        let mut c = Cells(ranges);
        while !c.is_empty() {
            let (Some(hi), Some(pci_addr), Some(cpu_addr), Some(size)) = (
                c.u32(),
                c.number(2),
                c.number(parent_cells),
                c.number(this.size_cells),
            ) else {
                warn_dt!(self, "{}: malformed PCI ranges", name);
                return;
            };
            let space = match (hi >> 24) & 3 {
                1 => PciSpace::Io,
                2 => PciSpace::Mem32,
                3 => PciSpace::Mem64,
                _ => {
                    warn_dt!(self, "{}: config-space range ignored", name);
                    continue;
                }
            };
            if size == 0 {
                continue;
            }
            let Some(cpu_addr) = self.translate(ancestors, name, cpu_addr, size) else {
                continue;
            };
            let window = PciWindow {
                space,
                prefetchable: hi & (1 << 30) != 0,
                pci_addr,
                cpu_addr,
                size,
            };
            if windows.try_push(window).is_err() {
                warn_dt!(self, "{}: more than 8 PCI windows", name);
                return;
            }
        }
    }

    /// The `reg` entries of a node whose parent is `ancestors.last()`, translated to
    /// CPU physical addresses. Broken entries are warned about and left out.
    fn regs(
        &mut self,
        ancestors: &[Frame<'a>],
        name: fdt::nodes::NodeName<'a>,
        reg: &'a [u8],
    ) -> ArrayVec<PhysRange, MAX_REG_ENTRIES> {
        let mut out = ArrayVec::new();
        let parent = ancestors.last().copied().unwrap_or_default();
        let entry_cells = u64::from(parent.address_cells) + u64::from(parent.size_cells);
        if entry_cells == 0 || reg.len() as u64 % (entry_cells * 4) != 0 {
            warn_dt!(self, "{}: reg length does not match #cells", name);
            return out;
        }
        let mut c = Cells(reg);
        while !c.is_empty() {
            // The length check above makes every entry whole, so `entry` is never short.
            let Some(mut entry) = c.split(entry_cells) else {
                return out;
            };
            let (Some(base), Some(size)) = (
                entry.number(parent.address_cells),
                entry.number(parent.size_cells),
            ) else {
                warn_dt!(self, "{}: reg value wider than 64 bits", name);
                continue;
            };
            let Some(base) = self.translate(ancestors, name, base, size) else {
                continue;
            };
            if out.try_push(PhysRange { base, size }).is_err() {
                warn_dt!(self, "{}: too many reg entries", name);
                return out;
            }
        }
        out
    }

    /// Translates `[addr, addr + size)` from the address space of `ancestors.last()`
    /// up to the root through each ancestor's `ranges` (DT spec 2.3.8). An ancestor
    /// without `ranges` is taken as identity (lenient: the spec says "no mapping").
    fn translate(
        &mut self,
        ancestors: &[Frame<'a>],
        name: fdt::nodes::NodeName<'a>,
        mut addr: u64,
        size: u64,
    ) -> Option<u64> {
        for pair in ancestors.windows(2).rev() {
            let [parent, bus] = pair else {
                return None;
            };
            let Some(ranges) = bus.ranges.filter(|r| !r.is_empty()) else {
                continue;
            };
            match map_through(ranges, bus, parent, addr, size) {
                Ok(mapped) => addr = mapped,
                Err(why) => {
                    warn_dt!(self, "{}: {} in {} ranges", name, why, bus.name);
                    return None;
                }
            }
        }
        Some(addr)
    }

    fn clamped_range(
        &mut self,
        what: impl fmt::Display,
        base: u64,
        size: u64,
    ) -> Option<PhysRange> {
        if size == 0 {
            return None;
        }
        if base.checked_add(size).is_none() {
            warn_dt!(
                self,
                "{}: range {:#x}+{:#x} passes 2^64, cut",
                what,
                base,
                size
            );
            return Some(PhysRange {
                base,
                size: u64::MAX - base,
            })
            .filter(|r| r.size != 0);
        }
        Some(PhysRange { base, size })
    }

    fn push_reserved(&mut self, range: PhysRange, kind: ReserveKind) {
        if self
            .info
            .reserved
            .try_push(Reservation { range, kind })
            .is_err()
        {
            warn_dt!(self, "more than {} reserved ranges", MAX_RESERVED);
        }
    }

    // -----------------------------------------------------------------------------------
    // Stage 3: after the walk.

    fn finish(mut self) -> BootInfo<'a> {
        self.sort_memory();
        if let Some(gic) = self.gic {
            self.info.gic = Some(match gic.v3 {
                false => GicInfo::V2 {
                    gicd: gic.gicd,
                    gicc: gic.second,
                    v2m: gic.msi,
                },
                true => GicInfo::V3 {
                    gicd: gic.gicd,
                    gicr: gic.second,
                    its: gic.msi,
                },
            });
        }
        if let Some((name, irqs)) = self.timer {
            // Secure phys, non-secure phys, virt, hyp (arm,arch_timer binding).
            let phys = self.resolve_irq(name, irqs, 1);
            let virt = phys.and_then(|_| self.resolve_irq(name, irqs, 2));
            if let (Some(phys_intid), Some(virt_intid)) = (phys, virt) {
                self.info.timer = Some(TimerInfo {
                    phys_intid,
                    virt_intid,
                });
            }
        }
        if let Some(uart) = self.uart {
            let intid = uart
                .irqs
                .and_then(|irqs| self.resolve_irq(uart.name, irqs, 0));
            self.info.uart = Some(UartInfo {
                range: uart.range,
                intid,
            });
        }
        if let Some(mut pci) = self.pci.take() {
            self.pci_irq_map(&mut pci);
            self.info.pci = Some(pci.info);
        }
        self.info
    }

    /// Sorts memory by base and trims overlaps from the later range.
    fn sort_memory(&mut self) {
        self.info
            .memory
            .sort_unstable_by_key(|m| (m.range.base, core::cmp::Reverse(m.range.size)));
        let mut kept: ArrayVec<MemoryRegion, MAX_MEMORY_REGIONS> = ArrayVec::new();
        let mut end = 0u64; // End of the last kept range; 0 before the first.
        for mut region in core::mem::take(&mut self.info.memory) {
            let region_end = region.range.base.saturating_add(region.range.size);
            if !kept.is_empty() && region.range.base < end {
                warn_dt!(
                    self,
                    "memory {:#x}+{:#x} overlaps, trimmed",
                    region.range.base,
                    region.range.size
                );
                if region_end <= end {
                    continue;
                }
                region.range = PhysRange {
                    base: end,
                    size: region_end - end,
                };
            }
            end = region_end;
            // Cannot fail: `kept` has the capacity the input had.
            let _ = kept.try_push(region);
        }
        self.info.memory = kept;
    }

    fn gic_for(&mut self, name: fdt::nodes::NodeName<'a>, phandle: Option<u32>) -> Option<IntCtrl> {
        let Some(phandle) = phandle else {
            warn_dt!(self, "{}: no interrupt-parent", name);
            return None;
        };
        let found = self.intcs.iter().find(|c| c.phandle == phandle).copied();
        match found {
            Some(ctrl) if ctrl.is_gic => Some(ctrl),
            _ => {
                warn_dt!(
                    self,
                    "{}: interrupt parent {:#x} is not our GIC",
                    name,
                    phandle
                );
                None
            }
        }
    }

    /// The `index`th specifier of an `interrupts` property as a GIC INTID.
    fn resolve_irq(
        &mut self,
        name: fdt::nodes::NodeName<'a>,
        irqs: PendingIrqs<'a>,
        index: usize,
    ) -> Option<u32> {
        let gic = self.gic_for(name, irqs.parent)?;
        let cells = gic.interrupt_cells.unwrap_or(0);
        let mut c = Cells(irqs.cells);
        let index = u32::try_from(index).ok()?;
        let spec = c
            .skip(cells.saturating_mul(index))
            .and_then(|()| gic_spec(&mut c, cells));
        match spec {
            Some(Ok(intid)) => Some(intid),
            Some(Err(why)) => {
                warn_dt!(self, "{}: interrupt {}: {}", name, index, why);
                None
            }
            None => {
                warn_dt!(self, "{}: interrupt {} missing", name, index);
                None
            }
        }
    }

    /// `interrupt-map` (DT spec 2.4.3.1): child unit address (the host's
    /// #address-cells), child specifier (its #interrupt-cells), parent phandle, parent
    /// unit address (the parent's #address-cells), parent specifier.
    fn pci_irq_map(&mut self, pci: &mut PciFound<'a>) {
        let name = pci.name;
        let child_ac = pci.address_cells;
        if let Some(mask) = pci.mask {
            let mut c = Cells(mask);
            let hi = c.u32();
            let pin = c.skip(child_ac.saturating_sub(1)).and_then(|()| c.u32());
            match (hi, pin, child_ac) {
                (Some(hi), Some(pin), 1..) => pci.info.irq_map_mask = (hi, pin),
                _ => warn_dt!(self, "{}: bad interrupt-map-mask", name),
            }
        }
        let Some(map) = pci.map else {
            return;
        };
        if child_ac == 0 || pci.interrupt_cells != Some(1) {
            warn_dt!(
                self,
                "{}: interrupt-map needs #address-cells>0, #interrupt-cells=1",
                name
            );
            return;
        }
        let mut c = Cells(map);
        while !c.is_empty() {
            let child_hi = c.u32();
            let pin = c.skip(child_ac - 1).and_then(|()| c.u32());
            let phandle = c.u32();
            let (Some(child_hi), Some(pin), Some(phandle)) = (child_hi, pin, phandle) else {
                warn_dt!(self, "{}: interrupt-map entry cut short", name);
                return;
            };
            let Some(ctrl) = self.intcs.iter().find(|i| i.phandle == phandle).copied() else {
                warn_dt!(
                    self,
                    "{}: interrupt-map parent {:#x} unknown",
                    name,
                    phandle
                );
                return; // Its cell counts are unknown, so the rest cannot be read.
            };
            let spec_cells = ctrl.interrupt_cells.unwrap_or(0);
            if c.skip(ctrl.address_cells).is_none() {
                warn_dt!(self, "{}: interrupt-map entry cut short", name);
                return;
            }
            if !ctrl.is_gic {
                warn_dt!(
                    self,
                    "{}: interrupt-map entry to non-GIC {:#x} skipped",
                    name,
                    phandle
                );
                if c.skip(spec_cells).is_none() {
                    return;
                }
                continue;
            }
            match gic_spec(&mut c, spec_cells) {
                None => {
                    warn_dt!(self, "{}: interrupt-map entry cut short", name);
                    return;
                }
                Some(Err(why)) => warn_dt!(self, "{}: interrupt-map: {}", name, why),
                Some(Ok(intid)) => {
                    if pci
                        .info
                        .irq_map
                        .try_push(PciIrqMapEntry {
                            child_hi,
                            pin,
                            intid,
                        })
                        .is_err()
                    {
                        warn_dt!(self, "{}: more than 32 interrupt-map entries", name);
                        return;
                    }
                }
            }
        }
    }
}

/// Reads one GIC interrupt specifier of `cells` cells (<type number flags ...>, GIC
/// binding) and returns its INTID. `None` when the data runs out.
fn gic_spec(c: &mut Cells<'_>, cells: u32) -> Option<Result<u32, &'static str>> {
    if cells < 2 {
        return Some(Err("GIC #interrupt-cells < 2"));
    }
    let kind = c.u32()?;
    let number = c.u32()?;
    c.skip(cells - 2)?;
    Some(match kind {
        // SPI: INTIDs 32..=1019.
        0 if number < 988 => Ok(32 + number),
        // PPI: INTIDs 16..=31.
        1 if number < 16 => Ok(16 + number),
        // GICv3 extended SPI (4096..=5119) and extended PPI (1056..=1119).
        2 if number < 1024 => Ok(4096 + number),
        3 if number < 64 => Ok(1056 + number),
        _ => Err("bad GIC interrupt type or number"),
    })
}

/// Maps `[addr, addr + size)` through one `ranges` property of `bus` (child address
/// cells and size cells from `bus`, parent address cells from `parent`).
fn map_through(
    ranges: &[u8],
    bus: &Frame<'_>,
    parent: &Frame<'_>,
    addr: u64,
    size: u64,
) -> Result<u64, &'static str> {
    if u64::from(bus.address_cells) + u64::from(parent.address_cells) + u64::from(bus.size_cells)
        == 0
    {
        return Err("zero-width entries");
    }
    let mut c = Cells(ranges);
    while !c.is_empty() {
        let (Some(child), Some(parent_base), Some(len)) = (
            c.number(bus.address_cells),
            c.number(parent.address_cells),
            c.number(bus.size_cells),
        ) else {
            return Err("malformed entry");
        };
        let Some(offset) = addr.checked_sub(child) else {
            continue;
        };
        if offset < len && size <= len - offset {
            return parent_base.checked_add(offset).ok_or("address overflow");
        }
    }
    Err("not covered")
}

/// Whether the absolute `path` names the node `this` whose ancestors are `ancestors`.
/// A component without a unit address matches any unit address.
fn path_is(path: &str, ancestors: &[Frame<'_>], this: &Frame<'_>) -> bool {
    let mut components = path.split('/').filter(|s| !s.is_empty());
    // `ancestors[0]` is the root, which has no component.
    let nodes = ancestors.iter().skip(1).chain(core::iter::once(this));
    for node in nodes {
        let Some(component) = components.next() else {
            return false;
        };
        let matches = match component.split_once('@') {
            Some((base, unit)) => node.name.name == base && node.name.unit_address == Some(unit),
            None => node.name.name == component,
        };
        if !matches {
            return false;
        }
    }
    components.next().is_none()
}
