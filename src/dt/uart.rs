//! The console UART: `/chosen` (bootargs, stdout-path) and the PL011 nodes.
//!
//! [`Walk::read_chosen`] runs before the walk, so that the walk can tell which UART is
//! the console: `stdout-path` is either an absolute path or an alias looked up in
//! `/aliases`, and may carry ":options" (DT spec 3.6), which are dropped. It also takes
//! `/chosen/bootargs`.
//!
//! During the walk the first enabled `arm,pl011` with a usable `reg` is kept, and is
//! replaced only by the one `stdout-path` names ([`path_is`]: a path component without
//! a unit address matches any unit address). Its interrupt is resolved after the walk;
//! a UART whose interrupt cannot be resolved is still reported, without an INTID.

use super::cells::prop_str;
use super::header::{from_fdt, Fdt};
use super::irq::PendingIrqs;
use super::walk::{warn_dt, Visit, Walk};
use super::{DtError, PhysRange, UartInfo};

/// The UART chosen so far.
#[derive(Clone, Copy)]
pub(super) struct UartFound<'a> {
    name: fdt::nodes::NodeName<'a>,
    range: PhysRange,
    irqs: Option<PendingIrqs<'a>>,
    is_stdout: bool,
}

impl<'a> Walk<'a> {
    /// `/chosen` (bootargs, stdout-path) before the walk, so the walk can tell which
    /// UART is the console. An alias in `stdout-path` is looked up in `/aliases`.
    pub(super) fn read_chosen(&mut self, fdt: &Fdt<'a>) -> Result<(), DtError> {
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

    pub(super) fn uart_node(&mut self, node: Visit<'_, 'a>) {
        let name = node.this.name;
        let is_stdout = self.stdout_path.is_some_and(|path| path_is(path, node));
        if self.uart.is_some_and(|u| u.is_stdout || !is_stdout) {
            return;
        }
        let regs = self.node_regs(node);
        let Some(&range) = regs.first() else {
            warn_dt!(self, "{}: UART without usable reg", name);
            return;
        };
        let irqs = node.props.interrupts.map(|cells| PendingIrqs {
            parent: node.this.interrupt_parent,
            cells,
        });
        self.uart = Some(UartFound {
            name,
            range,
            irqs,
            is_stdout,
        });
    }

    /// The chosen UART with its first interrupt resolved (none when it cannot be).
    pub(super) fn uart_info(&mut self) -> Option<UartInfo> {
        let uart = self.uart?;
        let intid = uart
            .irqs
            .and_then(|irqs| self.resolve_irq(uart.name, irqs, 0));
        Some(UartInfo {
            range: uart.range,
            intid,
        })
    }
}

/// Whether the absolute `path` names `node`.
/// A component without a unit address matches any unit address.
fn path_is(path: &str, node: Visit<'_, '_>) -> bool {
    let mut components = path.split('/').filter(|s| !s.is_empty());
    // `node.ancestors[0]` is the root, which has no component.
    let nodes = node
        .ancestors
        .iter()
        .skip(1)
        .chain(core::iter::once(node.this));
    for frame in nodes {
        let Some(component) = components.next() else {
            return false;
        };
        let name = frame.name;
        let matches = match component.split_once('@') {
            Some((base, unit)) => name.name == base && name.unit_address == Some(unit),
            None => name.name == component,
        };
        if !matches {
            return false;
        }
    }
    components.next().is_none()
}
