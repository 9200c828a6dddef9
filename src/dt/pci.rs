//! The PCIe host bridge (`pci-host-ecam-generic`): ECAM, bus range, windows, INTx map.
//!
//! The first enabled host bridge is used; a second is ignored with a warning.
//! - `reg`'s first entry is the ECAM range; `bus-range` defaults to 0-255 (and falls back
//!   to it, with a warning, when it is not two cells of at most 255 in order).
//! - `ranges` ([`Walk::pci_windows`], PCI bus binding, IEEE 1275) needs the 3-cell PCI
//!   child address: `phys.hi` holds the space code in bits 24-25 and prefetchable in bit
//!   30. Config-space entries are skipped with a warning, empty ones silently; each
//!   window's CPU address is translated through the ancestors' `ranges`. At most 8.
//! - `msi-map` (with `msi-map-mask`) or else `msi-parent` ([`Walk::pci_msi`], PCI msi-map
//!   binding) become [`PciHostInfo::msi`] after the walk, when the GIC's MSI frames are
//!   known: `msi-map` entries are <rid-base phandle msi-base length> (one cell of
//!   msi-base, as QEMU writes them even for a v2m frame without `#msi-cells`); an entry
//!   naming an unknown frame, or another frame than the first entry's, or of length 0, is skipped with a warning (at most 8 kept). `msi-parent` is one identity
//!   entry over every 16-bit requester ID. [`PciHostInfo::has_msi`] only says either
//!   property is there.
//! - `interrupt-map` and `interrupt-map-mask` ([`Walk::pci_irq_map`]) are read after the
//!   walk, when every interrupt controller's cell counts are known. An entry's parent
//!   unit address and specifier widths come from that parent, so an entry whose parent
//!   is unknown ends the map; an entry to a controller other than our GIC is skipped. At
//!   most 32 entries.

use arrayvec::ArrayVec;

use super::cells::{prop_u32, Cells};
use super::irq::gic_spec;
use super::walk::{warn_dt, Visit, Walk};
use super::{MsiMapEntry, PciHostInfo, PciIrqMapEntry, PciMsi, PciSpace, PciWindow};

/// The host bridge found in the walk; its `interrupt-map` still raw.
pub(super) struct PciFound<'a> {
    name: fdt::nodes::NodeName<'a>,
    info: PciHostInfo,
    address_cells: u32,
    interrupt_cells: Option<u32>,
    map: Option<&'a [u8]>,
    mask: Option<&'a [u8]>,
    msi_map: Option<&'a [u8]>,
    msi_map_mask: Option<&'a [u8]>,
    msi_parent: Option<&'a [u8]>,
}

impl<'a> Walk<'a> {
    pub(super) fn pci_node(&mut self, node: Visit<'_, 'a>) {
        let name = node.this.name;
        if self.pci.is_some() {
            warn_dt!(self, "{}: second PCI host ignored", name);
            return;
        }
        let regs = self.node_regs(node);
        let Some(&ecam) = regs.first() else {
            warn_dt!(self, "{}: PCI host without ECAM reg", name);
            return;
        };
        let (bus_start, bus_end) = match node.props.bus_range {
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
            has_msi: node.props.msi,
            msi: None,
        };
        if let Some(ranges) = node.props.ranges {
            self.pci_windows(node, ranges, &mut info.windows);
        }
        self.pci = Some(PciFound {
            name,
            info,
            address_cells: node.this.address_cells,
            interrupt_cells: node.props.interrupt_cells.and_then(prop_u32),
            map: node.props.interrupt_map,
            mask: node.props.interrupt_map_mask,
            msi_map: node.props.msi_map,
            msi_map_mask: node.props.msi_map_mask,
            msi_parent: node.props.msi_parent,
        });
    }

    /// PCI `ranges` (PCI bus binding, IEEE 1275): a 3-cell child address whose
    /// `phys.hi` holds the space code in bits 24-25 and prefetchable in bit 30.
    fn pci_windows(
        &mut self,
        node: Visit<'_, 'a>,
        ranges: &'a [u8],
        windows: &mut ArrayVec<PciWindow, 8>,
    ) {
        let name = node.this.name;
        if node.this.address_cells != 3 {
            warn_dt!(self, "{}: PCI #address-cells is not 3", name);
            return;
        }
        let parent_cells = node.ancestors.last().map_or(2, |p| p.address_cells);
        let mut c = Cells(ranges);
        while !c.is_empty() {
            let (Some(hi), Some(pci_addr), Some(cpu_addr), Some(size)) = (
                c.u32(),
                c.number(2),
                c.number(parent_cells),
                c.number(node.this.size_cells),
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
            let Some(cpu_addr) = self.translate(node.ancestors, name, cpu_addr, size) else {
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

    /// The host bridge with its `interrupt-map` resolved.
    pub(super) fn pci_info(&mut self) -> Option<PciHostInfo> {
        let mut pci = self.pci.take()?;
        self.pci_irq_map(&mut pci);
        pci.info.msi = self.pci_msi(&pci);
        Some(pci.info)
    }

    /// `msi-map` / `msi-map-mask`, else `msi-parent`, resolved to a frame of our GIC.
    fn pci_msi(&mut self, pci: &PciFound<'a>) -> Option<PciMsi> {
        let name = pci.name;
        let Some(map) = pci.msi_map else {
            let phandle = Cells(pci.msi_parent?).u32();
            let controller = phandle.and_then(|p| self.msi_controller(p));
            if controller.is_none() {
                warn_dt!(self, "{}: msi-parent is not an MSI frame of our GIC", name);
            }
            let mut identity = ArrayVec::new();
            identity.push(MsiMapEntry {
                rid_base: 0,
                msi_base: 0,
                length: 0x1_0000,
            });
            return controller.map(|controller| PciMsi {
                controller,
                map_mask: u32::MAX,
                map: identity,
            });
        };
        let map_mask = match pci.msi_map_mask.map(prop_u32) {
            None => u32::MAX,
            Some(Some(mask)) => mask,
            Some(None) => {
                warn_dt!(self, "{}: bad msi-map-mask, using all ones", name);
                u32::MAX
            }
        };
        let mut found: Option<PciMsi> = None;
        let mut c = Cells(map);
        while !c.is_empty() {
            let (Some(rid_base), Some(phandle), Some(msi_base), Some(length)) =
                (c.u32(), c.u32(), c.u32(), c.u32())
            else {
                warn_dt!(self, "{}: msi-map entry cut short", name);
                break;
            };
            let Some(controller) = self.msi_controller(phandle) else {
                warn_dt!(
                    self,
                    "{}: msi-map: {:#x} is not an MSI frame",
                    name,
                    phandle
                );
                continue;
            };
            if length == 0 {
                warn_dt!(self, "{}: msi-map entry of length 0", name);
                continue;
            }
            let msi = found.get_or_insert_with(|| PciMsi {
                controller,
                map_mask,
                map: ArrayVec::new(),
            });
            if msi.controller != controller {
                warn_dt!(self, "{}: msi-map entry to a second MSI frame", name);
                continue;
            }
            let entry = MsiMapEntry {
                rid_base,
                msi_base,
                length,
            };
            if msi.map.try_push(entry).is_err() {
                warn_dt!(self, "{}: more than 8 msi-map entries", name);
                break;
            }
        }
        found
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
