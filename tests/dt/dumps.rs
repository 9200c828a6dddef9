//! What `dt::parse` takes from the QEMU dumps and the two dtc-built trees.
use hotmem::dt::PsciMethod;

use super::*;

/// Parses a dump of QEMU's `virt` board and checks what all of them share.
fn parse_virt(blob: &[u8]) -> BootInfo<'_> {
    let info = parse_ok(blob);
    assert_virt_common(&info);
    info
}

#[test]
fn default_gicv3_its_virtio_mem() {
    let blob = load("default");
    let info = parse_virt(&blob);
    assert_eq!(info.memory.as_slice(), [mem(GIB, 512 * MIB, 0)]);
    assert!(info.reserved.is_empty());
    assert_eq!(info.dtb, range(DTB_PA, blob.len() as u64));
    assert_eq!(info.cpus.as_slice(), cpus(&[(0, 0), (1, 0)]));
    assert_eq!(info.psci, Some(PsciMethod::Hvc));
    assert_eq!(info.gic, Some(GICV3));
    assert!(info.pci.as_ref().unwrap().has_msi);
}

#[test]
fn gicv2_with_v2m() {
    let blob = load("gicv2");
    let info = parse_virt(&blob);
    assert_eq!(info.gic, Some(GICV2));
    assert_eq!(info.psci, Some(PsciMethod::Hvc));
    assert!(info.pci.as_ref().unwrap().has_msi);
    // Without maxmem QEMU does not add numa-node-id; the node defaults to 0.
    assert_eq!(info.memory.as_slice(), [mem(GIB, 512 * MIB, 0)]);
}

#[test]
fn gicv3_without_its_has_no_msi() {
    let blob = load("gicv3-noits");
    let info = parse_virt(&blob);
    let GicInfo::V3 { its, .. } = info.gic.unwrap() else {
        panic!("not v3")
    };
    assert_eq!(its, None);
    assert!(!info.pci.as_ref().unwrap().has_msi);
}

#[test]
fn virtualization_on_uses_smc() {
    let blob = load("virt-el2");
    let info = parse_virt(&blob);
    assert_eq!(info.psci, Some(PsciMethod::Smc));
    assert_eq!(info.gic, Some(GICV3));
}

#[test]
fn cortex_a53_one_cpu_128m() {
    let blob = load("a53");
    let info = parse_virt(&blob);
    assert_eq!(info.memory.as_slice(), [mem(GIB, 128 * MIB, 0)]);
    assert_eq!(info.cpus.as_slice(), cpus(&[(0, 0)]));
    assert_eq!(info.gic, Some(GICV2)); // QEMU's default GIC version is 2.
}

#[test]
fn two_numa_nodes() {
    let blob = load("numa2");
    let info = parse_virt(&blob);
    // QEMU emits node 1's memory first; the result is sorted.
    assert_eq!(
        info.memory.as_slice(),
        [mem(GIB, GIB, 0), mem(2 * GIB, GIB, 1)]
    );
    assert_eq!(
        info.cpus.as_slice(),
        cpus(&[(0, 0), (1, 0), (2, 1), (3, 1)])
    );
}

#[test]
fn sixteen_gib() {
    let blob = load("mem16g");
    let info = parse_virt(&blob);
    assert_eq!(info.memory.as_slice(), [mem(GIB, 16 * GIB, 0)]);
}

#[test]
fn secure_world_nodes_are_ignored() {
    // secure=on adds a "disabled" PL011 at 0x0904_0000 (listed before the real one),
    // "disabled" secure RAM at 0x0e00_0000, and no /psci (firmware's job).
    let blob = load("secure");
    let info = parse_virt(&blob);
    assert_eq!(info.memory.as_slice(), [mem(GIB, 512 * MIB, 0)]);
    assert_eq!(info.psci, None);
}

#[test]
fn memreserve_and_reserved_memory() {
    let blob = load("reserved");
    let info = parse_ok(&blob);
    assert_virt_common_except_bootargs(&info);
    assert_eq!(info.bootargs, "console=ttyAMA0 hotmem.test=1");
    assert_eq!(
        info.reserved.as_slice(),
        [
            // The zero-size /memreserve/ entry is dropped.
            reservation(0x4100_0000, MIB, ReserveKind::MemReserve),
            // Two reg entries of fw@5f000000; the dynamic pool (no reg) and the
            // disabled child are not reservations.
            reservation(0x5f00_0000, 2 * MIB, ReserveKind::ReservedMemory),
            reservation(0x5f40_0000, 0x1000, ReserveKind::ReservedMemory),
        ]
    );
}

fn assert_virt_common_except_bootargs(info: &BootInfo<'_>) {
    let mut copy = info.clone();
    copy.bootargs = "";
    assert_virt_common(&copy);
}

#[test]
fn edge_cases_from_edge_dts() {
    let blob = load("edge");
    let info = parse_ok(&blob);
    assert_eq!(
        info.memory.as_slice(),
        [
            mem(0x4000_0000, 16 * MIB, 0),
            mem(0x8000_0000, 256 * MIB, 1),
            // memory@88000000 overlapped the range above and was trimmed to its end;
            // memory@80001000 lay inside it and was dropped.
            mem(0x9000_0000, 128 * MIB, 0),
            mem(0xa000_0000, 16 * MIB, 1),
        ]
    );
    assert_eq!(
        info.reserved.as_slice(),
        [reservation(0x8000_0000, 0x1000, ReserveKind::MemReserve)]
    );
    assert_eq!(info.bootargs, "loglevel=9");
    assert_eq!(info.cpus.as_slice(), cpus(&[(0, 0), (1 << 32, 1)]));
    assert_eq!(info.psci, Some(PsciMethod::Smc));
    // v2m@20000 translated through the GIC's own ranges (child 0 -> 0x0800_0000).
    assert_eq!(
        info.gic,
        Some(GicInfo::V2 {
            gicd: range(0x0800_0000, 0x1000),
            gicc: range(0x0801_0000, 0x2000),
            v2m: Some(range(0x0802_0000, 0x1000)),
        })
    );
    assert_eq!(info.timer, Some(TIMER));
    // stdout-path = "serial1:115200n8" -> alias -> /soc/uart@2000, translated through
    // /soc's ranges; interrupt-parent inherited from the root.
    assert_eq!(info.uart, Some(uart(0x0900_2000, Some(38))));
    let pci = info.pci.as_ref().expect("pci");
    assert_eq!(pci.ecam, range(0x3000_0000, 16 * MIB));
    assert_eq!((pci.bus_start, pci.bus_end), (0, 15));
    assert_eq!(
        pci.windows.as_slice(),
        [
            window(PciSpace::Io, false, 0, 0x3eff_0000, 0x1_0000),
            window(PciSpace::Mem32, true, 0x4000_0000, 0x4000_0000, 0x1000_0000),
        ]
    );
    // The GIC has #address-cells = <1> here, so each entry's parent unit address is one
    // cell; the entry pointing at the 2-cell gpio-intc is skipped.
    assert_eq!(
        pci.irq_map.as_slice(),
        [
            irq_entry(0, 1, 35),
            irq_entry(0x800, 1, 36),
            irq_entry(0x1800, 1, 25)
        ]
    );
    assert!(pci.has_msi);
    assert_eq!(
        warnings(&info),
        [
            "memory@0: memory node without reg",
            "memory@c0000000: reg length does not match #cells",
            "pcie@30000000: config-space range ignored",
            "pcie@60000000: second PCI host ignored",
            "memory 0x80001000+0x1000 overlaps, trimmed",
            "memory 0x88000000+0x10000000 overlaps, trimmed",
            "pcie@30000000: interrupt-map entry to non-GIC 0x3 skipped",
        ]
    );
}
