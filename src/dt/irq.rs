//! Interrupt controllers and the architected timer; interrupt specifiers to GIC INTIDs.
//!
//! During the walk:
//! - Every enabled node with `interrupt-controller` and a `phandle` is remembered as an
//!   [`IntCtrl`] (its `#address-cells` and `#interrupt-cells`), so `interrupt-parent` and
//!   `interrupt-map` phandles can be resolved; only the GIC we use is marked `is_gic`.
//! - The first GIC (v3: `arm,gic-v3`; v2: `arm,cortex-a15-gic` and kin) needs two `reg`
//!   entries (GICD, then GICC or the first GICR region); a second GIC is ignored with a
//!   warning. Its first child MSI frame of the matching version (`arm,gic-v2m-frame` for
//!   v2, `arm,gic-v3-its` for v3) becomes the optional v2m / ITS range.
//! - Every child MSI frame of that GIC with `msi-controller` and a `phandle` is also
//!   remembered as an [`MsiController`] (at most [`MAX_MSI_FRAMES`]), for the host
//!   bridge's `msi-map` / `msi-parent` ([`Walk::msi_controller`]). A v2m frame's
//!   `arm,msi-base-spi` / `arm,msi-num-spis` are kept only as a pair inside 32..1020.
//! - The timer's `interrupts` are kept raw as [`PendingIrqs`], with the inherited
//!   `interrupt-parent`.
//!
//! After the walk (the GIC can come after the devices that use it, as in QEMU's tree),
//! [`Walk::resolve_irq`] turns one specifier into an INTID through [`gic_spec`]: SPI n ->
//! 32 + n, PPI n -> 16 + n, extended SPI/PPI likewise. A parent that is missing or not our
//! GIC, or a bad specifier, is a warning and that interrupt is left out.

use super::cells::{compatible_with, prop_u32, Cells};
use super::walk::{warn_dt, Role, Visit, Walk};
use super::{GicInfo, MsiController, PhysRange, TimerInfo};

/// Most MSI frames of the GIC remembered for `msi-map` / `msi-parent`.
pub(super) const MAX_MSI_FRAMES: usize = 4;

/// An interrupt controller seen in the walk, for resolving phandles afterwards.
#[derive(Clone, Copy)]
pub(super) struct IntCtrl {
    pub(super) phandle: u32,
    /// Its own `#address-cells` (0 when absent: the parent unit address in an
    /// `interrupt-map` entry uses this count, DT spec 2.4.3.1).
    pub(super) address_cells: u32,
    pub(super) interrupt_cells: Option<u32>,
    pub(super) is_gic: bool,
}

/// An `interrupts` property waiting for the walk to find its controller.
#[derive(Clone, Copy)]
pub(super) struct PendingIrqs<'a> {
    pub(super) parent: Option<u32>,
    pub(super) cells: &'a [u8],
}

/// The GIC we use, as found in the walk.
#[derive(Clone, Copy)]
pub(super) struct GicFound {
    v3: bool,
    gicd: PhysRange,
    /// GICC for v2, the first GICR region for v3.
    second: PhysRange,
    msi: Option<PhysRange>,
    /// The child frames with `msi-controller` and a phandle, in tree order.
    frames: [Option<(u32, MsiController)>; MAX_MSI_FRAMES],
}

impl GicFound {
    pub(super) fn info(self) -> GicInfo {
        match self.v3 {
            false => GicInfo::V2 {
                gicd: self.gicd,
                gicc: self.second,
                v2m: self.msi,
            },
            true => GicInfo::V3 {
                gicd: self.gicd,
                gicr: self.second,
                its: self.msi,
            },
        }
    }
}

impl<'a> Walk<'a> {
    /// Remembers an interrupt controller; `is_gic` only for the GIC we use.
    pub(super) fn note_intc(&mut self, node: Visit<'_, 'a>, is_gic: bool) {
        let Some(phandle) = node.props.phandle.and_then(prop_u32) else {
            return; // Nobody can point at it.
        };
        let intc = IntCtrl {
            phandle,
            address_cells: node.props.address_cells.and_then(prop_u32).unwrap_or(0),
            interrupt_cells: node.props.interrupt_cells.and_then(prop_u32),
            is_gic,
        };
        if self.intcs.try_push(intc).is_err() {
            warn_dt!(self, "{}: too many interrupt controllers", node.this.name);
        }
    }

    pub(super) fn gic_node(&mut self, node: Visit<'_, 'a>, v3: bool) -> Role {
        let name = node.this.name;
        if self.gic.is_some() {
            warn_dt!(self, "{}: second GIC ignored", name);
            return Role::Other;
        }
        let regs = self.node_regs(node);
        let (Some(&gicd), Some(&second)) = (regs.first(), regs.get(1)) else {
            warn_dt!(self, "{}: GIC needs two reg entries", name);
            return Role::Other;
        };
        self.gic = Some(GicFound {
            v3,
            gicd,
            second,
            msi: None,
            frames: [None; MAX_MSI_FRAMES],
        });
        Role::Gic
    }

    pub(super) fn gic_msi_node(&mut self, node: Visit<'_, 'a>) {
        let name = node.this.name;
        let its = compatible_with(node.props.compatible, &["arm,gic-v3-its"]);
        let regs = self.node_regs(node);
        let Some(&range) = regs.first() else {
            warn_dt!(self, "{}: MSI frame without reg", name);
            return;
        };
        let controller = match its {
            true => MsiController::Its { regs: range },
            false => MsiController::V2m {
                regs: range,
                spis: self.v2m_spis(node),
            },
        };
        let Some(gic) = self.gic.as_mut() else {
            return;
        };
        if gic.v3 != its {
            return; // A frame the GIC version cannot use.
        }
        if gic.msi.is_none() {
            gic.msi = Some(range); // The first frame that matches the GIC version.
        }
        let phandle = node.props.phandle.and_then(prop_u32);
        let (true, Some(phandle)) = (node.props.msi_controller, phandle) else {
            return; // Nobody can name it as an MSI controller.
        };
        match gic.frames.iter_mut().find(|f| f.is_none()) {
            Some(slot) => *slot = Some((phandle, controller)),
            None => warn_dt!(self, "{}: too many MSI frames", name),
        }
    }

    /// `arm,msi-base-spi` and `arm,msi-num-spis` of a v2m frame, both or neither.
    fn v2m_spis(&mut self, node: Visit<'_, 'a>) -> Option<(u32, u32)> {
        let base = node.props.msi_base_spi.map(prop_u32);
        let num = node.props.msi_num_spis.map(prop_u32);
        match (base, num) {
            (None, None) => None,
            (Some(Some(base)), Some(Some(num)))
                if num > 0 && base >= 32 && base.checked_add(num).is_some_and(|e| e <= 1020) =>
            {
                Some((base, num))
            }
            _ => {
                warn_dt!(self, "{}: bad arm,msi-base-spi/num-spis", node.this.name);
                None
            }
        }
    }

    /// The MSI frame of our GIC whose phandle is `phandle`.
    pub(super) fn msi_controller(&self, phandle: u32) -> Option<MsiController> {
        self.gic?
            .frames
            .iter()
            .flatten()
            .find(|(p, _)| *p == phandle)
            .map(|&(_, c)| c)
    }

    pub(super) fn timer_node(&mut self, node: Visit<'_, 'a>) {
        if self.timer.is_some() {
            return;
        }
        match node.props.interrupts {
            Some(cells) => {
                self.timer = Some((
                    node.this.name,
                    PendingIrqs {
                        parent: node.this.interrupt_parent,
                        cells,
                    },
                ))
            }
            None => warn_dt!(self, "{}: timer without interrupts", node.this.name),
        }
    }

    /// The timer's non-secure physical and virtual INTIDs; `None` unless both resolve.
    pub(super) fn timer_info(&mut self) -> Option<TimerInfo> {
        let (name, irqs) = self.timer?;
        // Secure phys, non-secure phys, virt, hyp (arm,arch_timer binding).
        let phys_intid = self.resolve_irq(name, irqs, 1)?;
        let virt_intid = self.resolve_irq(name, irqs, 2)?;
        Some(TimerInfo {
            phys_intid,
            virt_intid,
        })
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
    pub(super) fn resolve_irq(
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
}

/// Reads one GIC interrupt specifier of `cells` cells (<type number flags ...>, GIC
/// binding) and returns its INTID. `None` when the data runs out.
pub(super) fn gic_spec(c: &mut Cells<'_>, cells: u32) -> Option<Result<u32, &'static str>> {
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
