//! Machine descriptions: what QEMU `virt` machine to start, turned into a QEMU command line.
//!
//! A [`Machine`] is plain data (CPU model, GIC version, EL2 entry, CPU count, RAM or NUMA nodes,
//! virtio-mem devices, bootargs, extra arguments). [`Machine::default`] is the machine `make run`
//! starts: `-M virt,gic-version=3 -cpu max -smp 2 -m 512M,maxmem=4608M -nic none` with one
//! `virtio-mem-pci` device `vm0` on a 4 GiB `memory-backend-ram`, `requested-size=0`.
//!
//! [`Machine::args`] renders the machine part of the command line only; the launcher
//! ([`crate::Qemu`]) adds the console, monitor and QMP wiring. The rules it follows:
//! - RAM is the sum of the NUMA node sizes when nodes are given, else [`Machine::ram_bytes`].
//! - `maxmem` is RAM plus the sum of the virtio-mem backend sizes (QEMU refuses a virtio-mem device
//!   without it), plus 1 GiB for each device placed with an explicit `memaddr` (room for the gap
//!   its placement leaves before the next device), and is left out when there is no device.
//! - NUMA node `N` gets backend `rN`; virtio-mem device `N` gets backend `memN` and id `vmN`, so
//!   the first device is always `vm0` (the id QMP `qom-set` uses).
//! - With NUMA nodes that each own the same number of CPUs, `-smp` gets one socket per node so that
//!   QEMU's topology agrees with the node split (QEMU warns otherwise).
//! - PCIe root ports ([`RootPort`]) come before the devices, so a device can name one as its
//!   `bus`. A device marked [`VirtioMem::hot`] gets its backend on the command line but no
//!   `-device`: the test adds it at run time with QMP `device_add`, whose properties
//!   [`Machine::virtio_mem_props`] gives (the same list the command line renders, with numbers
//!   as numbers). The machine a saved VM restores into is the same machine with that device
//!   cold ([`Machine::all_cold`]) and `-incoming defer` ([`Machine::incoming_defer`]).

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// 1 KiB, 1 MiB, 1 GiB in bytes.
pub const KIB: u64 = 1 << 10;
/// 1 MiB in bytes.
pub const MIB: u64 = 1 << 20;
/// 1 GiB in bytes.
pub const GIB: u64 = 1 << 30;

/// Formats a byte count the way QEMU's size options take it: the largest exact binary unit
/// (`512M`, `4G`, `1536M`), or plain bytes.
pub fn format_size(size_bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")];
    for (unit, suffix) in UNITS {
        if size_bytes != 0 && size_bytes % unit == 0 {
            return format!("{}{}", size_bytes / unit, suffix);
        }
    }
    size_bytes.to_string()
}

/// Parses a size such as `512M`, `4G`, `1536m`, `64K`, `2T` or plain bytes (binary units).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        Some('B') => (&t[..t.len() - 1], 0),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| Error::Machine(format!("bad size {text:?}")))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| Error::Machine(format!("size {text:?} overflows")))
}

/// GIC version of the `virt` board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gic {
    /// GICv2 (`gic-version=2`).
    V2,
    /// GICv3 (`gic-version=3`), the default.
    V3,
}

impl Gic {
    fn number(self) -> u8 {
        match self {
            Gic::V2 => 2,
            Gic::V3 => 3,
        }
    }
}

/// A NUMA node: its boot memory and the CPUs (indices into `-smp`) that belong to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// Boot RAM of the node.
    pub size_bytes: u64,
    /// CPUs of the node.
    pub cpus: Vec<u32>,
}

/// The memory backend of a virtio-mem device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `memory-backend-ram` (anonymous memory; QEMU aligns it to 2 MiB on x86-64 hosts, so a
    /// device on it cannot start at an odd MiB).
    Ram,
    /// `memory-backend-ram,reserve=off`: no commit charge for the whole size (for devices far
    /// larger than the host's memory, of which the guest touches a small part).
    RamNoReserve,
    /// `memory-backend-memfd` (aligned to the host page: allows any block-aligned `memaddr`).
    Memfd,
    /// `memory-backend-file,mem-path=…,share=…`. The path must not contain a comma. With
    /// `share` on, writes (and the device's `prealloc`) land in the file itself, so a
    /// size-limited filesystem under it bounds what the device can back.
    File {
        /// `mem-path`.
        path: std::path::PathBuf,
        /// `share=on`.
        share: bool,
    },
}

/// A `virtio-mem-pci` device with its own memory backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioMem {
    /// Size of the backend: the most the device can ever plug.
    pub size_bytes: u64,
    /// `requested-size` at start.
    pub requested_bytes: u64,
    /// `block-size`, or QEMU's default (2 MiB on arm64 with 4 KiB host pages).
    pub block_size_bytes: Option<u64>,
    /// NUMA node the device's memory belongs to.
    pub node: Option<u32>,
    /// The backend (`memory-backend-ram` unless set).
    pub backend: Backend,
    /// `prealloc=on`: QEMU allocates each range before it acknowledges its PLUG (and answers
    /// BUSY when it cannot).
    pub prealloc: bool,
    /// `memaddr`: where the region starts, or QEMU's choice.
    pub memaddr: Option<u64>,
    /// `bus`: the id of the root port the device sits behind, or `pcie.0` (QEMU's choice).
    pub bus: Option<String>,
    /// `reserve=off` on the backend: QEMU does not reserve swap space for it, so a machine
    /// may have more device memory than the host has RAM (only what the guest touches costs).
    pub no_reserve: bool,
    /// Added at run time with QMP `device_add` ([`Machine::virtio_mem_props`]); the command
    /// line has only its backend.
    pub hot: bool,
}

impl VirtioMem {
    /// A device of `size_bytes` with nothing requested.
    pub fn new(size_bytes: u64) -> Self {
        VirtioMem {
            size_bytes,
            requested_bytes: 0,
            block_size_bytes: None,
            node: None,
            backend: Backend::Ram,
            prealloc: false,
            memaddr: None,
            bus: None,
            no_reserve: false,
            hot: false,
        }
    }

    /// Places the device behind the root port with id `port`.
    pub fn bus(mut self, port: &str) -> Self {
        self.bus = Some(port.into());
        self
    }

    /// Sets `reserve=off` on the backend.
    pub fn no_reserve(mut self) -> Self {
        self.no_reserve = true;
        self
    }

    /// Leaves the device off the command line (its backend stays): added by `device_add`.
    pub fn hot(mut self) -> Self {
        self.hot = true;
        self
    }

    /// Sets the backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Sets `prealloc=on`.
    pub fn prealloc(mut self) -> Self {
        self.prealloc = true;
        self
    }

    /// Sets `memaddr`.
    pub fn memaddr(mut self, addr: u64) -> Self {
        self.memaddr = Some(addr);
        self
    }

    /// Sets `requested-size`.
    pub fn requested(mut self, bytes: u64) -> Self {
        self.requested_bytes = bytes;
        self
    }

    /// Sets `block-size`.
    pub fn block_size(mut self, bytes: u64) -> Self {
        self.block_size_bytes = Some(bytes);
        self
    }

    /// Sets `node`.
    pub fn node(mut self, node: u32) -> Self {
        self.node = Some(node);
        self
    }
}

/// A `pcie-root-port` on `pcie.0`: a hotplug-capable slot that devices name as their `bus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPort {
    /// QEMU id, the `bus` of the device behind it.
    pub id: String,
    /// `chassis` (with `slot`, unique per port).
    pub chassis: u8,
    /// `slot`.
    pub slot: u8,
    /// `bus-reserve`: bus numbers the firmware should keep behind the port.
    pub bus_reserve: Option<u32>,
    /// `mem-reserve`: non-prefetchable window to keep for a device added later.
    pub mem_reserve_bytes: Option<u64>,
    /// `pref64-reserve`: 64-bit prefetchable window to keep.
    pub pref64_reserve_bytes: Option<u64>,
}

impl RootPort {
    /// Port `id` at chassis `chassis`, slot `slot`, without reserve hints.
    pub fn new(id: &str, chassis: u8, slot: u8) -> Self {
        RootPort {
            id: id.into(),
            chassis,
            slot,
            bus_reserve: None,
            mem_reserve_bytes: None,
            pref64_reserve_bytes: None,
        }
    }

    /// Sets the reserve hints (`bus-reserve`, `mem-reserve`, `pref64-reserve`).
    pub fn reserve(mut self, buses: u32, mem_bytes: u64, pref64_bytes: u64) -> Self {
        self.bus_reserve = Some(buses);
        self.mem_reserve_bytes = Some(mem_bytes);
        self.pref64_reserve_bytes = Some(pref64_bytes);
        self
    }

    fn spec(&self) -> String {
        let mut spec = format!(
            "pcie-root-port,id={},chassis={},slot={}",
            self.id, self.chassis, self.slot
        );
        if let Some(n) = self.bus_reserve {
            spec.push_str(&format!(",bus-reserve={n}"));
        }
        if let Some(b) = self.mem_reserve_bytes {
            spec.push_str(&format!(",mem-reserve={}", format_size(b)));
        }
        if let Some(b) = self.pref64_reserve_bytes {
            spec.push_str(&format!(",pref64-reserve={}", format_size(b)));
        }
        spec
    }
}

/// A property value of a virtio-mem device: rendered `key=value` on the command line, a JSON
/// string or number in QMP `device_add` (which type-checks its arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prop {
    /// A string (`memdev`).
    Str(String),
    /// A size in bytes (`requested-size`, `block-size`), rendered with [`format_size`].
    Size(u64),
    /// A number (`node`), or an address rendered in hex (`memaddr`).
    Num(u64, bool),
    /// A boolean that is on (`prealloc`).
    On,
}

impl Prop {
    fn render(&self) -> String {
        match self {
            Prop::Str(s) => s.clone(),
            Prop::Size(b) => format_size(*b),
            Prop::Num(n, false) => n.to_string(),
            Prop::Num(n, true) => format!("{n:#x}"),
            Prop::On => "on".into(),
        }
    }

    /// The JSON value QMP `device_add` takes.
    pub fn json(&self) -> serde_json::Value {
        match self {
            Prop::Str(s) => s.clone().into(),
            Prop::Size(n) | Prop::Num(n, _) => (*n).into(),
            Prop::On => true.into(),
        }
    }
}

/// A QEMU `virt` machine. Build one from [`Machine::default`] with the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `-cpu` model: `max`, `cortex-a53`, `cortex-a57`, `cortex-a72`, `neoverse-n1`, ...
    pub cpu: String,
    /// GIC version.
    pub gic: Gic,
    /// `virtualization=on`: the kernel is entered at EL2.
    pub el2: bool,
    /// `-smp`.
    pub smp: u32,
    /// Boot RAM when there are no NUMA nodes.
    pub ram_bytes: u64,
    /// NUMA nodes; when not empty their sizes replace `ram_bytes`.
    pub numa: Vec<NumaNode>,
    /// virtio-mem devices, `vm0` first.
    pub virtio_mem: Vec<VirtioMem>,
    /// PCIe root ports on `pcie.0`, before the devices.
    pub root_ports: Vec<RootPort>,
    /// `-incoming defer`: QEMU waits for QMP `migrate-incoming` instead of booting.
    pub incoming_defer: bool,
    /// `-append`, left out when empty.
    pub bootargs: String,
    /// Appended verbatim after everything else.
    pub extra_args: Vec<String>,
}

impl Default for Machine {
    /// The `make run` machine.
    fn default() -> Self {
        Machine {
            cpu: "max".into(),
            gic: Gic::V3,
            el2: false,
            smp: 2,
            ram_bytes: 512 * MIB,
            numa: Vec::new(),
            virtio_mem: vec![VirtioMem::new(4 * GIB)],
            root_ports: Vec::new(),
            incoming_defer: false,
            bootargs: String::new(),
            extra_args: Vec::new(),
        }
    }
}

impl Machine {
    /// Sets the CPU model.
    pub fn cpu(mut self, model: &str) -> Self {
        self.cpu = model.into();
        self
    }

    /// Sets the GIC version.
    pub fn gic(mut self, gic: Gic) -> Self {
        self.gic = gic;
        self
    }

    /// Enters the kernel at EL2 (`virtualization=on`) or EL1.
    pub fn el2(mut self, on: bool) -> Self {
        self.el2 = on;
        self
    }

    /// Sets the CPU count.
    pub fn smp(mut self, cpus: u32) -> Self {
        self.smp = cpus;
        self
    }

    /// Sets boot RAM and drops any NUMA nodes.
    pub fn ram(mut self, bytes: u64) -> Self {
        self.ram_bytes = bytes;
        self.numa.clear();
        self
    }

    /// Splits boot RAM into NUMA nodes of the given sizes, spreading the CPUs evenly over them in
    /// order (node 0 gets the first CPUs; a node may get none when there are fewer CPUs).
    pub fn numa_nodes(mut self, sizes_bytes: &[u64]) -> Self {
        let nodes = sizes_bytes.len().max(1) as u32;
        let per_node = self.smp.div_ceil(nodes);
        self.numa = sizes_bytes
            .iter()
            .enumerate()
            .map(|(i, &size_bytes)| {
                let first = i as u32 * per_node;
                let end_exclusive = (first + per_node).min(self.smp);
                NumaNode {
                    size_bytes,
                    cpus: (first..end_exclusive).collect(),
                }
            })
            .collect();
        self.ram_bytes = sizes_bytes.iter().sum();
        self
    }

    /// Removes every virtio-mem device.
    pub fn without_virtio_mem(mut self) -> Self {
        self.virtio_mem.clear();
        self
    }

    /// Adds a virtio-mem device (the first one added after [`Machine::without_virtio_mem`] is
    /// `vm0`).
    pub fn with_virtio_mem(mut self, device: VirtioMem) -> Self {
        self.virtio_mem.push(device);
        self
    }

    /// Adds a PCIe root port.
    pub fn with_root_port(mut self, port: RootPort) -> Self {
        self.root_ports.push(port);
        self
    }

    /// Starts QEMU with `-incoming defer` (a restore target).
    pub fn incoming_defer(mut self) -> Self {
        self.incoming_defer = true;
        self
    }

    /// The same machine with every hot device on the command line: what a VM that had them
    /// added at run time is restored into.
    pub fn all_cold(mut self) -> Self {
        for d in &mut self.virtio_mem {
            d.hot = false;
        }
        self
    }

    /// Sets the kernel command line.
    pub fn bootargs(mut self, bootargs: &str) -> Self {
        self.bootargs = bootargs.into();
        self
    }

    /// Appends raw QEMU arguments.
    pub fn extra_arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// RAM given to the guest at boot (what `mem` must report as total `present_kib`).
    pub fn boot_ram_bytes(&self) -> u64 {
        if self.numa.is_empty() {
            self.ram_bytes
        } else {
            self.numa.iter().map(|n| n.size_bytes).sum()
        }
    }

    /// Sum of all virtio-mem backends.
    pub fn virtio_mem_bytes(&self) -> u64 {
        self.virtio_mem.iter().map(|d| d.size_bytes).sum()
    }

    /// `maxmem`: boot RAM, the virtio-mem backends, and 1 GiB of room per device with an
    /// explicit `memaddr`.
    pub fn maxmem_bytes(&self) -> u64 {
        let placed = self
            .virtio_mem
            .iter()
            .filter(|d| d.memaddr.is_some())
            .count() as u64;
        self.boot_ram_bytes() + self.virtio_mem_bytes() + placed * GIB
    }

    /// QEMU id of virtio-mem device `index` (`vm0`, `vm1`, ...).
    pub fn virtio_mem_id(index: usize) -> String {
        format!("vm{index}")
    }

    /// The properties of virtio-mem device `index` after its `id` (`memdev`, `requested-size`,
    /// then those set: `block-size`, `node`, `prealloc`, `memaddr`), in command-line order; the
    /// `bus` is [`VirtioMem::bus`]. `None` for an index past the last device.
    pub fn virtio_mem_props(&self, index: usize) -> Option<Vec<(&'static str, Prop)>> {
        let dev = self.virtio_mem.get(index)?;
        let mut props = vec![
            ("memdev", Prop::Str(format!("mem{index}"))),
            ("requested-size", Prop::Size(dev.requested_bytes)),
        ];
        if let Some(bs) = dev.block_size_bytes {
            props.push(("block-size", Prop::Size(bs)));
        }
        if let Some(node) = dev.node {
            props.push(("node", Prop::Num(node.into(), false)));
        }
        if dev.prealloc {
            props.push(("prealloc", Prop::On));
        }
        if let Some(addr) = dev.memaddr {
            props.push(("memaddr", Prop::Num(addr, true)));
        }
        Some(props)
    }

    /// Checks what the harness can express; QEMU itself checks the rest.
    pub fn validate(&self) -> Result<()> {
        if self.smp == 0 {
            return Err(Error::Machine("smp must be at least 1".into()));
        }
        if self.boot_ram_bytes() == 0 {
            return Err(Error::Machine("no boot RAM".into()));
        }
        for (i, node) in self.numa.iter().enumerate() {
            if let Some(cpu) = node.cpus.iter().find(|&&c| c >= self.smp) {
                return Err(Error::Machine(format!(
                    "NUMA node {i} names cpu {cpu} but smp is {}",
                    self.smp
                )));
            }
        }
        for (i, dev) in self.virtio_mem.iter().enumerate() {
            if dev.requested_bytes > dev.size_bytes {
                return Err(Error::Machine(format!(
                    "{}: requested-size {} above backend size {}",
                    Self::virtio_mem_id(i),
                    format_size(dev.requested_bytes),
                    format_size(dev.size_bytes)
                )));
            }
            if let Some(bus) = &dev.bus {
                if !self.root_ports.iter().any(|p| &p.id == bus) {
                    return Err(Error::Machine(format!(
                        "{}: bus {bus} is not a root port of the machine",
                        Self::virtio_mem_id(i)
                    )));
                }
            }
        }
        Ok(())
    }

    /// The machine part of the QEMU command line, booting `image`.
    pub fn args(&self, image: &Path) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |a: &str, b: String| {
            args.push(a.to_string());
            args.push(b);
        };

        let mut board = format!("virt,gic-version={}", self.gic.number());
        if self.el2 {
            board.push_str(",virtualization=on");
        }
        push("-M", board);
        push("-cpu", self.cpu.clone());

        let mut smp = self.smp.to_string();
        let nodes = self.numa.len() as u32;
        if nodes > 1
            && self.smp % nodes == 0
            && self
                .numa
                .iter()
                .all(|n| n.cpus.len() as u32 == self.smp / nodes)
        {
            smp.push_str(&format!(",sockets={nodes},cores={}", self.smp / nodes));
        }
        push("-smp", smp);

        let ram = self.boot_ram_bytes();
        let mut mem = format_size(ram);
        if !self.virtio_mem.is_empty() {
            mem.push_str(&format!(",maxmem={}", format_size(self.maxmem_bytes())));
        }
        push("-m", mem);

        for (i, node) in self.numa.iter().enumerate() {
            push(
                "-object",
                format!(
                    "memory-backend-ram,id=r{i},size={}",
                    format_size(node.size_bytes)
                ),
            );
            let mut spec = format!("node,nodeid={i}");
            for (first, last) in cpu_ranges(&node.cpus) {
                if first == last {
                    spec.push_str(&format!(",cpus={first}"));
                } else {
                    spec.push_str(&format!(",cpus={first}-{last}"));
                }
            }
            spec.push_str(&format!(",memdev=r{i}"));
            push("-numa", spec);
        }

        for port in &self.root_ports {
            push("-device", port.spec());
        }

        for (i, dev) in self.virtio_mem.iter().enumerate() {
            let size = format_size(dev.size_bytes);
            let mut backend = match &dev.backend {
                Backend::Ram => format!("memory-backend-ram,id=mem{i},size={size}"),
                Backend::RamNoReserve => {
                    format!("memory-backend-ram,id=mem{i},size={size},reserve=off")
                }
                Backend::Memfd => format!("memory-backend-memfd,id=mem{i},size={size}"),
                Backend::File { path, share } => format!(
                    "memory-backend-file,id=mem{i},size={size},mem-path={},share={}",
                    path.display(),
                    if *share { "on" } else { "off" }
                ),
            };
            if dev.no_reserve {
                backend.push_str(",reserve=off");
            }
            push("-object", backend);
            if dev.hot {
                continue;
            }
            let mut spec = format!("virtio-mem-pci,id={}", Self::virtio_mem_id(i));
            for (key, value) in self.virtio_mem_props(i).unwrap_or_default() {
                spec.push_str(&format!(",{key}={}", value.render()));
            }
            if let Some(bus) = &dev.bus {
                spec.push_str(&format!(",bus={bus}"));
            }
            push("-device", spec);
        }

        push("-nic", "none".into());
        push("-display", "none".into());
        push("-kernel", image.display().to_string());
        if !self.bootargs.is_empty() {
            push("-append", self.bootargs.clone());
        }
        if self.incoming_defer {
            push("-incoming", "defer".into());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// Sorted, deduplicated CPU indices as inclusive `(first, last)` runs.
fn cpu_ranges(cpus: &[u32]) -> Vec<(u32, u32)> {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for c in sorted {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == c => *last = c,
            _ => runs.push((c, c)),
        }
    }
    runs
}

impl fmt::Display for Machine {
    /// A short label for logs and test names: `max gic3 el1 smp2 512M+vmem4G`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} gic{} {} smp{} ",
            self.cpu,
            self.gic.number(),
            if self.el2 { "el2" } else { "el1" },
            self.smp
        )?;
        if self.numa.is_empty() {
            write!(f, "{}", format_size(self.ram_bytes))?;
        } else {
            let sizes: Vec<String> = self
                .numa
                .iter()
                .map(|n| format_size(n.size_bytes))
                .collect();
            write!(f, "numa[{}]", sizes.join(","))?;
        }
        for d in &self.virtio_mem {
            write!(f, "+vmem{}", format_size(d.size_bytes))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_make_run() {
        let args = Machine::default().args(Path::new("/i.img"));
        assert_eq!(
            args.join(" "),
            "-M virt,gic-version=3 -cpu max -smp 2 -m 512M,maxmem=4608M \
             -object memory-backend-ram,id=mem0,size=4G \
             -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=0 \
             -nic none -display none -kernel /i.img"
        );
    }

    #[test]
    fn numa_el2_gic2_bootargs() {
        let m = Machine::default()
            .smp(4)
            .numa_nodes(&[256 * MIB, 768 * MIB])
            .gic(Gic::V2)
            .el2(true)
            .without_virtio_mem()
            .with_virtio_mem(
                VirtioMem::new(GIB)
                    .block_size(4 * MIB)
                    .node(1)
                    .requested(GIB),
            )
            .bootargs("loglevel=debug");
        assert_eq!(m.boot_ram_bytes(), GIB);
        assert_eq!(
            m.args(Path::new("k")).join(" "),
            "-M virt,gic-version=2,virtualization=on -cpu max -smp 4,sockets=2,cores=2 \
             -m 1G,maxmem=2G \
             -object memory-backend-ram,id=r0,size=256M -numa node,nodeid=0,cpus=0-1,memdev=r0 \
             -object memory-backend-ram,id=r1,size=768M -numa node,nodeid=1,cpus=2-3,memdev=r1 \
             -object memory-backend-ram,id=mem0,size=1G \
             -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=1G,block-size=4M,node=1 \
             -nic none -display none -kernel k -append loglevel=debug"
        );
        m.validate().unwrap();
    }

    #[test]
    fn backends_prealloc_and_memaddr() {
        let m = Machine::default()
            .ram(GIB)
            .without_virtio_mem()
            .with_virtio_mem(
                VirtioMem::new(4 * GIB)
                    .backend(Backend::File {
                        path: "/t/backing".into(),
                        share: true,
                    })
                    .prealloc(),
            )
            .with_virtio_mem(
                VirtioMem::new(GIB)
                    .backend(Backend::Memfd)
                    .block_size(MIB)
                    .memaddr(0x1_4010_0000),
            );
        assert_eq!(
            m.maxmem_bytes(),
            7 * GIB,
            "1 GiB of room for the placed device"
        );
        assert_eq!(
            m.args(Path::new("k")).join(" "),
            "-M virt,gic-version=3 -cpu max -smp 2 -m 1G,maxmem=7G \
             -object memory-backend-file,id=mem0,size=4G,mem-path=/t/backing,share=on \
             -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=0,prealloc=on \
             -object memory-backend-memfd,id=mem1,size=1G \
             -device virtio-mem-pci,id=vm1,memdev=mem1,requested-size=0,block-size=1M,\
             memaddr=0x140100000 \
             -nic none -display none -kernel k"
        );
    }

    #[test]
    fn root_ports_hot_devices_and_incoming() {
        let m = Machine::default()
            .numa_nodes(&[512 * MIB, 512 * MIB])
            .without_virtio_mem()
            .with_root_port(RootPort::new("rp1", 1, 1))
            .with_root_port(RootPort::new("rp2", 2, 2).reserve(1, MIB, 2 * MIB))
            .with_virtio_mem(VirtioMem::new(8 * GIB).node(0).bus("rp1").no_reserve())
            .with_virtio_mem(
                VirtioMem::new(8 * GIB)
                    .node(1)
                    .bus("rp2")
                    .no_reserve()
                    .hot(),
            );
        m.validate().unwrap();
        assert_eq!(m.maxmem_bytes(), 17 * GIB, "a hot device counts in maxmem");
        let a = m.args(Path::new("k")).join(" ");
        assert!(
            a.contains(
                "-device pcie-root-port,id=rp1,chassis=1,slot=1 \
                 -device pcie-root-port,id=rp2,chassis=2,slot=2,bus-reserve=1,mem-reserve=1M,\
                 pref64-reserve=2M \
                 -object memory-backend-ram,id=mem0,size=8G,reserve=off \
                 -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=0,node=0,bus=rp1 \
                 -object memory-backend-ram,id=mem1,size=8G,reserve=off -nic none"
            ),
            "{a}"
        );
        assert!(!a.contains("-incoming"), "{a}");
        let props = m.virtio_mem_props(1).unwrap();
        let json: Vec<_> = props.iter().map(|(k, v)| (*k, v.json())).collect();
        assert_eq!(
            json,
            [
                ("memdev", "mem1".into()),
                ("requested-size", 0.into()),
                ("node", 1.into())
            ]
        );
        let restored = m.clone().all_cold().incoming_defer();
        let r = restored.args(Path::new("k")).join(" ");
        assert!(
            r.contains("-device virtio-mem-pci,id=vm1,memdev=mem1,requested-size=0,node=1,bus=rp2"),
            "{r}"
        );
        assert!(r.ends_with("-kernel k -incoming defer"), "{r}");
        let stray = Machine::default()
            .without_virtio_mem()
            .with_virtio_mem(VirtioMem::new(GIB).bus("rp9"));
        assert!(stray.validate().is_err(), "a bus that is no root port");
    }

    #[test]
    fn no_vmem_no_maxmem_and_single_cpu_numa() {
        let m = Machine::default()
            .smp(1)
            .without_virtio_mem()
            .numa_nodes(&[128 * MIB, 128 * MIB]);
        let a = m.args(Path::new("k")).join(" ");
        assert!(a.contains("-smp 1 -m 256M -object"), "{a}");
        assert!(a.contains("node,nodeid=0,cpus=0,memdev=r0"), "{a}");
        assert!(a.contains("node,nodeid=1,memdev=r1"), "{a}");
    }

    #[test]
    fn sizes_round_trip() {
        for (text, bytes) in [
            ("512M", 512 * MIB),
            ("4G", 4 * GIB),
            ("1536M", 1536 * MIB),
            ("64K", 64 * KIB),
            ("100", 100),
            ("1T", 1 << 40),
        ] {
            assert_eq!(parse_size(text).unwrap(), bytes);
            assert_eq!(format_size(bytes), text);
        }
        assert_eq!(parse_size("2g").unwrap(), 2 * GIB);
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn validate_rejects_nonsense() {
        assert!(Machine::default().smp(0).validate().is_err());
        let bad = Machine::default()
            .without_virtio_mem()
            .with_virtio_mem(VirtioMem::new(GIB).requested(2 * GIB));
        assert!(bad.validate().is_err());
    }
}
