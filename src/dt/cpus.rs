//! CPUs and PSCI: the children of `/cpus` and the `psci` node.
//!
//! - A `cpu` child of `/cpus` gives one [`CpuInfo`]: the first cell group of its `reg`
//!   (read with `/cpus`' `#address-cells`) is the MPIDR affinity, the PSCI CPU_ON target;
//!   arm64 has one thread per CPU node, so later `reg` entries are ignored. Its
//!   `numa-node-id` is 0 when absent.
//! - The first `psci` node (by `compatible`, or by name at depth 1) whose `method` is
//!   "hvc" or "smc" sets [`BootInfo::psci`]; under `secure=on` QEMU leaves PSCI to the
//!   firmware and there is none.
//!
//! [`BootInfo::psci`]: super::BootInfo::psci

use super::cells::{prop_str, Cells};
use super::walk::{warn_dt, Visit, Walk};
use super::{CpuInfo, PsciMethod, MAX_CPUS};

impl<'a> Walk<'a> {
    pub(super) fn cpu_node(&mut self, node: Visit<'_, 'a>) {
        let name = node.this.name;
        let cells = node.ancestors.last().map_or(1, |cpus| cpus.address_cells);
        // Only the first `reg` entry: one thread per CPU node on arm64.
        let Some(mpidr) = node.props.reg.and_then(|reg| Cells(reg).number(cells)) else {
            warn_dt!(self, "{}: cpu without a usable reg", name);
            return;
        };
        let numa = self.numa_node(name, node.props);
        let cpu = CpuInfo { mpidr, node: numa };
        if self.info.cpus.try_push(cpu).is_err() {
            warn_dt!(self, "{}: more than {} CPUs", name, MAX_CPUS);
        }
    }

    pub(super) fn psci_node(&mut self, node: Visit<'_, 'a>) {
        let (name, props) = (node.this.name, node.props);
        if self.info.psci.is_some() {
            return;
        }
        match props.method.and_then(prop_str) {
            Some("hvc") => self.info.psci = Some(PsciMethod::Hvc),
            Some("smc") => self.info.psci = Some(PsciMethod::Smc),
            _ => warn_dt!(self, "{}: PSCI method is not hvc or smc", name),
        }
    }
}
