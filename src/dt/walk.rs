//! Stage 2: the depth-first walk, and the stage-3 finish that runs after it.
//!
//! One walk with `fdt` keeps a stack of ancestor [`Frame`]s (`#address-cells`,
//! `#size-cells`, `ranges`, inherited `interrupt-parent`, and the node's [`Role`] so its
//! children can be recognised). [`Walk::classify`] hands each enabled node to the stage
//! that wants it (memory, cpus, interrupt controllers, UART, PCI host: one file each),
//! which records what it found in [`Walk`].
//!
//! Addresses: every `reg` is decoded with its parent's cell counts ([`Walk::regs`]) and
//! translated up through each ancestor's `ranges` ([`Walk::translate`]; an absent `ranges`
//! is taken as identity).
//!
//! [`Walk::finish`] runs once the whole tree is seen: interrupt specifiers can only be
//! resolved then, because the GIC can come after the devices that use it (it does in
//! QEMU's tree); memory is sorted and overlaps trimmed.
//!
//! Every broken piece is reported with [`warn_dt!`] into [`BootInfo::warnings`] and left
//! out; only a tree the `fdt` crate cannot iterate is a [`DtError`].

use core::fmt::{self, Write as _};

use arrayvec::{ArrayString, ArrayVec};

use super::cells::{compatible_with, prop_u32, Cells, Props};
use super::header::{from_fdt, Fdt};
use super::irq::{GicFound, IntCtrl, PendingIrqs};
use super::pci::PciFound;
use super::uart::UartFound;
use super::{BootInfo, DtError, DtWarning, PhysRange, MAX_DEPTH, MAX_MEMORY_REGIONS};

/// Most interrupt controllers remembered for resolving `interrupt-parent` phandles.
const MAX_INTCS: usize = 8;
/// Most `reg` entries read from one node.
pub(super) const MAX_REG_ENTRIES: usize = MAX_MEMORY_REGIONS;

/// The `reg` ranges of one node, translated to CPU physical addresses.
pub(super) type Regs = ArrayVec<PhysRange, MAX_REG_ENTRIES>;

/// What a node is to us, so that its children can be recognised.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    #[default]
    Other,
    Cpus,
    ReservedMemory,
    /// The GIC we use (the first one found).
    Gic,
}

/// One ancestor on the walk's stack: what its children need from it.
#[derive(Clone, Copy)]
pub(super) struct Frame<'a> {
    pub(super) name: fdt::nodes::NodeName<'a>,
    /// `#address-cells` / `#size-cells` for this node's children (DT spec 2.3.5: 2 and 1
    /// when absent).
    pub(super) address_cells: u32,
    pub(super) size_cells: u32,
    /// Raw `ranges`; `None` when absent, empty for identity.
    ranges: Option<&'a [u8]>,
    /// `interrupt-parent` of this node, inherited from its ancestors when absent.
    pub(super) interrupt_parent: Option<u32>,
    pub(super) role: Role,
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

/// The node being visited, as the walk hands it to each stage.
#[derive(Clone, Copy)]
pub(super) struct Visit<'s, 'a> {
    /// From the root to the node's parent.
    pub(super) ancestors: &'s [Frame<'a>],
    /// The node's own frame: its name, inherited `interrupt-parent`, and the cell counts
    /// its children see.
    pub(super) this: &'s Frame<'a>,
    pub(super) props: &'s Props<'a>,
}

/// The walk's state: the result so far, and what stage 3 still has to resolve.
pub(super) struct Walk<'a> {
    pub(super) info: BootInfo<'a>,
    /// `/chosen/stdout-path` as an absolute path (alias resolved), for the UART stage.
    pub(super) stdout_path: Option<&'a str>,
    pub(super) intcs: ArrayVec<IntCtrl, MAX_INTCS>,
    pub(super) gic: Option<GicFound>,
    pub(super) timer: Option<(fdt::nodes::NodeName<'a>, PendingIrqs<'a>)>,
    pub(super) uart: Option<UartFound<'a>>,
    pub(super) pci: Option<PciFound<'a>>,
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

/// `warn_dt!(walk, "format", args...)`: records a [`DtWarning`] on `walk`.
macro_rules! warn_dt {
    ($walk:expr, $($arg:tt)*) => {
        $walk.warn(format_args!($($arg)*))
    };
}
pub(super) use warn_dt;

impl<'a> Walk<'a> {
    pub(super) fn new(dtb: PhysRange) -> Self {
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

    pub(super) fn warn(&mut self, args: fmt::Arguments<'_>) {
        let mut text = ArrayString::new();
        // A full warning is cut short, not an error.
        let _ = Truncating(&mut text).write_fmt(args);
        // Warnings beyond the capacity are dropped.
        let _ = self.info.warnings.try_push(DtWarning(text));
    }

    pub(super) fn walk(&mut self, fdt: &Fdt<'a>) -> Result<(), DtError> {
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
                frame.role = self.visit(Visit {
                    ancestors,
                    this: &frame,
                    props: &props,
                });
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
    fn visit(&mut self, node: Visit<'_, 'a>) -> Role {
        let role = self.classify(node);
        if node.props.interrupt_controller {
            self.note_intc(node, role == Role::Gic);
        }
        role
    }

    /// Hands the node to the stage that wants it.
    fn classify(&mut self, node: Visit<'_, 'a>) -> Role {
        let depth = node.ancestors.len();
        let parent_role = node.ancestors.last().map_or(Role::Other, |p| p.role);
        let base = node.this.name.name;
        let props = node.props;
        let is = |any_of: &[&str]| compatible_with(props.compatible, any_of);

        if depth == 1 && (props.device_type_is("memory") || base == "memory") {
            self.memory_node(node);
        } else if depth == 1 && base == "reserved-memory" {
            return Role::ReservedMemory;
        } else if depth == 1 && base == "cpus" {
            return Role::Cpus;
        } else if parent_role == Role::ReservedMemory {
            self.reserved_memory_node(node);
        } else if parent_role == Role::Cpus && (props.device_type_is("cpu") || base == "cpu") {
            self.cpu_node(node);
        } else if is(&["arm,psci", "arm,psci-0.2", "arm,psci-1.0"])
            || (depth == 1 && base == "psci")
        {
            self.psci_node(node);
        } else if is(&["arm,gic-v3"]) {
            return self.gic_node(node, true);
        } else if is(&["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a7-gic"]) {
            return self.gic_node(node, false);
        } else if parent_role == Role::Gic && is(&["arm,gic-v2m-frame", "arm,gic-v3-its"]) {
            self.gic_msi_node(node);
        } else if is(&["arm,armv8-timer", "arm,armv7-timer"]) {
            self.timer_node(node);
        } else if is(&["arm,pl011"]) {
            self.uart_node(node);
        } else if is(&["pci-host-ecam-generic"]) {
            self.pci_node(node);
        }
        Role::Other
    }

    /// [`Walk::regs`] of the node's `reg` property; empty when it has none.
    pub(super) fn node_regs(&mut self, node: Visit<'_, 'a>) -> Regs {
        node.props
            .reg
            .map(|reg| self.regs(node.ancestors, node.this.name, reg))
            .unwrap_or_default()
    }

    /// The `reg` entries of a node whose parent is `ancestors.last()`, translated to
    /// CPU physical addresses. Broken entries are warned about and left out.
    pub(super) fn regs(
        &mut self,
        ancestors: &[Frame<'a>],
        name: fdt::nodes::NodeName<'a>,
        reg: &'a [u8],
    ) -> Regs {
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
    pub(super) fn translate(
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

    /// Stage 3: resolves what needed the whole tree and returns the result.
    pub(super) fn finish(mut self) -> BootInfo<'a> {
        self.sort_memory();
        self.info.gic = self.gic.map(GicFound::info);
        self.info.timer = self.timer_info();
        self.info.uart = self.uart_info();
        self.info.pci = self.pci_info();
        self.info
    }
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
