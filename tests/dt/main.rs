//! Host tests for `hotmem::dt`, one test target (`cargo test -p hotmem --test dt`) in
//! four rooms:
//! - `dumps`: what `dt::parse` takes from real trees. The `.dtb` files under `tests/dtb/`
//!   are QEMU 10.0.2 `-M virt,dumpdtb=` dumps (see `tests/dtb/regen.sh` for each command
//!   line) plus two dtc-built trees (`reserved.dts`, `edge.dts`).
//! - `corrupt`: unreadable blobs are errors and damaged ones never panic (every prefix,
//!   every bit flip, word overwrites, proptest corruption).
//! - `synthetic`: corner cases built in memory with the small FDT writer in `builder`.
//! - `msi`: which MSI controller (ITS, v2m, none) the host bridge's `msi-map` /
//!   `msi-parent` names, on the dumps and on built trees.
//!
//! This file holds what they share: loading, the expected values common to QEMU's `virt`
//! dumps, and constructors that keep the expected values one line each.
use hotmem::dt::{
    self, BootInfo, CpuInfo, GicInfo, MemoryRegion, PciIrqMapEntry, PciSpace, PciWindow, PhysRange,
    Reservation, ReserveKind, TimerInfo, UartInfo,
};

mod builder;
mod corrupt;
mod dumps;
mod msi;
mod synthetic;

const DTB_PA: u64 = 0x4800_0000;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const ALL: [&str; 10] = [
    "default",
    "gicv2",
    "gicv3-noits",
    "virt-el2",
    "a53",
    "numa2",
    "mem16g",
    "secure",
    "reserved",
    "edge",
];

fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/dtb/{name}.dtb", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse_ok(blob: &[u8]) -> BootInfo<'_> {
    dt::parse(blob, DTB_PA).expect("parse")
}

const fn range(base: u64, size: u64) -> PhysRange {
    PhysRange { base, size }
}

fn mem(base: u64, size: u64, node: u32) -> MemoryRegion {
    MemoryRegion {
        range: range(base, size),
        node,
    }
}

fn reservation(base: u64, size: u64, kind: ReserveKind) -> Reservation {
    Reservation {
        range: range(base, size),
        kind,
    }
}

fn cpus(list: &[(u64, u32)]) -> Vec<CpuInfo> {
    list.iter()
        .map(|&(mpidr, node)| CpuInfo { mpidr, node })
        .collect()
}

fn window(
    space: PciSpace,
    prefetchable: bool,
    pci_addr: u64,
    cpu_addr: u64,
    size: u64,
) -> PciWindow {
    PciWindow {
        space,
        prefetchable,
        pci_addr,
        cpu_addr,
        size,
    }
}

fn irq_entry(child_hi: u32, pin: u32, intid: u32) -> PciIrqMapEntry {
    PciIrqMapEntry {
        child_hi,
        pin,
        intid,
    }
}

const fn uart(base: u64, intid: Option<u32>) -> UartInfo {
    UartInfo {
        range: range(base, 0x1000),
        intid,
    }
}

fn warnings(info: &BootInfo<'_>) -> Vec<String> {
    info.warnings.iter().map(|w| w.0.to_string()).collect()
}

/// The big-endian word at byte `off` (a header field is `off = 4 * index`).
fn be32_at(blob: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(blob[off..off + 4].try_into().unwrap())
}

fn set_be32(blob: &mut [u8], off: usize, value: u32) {
    blob[off..off + 4].copy_from_slice(&value.to_be_bytes());
}

const GICV3: GicInfo = GicInfo::V3 {
    gicd: range(0x0800_0000, 0x1_0000),
    gicr: range(0x080a_0000, 0xf6_0000),
    its: Some(range(0x0808_0000, 0x2_0000)),
};
const GICV2: GicInfo = GicInfo::V2 {
    gicd: range(0x0800_0000, 0x1_0000),
    gicc: range(0x0801_0000, 0x1_0000),
    v2m: Some(range(0x0802_0000, 0x1000)),
};
const TIMER: TimerInfo = TimerInfo {
    phys_intid: 30,
    virt_intid: 27,
};
const UART: UartInfo = uart(0x0900_0000, Some(33));

/// Everything QEMU's `virt` board has in common across our dumps.
fn assert_virt_common(info: &BootInfo<'_>) {
    assert_eq!(info.timer, Some(TIMER));
    assert_eq!(info.uart, Some(UART));
    assert_eq!(info.bootargs, "");
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    let pci = info.pci.as_ref().expect("pci");
    assert_eq!(pci.ecam, range(0x40_1000_0000, 0x1000_0000));
    assert_eq!((pci.bus_start, pci.bus_end), (0, 255));
    assert_eq!(
        pci.windows.as_slice(),
        [
            window(PciSpace::Io, false, 0, 0x3eff_0000, 0x1_0000),
            window(
                PciSpace::Mem32,
                false,
                0x1000_0000,
                0x1000_0000,
                0x2eff_0000
            ),
            window(
                PciSpace::Mem64,
                false,
                0x80_0000_0000,
                0x80_0000_0000,
                0x80_0000_0000
            ),
        ]
    );
    assert_eq!(pci.irq_map_mask, (0x1800, 7));
    // Slots 0-3 x INTA-INTD swizzled onto SPIs 3-6 (INTIDs 35-38).
    let expected: Vec<PciIrqMapEntry> = (0..4u32)
        .flat_map(|slot| {
            (1..=4u32).map(move |pin| irq_entry(slot << 11, pin, 35 + (slot + pin - 1) % 4))
        })
        .collect();
    assert_eq!(pci.irq_map.as_slice(), expected.as_slice());
    // virtio-mem is 00:01.0 with -nic none and uses INTA: INTID 36.
    let slot1_inta = pci
        .irq_map
        .iter()
        .find(|e| e.child_hi == 1 << 11 && e.pin == 1)
        .map(|e| e.intid);
    assert_eq!(slot1_inta, Some(36));
}
