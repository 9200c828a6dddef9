//! Host tests for `hotmem::dt`.
//!
//! The `.dtb` files under `tests/dtb/` are QEMU 10.0.2 `-M virt,dumpdtb=` dumps (see
//! `tests/dtb/regen.sh` for each command line) plus two dtc-built trees (`reserved.dts`,
//! `edge.dts`). Synthetic corner cases are built in memory with [`Fdt`] below.
use hotmem::dt::{
    self, BootInfo, CpuInfo, DtError, GicInfo, MemoryRegion, PciIrqMapEntry, PciSpace, PciWindow,
    PhysRange, PsciMethod, Reservation, ReserveKind, TimerInfo, UartInfo,
};
use proptest::prelude::*;

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

fn range(base: u64, size: u64) -> PhysRange {
    PhysRange { base, size }
}

fn mem(base: u64, size: u64, node: u32) -> MemoryRegion {
    MemoryRegion {
        range: range(base, size),
        node,
    }
}

fn cpus(list: &[(u64, u32)]) -> Vec<CpuInfo> {
    list.iter()
        .map(|&(mpidr, node)| CpuInfo { mpidr, node })
        .collect()
}

fn warnings(info: &BootInfo<'_>) -> Vec<String> {
    info.warnings.iter().map(|w| w.0.to_string()).collect()
}

const GICV3: GicInfo = GicInfo::V3 {
    gicd: PhysRange {
        base: 0x0800_0000,
        size: 0x1_0000,
    },
    gicr: PhysRange {
        base: 0x080a_0000,
        size: 0xf6_0000,
    },
    its: Some(PhysRange {
        base: 0x0808_0000,
        size: 0x2_0000,
    }),
};
const GICV2: GicInfo = GicInfo::V2 {
    gicd: PhysRange {
        base: 0x0800_0000,
        size: 0x1_0000,
    },
    gicc: PhysRange {
        base: 0x0801_0000,
        size: 0x1_0000,
    },
    v2m: Some(PhysRange {
        base: 0x0802_0000,
        size: 0x1000,
    }),
};
const TIMER: TimerInfo = TimerInfo {
    phys_intid: 30,
    virt_intid: 27,
};
const UART: UartInfo = UartInfo {
    range: PhysRange {
        base: 0x0900_0000,
        size: 0x1000,
    },
    intid: Some(33),
};

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
            PciWindow {
                space: PciSpace::Io,
                prefetchable: false,
                pci_addr: 0,
                cpu_addr: 0x3eff_0000,
                size: 0x1_0000
            },
            PciWindow {
                space: PciSpace::Mem32,
                prefetchable: false,
                pci_addr: 0x1000_0000,
                cpu_addr: 0x1000_0000,
                size: 0x2eff_0000
            },
            PciWindow {
                space: PciSpace::Mem64,
                prefetchable: false,
                pci_addr: 0x80_0000_0000,
                cpu_addr: 0x80_0000_0000,
                size: 0x80_0000_0000
            },
        ]
    );
    assert_eq!(pci.irq_map_mask, (0x1800, 7));
    // Slots 0-3 x INTA-INTD swizzled onto SPIs 3-6 (INTIDs 35-38).
    let expected: Vec<PciIrqMapEntry> = (0..4u32)
        .flat_map(|slot| {
            (1..=4u32).map(move |pin| PciIrqMapEntry {
                child_hi: slot << 11,
                pin,
                intid: 35 + (slot + pin - 1) % 4,
            })
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

#[test]
fn default_gicv3_its_virtio_mem() {
    let blob = load("default");
    let info = parse_ok(&blob);
    assert_virt_common(&info);
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
    let info = parse_ok(&blob);
    assert_virt_common(&info);
    assert_eq!(info.gic, Some(GICV2));
    assert_eq!(info.psci, Some(PsciMethod::Hvc));
    assert!(info.pci.as_ref().unwrap().has_msi);
    // Without maxmem QEMU does not add numa-node-id; the node defaults to 0.
    assert_eq!(info.memory.as_slice(), [mem(GIB, 512 * MIB, 0)]);
}

#[test]
fn gicv3_without_its_has_no_msi() {
    let blob = load("gicv3-noits");
    let info = parse_ok(&blob);
    assert_virt_common(&info);
    let GicInfo::V3 { its, .. } = info.gic.unwrap() else {
        panic!("not v3")
    };
    assert_eq!(its, None);
    assert!(!info.pci.as_ref().unwrap().has_msi);
}

#[test]
fn virtualization_on_uses_smc() {
    let blob = load("virt-el2");
    let info = parse_ok(&blob);
    assert_virt_common(&info);
    assert_eq!(info.psci, Some(PsciMethod::Smc));
    assert_eq!(info.gic, Some(GICV3));
}

#[test]
fn cortex_a53_one_cpu_128m() {
    let blob = load("a53");
    let info = parse_ok(&blob);
    assert_virt_common(&info);
    assert_eq!(info.memory.as_slice(), [mem(GIB, 128 * MIB, 0)]);
    assert_eq!(info.cpus.as_slice(), cpus(&[(0, 0)]));
    assert_eq!(info.gic, Some(GICV2)); // QEMU's default GIC version is 2.
}

#[test]
fn two_numa_nodes() {
    let blob = load("numa2");
    let info = parse_ok(&blob);
    assert_virt_common(&info);
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
    let info = parse_ok(&blob);
    assert_virt_common(&info);
    assert_eq!(info.memory.as_slice(), [mem(GIB, 16 * GIB, 0)]);
}

#[test]
fn secure_world_nodes_are_ignored() {
    // secure=on adds a "disabled" PL011 at 0x0904_0000 (listed before the real one),
    // "disabled" secure RAM at 0x0e00_0000, and no /psci (firmware's job).
    let blob = load("secure");
    let info = parse_ok(&blob);
    assert_virt_common(&info);
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
            Reservation {
                range: range(0x4100_0000, MIB),
                kind: ReserveKind::MemReserve
            },
            // Two reg entries of fw@5f000000; the dynamic pool (no reg) and the
            // disabled child are not reservations.
            Reservation {
                range: range(0x5f00_0000, 2 * MIB),
                kind: ReserveKind::ReservedMemory
            },
            Reservation {
                range: range(0x5f40_0000, 0x1000),
                kind: ReserveKind::ReservedMemory
            },
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
        [Reservation {
            range: range(0x8000_0000, 0x1000),
            kind: ReserveKind::MemReserve
        }]
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
    assert_eq!(
        info.uart,
        Some(UartInfo {
            range: range(0x0900_2000, 0x1000),
            intid: Some(38)
        })
    );
    let pci = info.pci.as_ref().expect("pci");
    assert_eq!(pci.ecam, range(0x3000_0000, 16 * MIB));
    assert_eq!((pci.bus_start, pci.bus_end), (0, 15));
    assert_eq!(
        pci.windows.as_slice(),
        [
            PciWindow {
                space: PciSpace::Io,
                prefetchable: false,
                pci_addr: 0,
                cpu_addr: 0x3eff_0000,
                size: 0x1_0000
            },
            PciWindow {
                space: PciSpace::Mem32,
                prefetchable: true,
                pci_addr: 0x4000_0000,
                cpu_addr: 0x4000_0000,
                size: 0x1000_0000
            },
        ]
    );
    // The GIC has #address-cells = <1> here, so each entry's parent unit address is one
    // cell; the entry pointing at the 2-cell gpio-intc is skipped.
    assert_eq!(
        pci.irq_map.as_slice(),
        [
            PciIrqMapEntry {
                child_hi: 0,
                pin: 1,
                intid: 35
            },
            PciIrqMapEntry {
                child_hi: 0x800,
                pin: 1,
                intid: 36
            },
            PciIrqMapEntry {
                child_hi: 0x1800,
                pin: 1,
                intid: 25
            },
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

/// QEMU pads its blob to 1 MiB and the caller may pass more than `totalsize` bytes.
#[test]
fn padded_blob_and_longer_slice() {
    let mut blob = load("default");
    let compact = blob.len();
    blob.resize(0x10_0000, 0);
    blob[4..8].copy_from_slice(&0x10_0000u32.to_be_bytes());
    assert_eq!(dt::total_size(&blob), Ok(0x10_0000));
    let info = parse_ok(&blob);
    assert_eq!(info.dtb, range(DTB_PA, 0x10_0000));
    assert_eq!(info.gic, Some(GICV3));

    let mut longer = load("default");
    longer.extend_from_slice(&[0xff; 4096]);
    let info = parse_ok(&longer);
    assert_eq!(info.dtb, range(DTB_PA, compact as u64));
    assert_virt_common(&info);
}

#[test]
fn unreadable_blobs_are_errors() {
    let good = load("default");
    assert_eq!(dt::parse(&[], 0).err(), Some(DtError::Truncated));
    assert_eq!(dt::total_size(&good[..7]), Err(DtError::Truncated));
    assert_eq!(dt::total_size(&good), Ok(good.len()));

    let mut bad = good.clone();
    bad[0] ^= 1;
    assert_eq!(dt::parse(&bad, 0).err(), Some(DtError::BadMagic));
    assert_eq!(dt::total_size(&bad), Err(DtError::BadMagic));

    let patched = |field: usize, value: u32| {
        let mut b = good.clone();
        b[field * 4..field * 4 + 4].copy_from_slice(&value.to_be_bytes());
        dt::parse(&b, 0).err()
    };
    assert_eq!(patched(1, good.len() as u32 + 1), Some(DtError::Truncated)); // totalsize
    assert_eq!(patched(1, 39), Some(DtError::Malformed));
    assert_eq!(patched(2, u32::MAX - 3), Some(DtError::Malformed)); // off_dt_struct
    assert_eq!(patched(3, u32::MAX), Some(DtError::Malformed)); // off_dt_strings
    assert_eq!(patched(4, good.len() as u32), Some(DtError::Malformed)); // off_mem_rsvmap
    assert_eq!(patched(5, 16), Some(DtError::Malformed)); // version
    assert_eq!(patched(8, u32::MAX), Some(DtError::Malformed)); // size_dt_strings
    assert_eq!(patched(9, 4), Some(DtError::Malformed)); // size_dt_struct
}

#[test]
fn every_prefix_is_truncated() {
    for name in ["default", "edge"] {
        let blob = load(name);
        for len in 0..blob.len() {
            assert_eq!(
                dt::parse(&blob[..len], DTB_PA).err(),
                Some(DtError::Truncated),
                "{name} len {len}"
            );
        }
    }
}

/// A prefix whose header claims exactly the prefix length: the structure block runs out
/// mid-tree, which must be an error or a (warned) partial result, never a panic.
#[test]
fn every_prefix_with_patched_sizes_never_panics() {
    for name in ["default", "edge", "reserved"] {
        let blob = load(name);
        for len in 40..=blob.len() {
            let mut b = blob[..len].to_vec();
            b[4..8].copy_from_slice(&(len as u32).to_be_bytes());
            for (field, limit) in [(8usize, 3usize), (9, 2)] {
                // Shrink size_dt_strings / size_dt_struct to fit.
                let off =
                    u32::from_be_bytes(b[limit * 4..limit * 4 + 4].try_into().unwrap()) as usize;
                let size =
                    u32::from_be_bytes(b[field * 4..field * 4 + 4].try_into().unwrap()) as usize;
                let fit = size.min(len.saturating_sub(off)) & !3;
                b[field * 4..field * 4 + 4].copy_from_slice(&(fit as u32).to_be_bytes());
            }
            let _ = dt::parse(&b, DTB_PA);
        }
    }
}

/// Every single-bit flip of two real blobs.
#[test]
fn every_bit_flip_never_panics() {
    for name in ["default", "edge"] {
        let blob = load(name);
        let mut b = blob.clone();
        for i in 0..b.len() {
            for bit in 0..8 {
                b[i] ^= 1 << bit;
                let _ = dt::parse(&b, DTB_PA);
                b[i] ^= 1 << bit;
            }
        }
    }
}

/// Every aligned word of the structure block overwritten with values that hit edge
/// cases (zero cell counts, lengths past the end, all ones, tokens).
#[test]
fn every_word_overwrite_never_panics() {
    let values = [
        0u32,
        1,
        2,
        3,
        4,
        9,
        0x10,
        0xff,
        0x8003,
        0x7fff_ffff,
        0xffff_fffc,
        u32::MAX,
    ];
    for name in ["default", "edge", "reserved"] {
        let blob = load(name);
        let mut b = blob.clone();
        for off in (0..b.len() - 3).step_by(4) {
            let saved: [u8; 4] = b[off..off + 4].try_into().unwrap();
            for v in values {
                b[off..off + 4].copy_from_slice(&v.to_be_bytes());
                if let Ok(info) = dt::parse(&b, DTB_PA) {
                    check_invariants(&info);
                }
            }
            b[off..off + 4].copy_from_slice(&saved);
        }
    }
}

fn check_invariants(info: &BootInfo<'_>) {
    for pair in info.memory.windows(2) {
        assert!(
            pair[0].range.base + pair[0].range.size <= pair[1].range.base,
            "{:?}",
            info.memory
        );
    }
    for m in &info.memory {
        assert!(m.range.size > 0 && m.range.base.checked_add(m.range.size).is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A few random bytes overwritten anywhere in a random dump.
    #[test]
    fn random_corruption_never_panics(
        which in 0..ALL.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut blob = load(ALL[which]);
        let len = blob.len();
        for (at, byte) in edits {
            blob[at.index(len)] = byte;
        }
        if let Ok(info) = dt::parse(&blob, DTB_PA) {
            check_invariants(&info);
        }
    }

    /// Arbitrary bytes behind a valid-looking header.
    #[test]
    fn random_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), words in any::<[u32; 8]>()) {
        let total = (40 + body.len()) as u32;
        let mut blob = Vec::new();
        blob.extend_from_slice(&0xd00d_feedu32.to_be_bytes());
        blob.extend_from_slice(&total.to_be_bytes());
        for w in words {
            blob.extend_from_slice(&(w % (total + 1)).to_be_bytes());
        }
        blob.extend_from_slice(&body);
        let _ = dt::parse(&blob, DTB_PA);
    }
}

// ---------------------------------------------------------------------------------------
// Synthetic trees.

/// A minimal flattened-device-tree writer for hand-made corner cases.
#[derive(Default)]
struct Fdt {
    structs: Vec<u8>,
    strings: Vec<u8>,
    memreserve: Vec<(u64, u64)>,
}

impl Fdt {
    fn word(&mut self, w: u32) -> &mut Self {
        self.structs.extend_from_slice(&w.to_be_bytes());
        self
    }

    fn pad(&mut self) {
        while self.structs.len() % 4 != 0 {
            self.structs.push(0);
        }
    }

    fn begin(&mut self, name: &str) -> &mut Self {
        self.word(1);
        self.structs.extend_from_slice(name.as_bytes());
        self.structs.push(0);
        self.pad();
        self
    }

    fn end(&mut self) -> &mut Self {
        self.word(2)
    }

    fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.word(3).word(value.len() as u32).word(off);
        self.structs.extend_from_slice(value);
        self.pad();
        self
    }

    fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
        let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.prop(name, &bytes)
    }

    fn str(&mut self, name: &str, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.prop(name, &v)
    }

    fn build(&mut self) -> Vec<u8> {
        self.word(9);
        let rsv_off = 40u32;
        let rsv_len = (self.memreserve.len() as u32 + 1) * 16;
        let struct_off = rsv_off + rsv_len;
        let strings_off = struct_off + self.structs.len() as u32;
        let total = strings_off + self.strings.len() as u32;
        let mut b = Vec::new();
        for w in [
            0xd00d_feed,
            total,
            struct_off,
            strings_off,
            rsv_off,
            17,
            16,
            0,
            self.strings.len() as u32,
        ] {
            b.extend_from_slice(&u32::to_be_bytes(w));
        }
        b.extend_from_slice(&(self.structs.len() as u32).to_be_bytes());
        for &(a, s) in self.memreserve.iter().chain([(0, 0)].iter()) {
            b.extend_from_slice(&a.to_be_bytes());
            b.extend_from_slice(&s.to_be_bytes());
        }
        b.extend_from_slice(&self.structs);
        b.extend_from_slice(&self.strings);
        b
    }
}

#[test]
fn builder_minimal_tree() {
    let blob = Fdt::default().begin("").end().build();
    let info = parse_ok(&blob);
    assert!(
        info.memory.is_empty()
            && info.cpus.is_empty()
            && info.gic.is_none()
            && info.warnings.is_empty()
    );
}

/// Both cell counts 0: `reg` entries would be zero bytes wide. (The `fdt` crate's own
/// `Reg` helper divides by that width; we must warn instead.)
#[test]
fn zero_cell_counts_warn() {
    let blob = Fdt::default()
        .begin("")
        .cells("#address-cells", &[0])
        .cells("#size-cells", &[0])
        .begin("memory@0")
        .str("device_type", "memory")
        .cells("reg", &[])
        .end()
        .begin("soc")
        .cells("#address-cells", &[0])
        .cells("#size-cells", &[0])
        .prop("ranges", &[0, 0, 0, 0])
        .begin("uart@0")
        .prop("compatible", b"arm,pl011\0")
        .cells("reg", &[1])
        .end()
        .end()
        .end()
        .build();
    let info = parse_ok(&blob);
    assert!(info.memory.is_empty() && info.uart.is_none());
    assert_eq!(
        warnings(&info),
        [
            "memory@0: reg length does not match #cells",
            "uart@0: reg length does not match #cells",
            "uart@0: UART without usable reg",
        ]
    );
}

#[test]
fn huge_cells_and_overflowing_ranges() {
    let blob = Fdt::default()
        .begin("")
        .cells("#address-cells", &[3])
        .cells("#size-cells", &[2])
        // Address wider than 64 bits, then one that wraps past 2^64.
        .begin("memory@0")
        .str("device_type", "memory")
        .cells(
            "reg",
            &[1, 0, 0, 0, 0x1000, 0, 0xffff_ffff, 0xffff_f000, 0, 0x2000],
        )
        .end()
        .begin("cpus")
        .cells("#address-cells", &[0xffff_ffff])
        .cells("#size-cells", &[0])
        .begin("cpu@0")
        .str("device_type", "cpu")
        .cells("reg", &[0])
        .end()
        .end()
        .end()
        .build();
    let info = parse_ok(&blob);
    assert_eq!(
        info.memory.as_slice(),
        [mem(0xffff_ffff_ffff_f000, 0xfff, 0)]
    );
    assert!(info.cpus.is_empty());
    assert_eq!(
        warnings(&info),
        [
            "memory@0: reg value wider than 64 bits",
            "memory@0: range 0xfffffffffffff000+0x2000 passes 2^64, cut",
            "cpu@0: cpu without a usable reg",
        ]
    );
}

#[test]
fn deep_tree_is_refused_and_limit_is_accepted() {
    let build = |levels: usize| {
        let mut f = Fdt::default();
        f.begin("");
        for i in 0..levels {
            f.begin(&format!("n{i}"));
        }
        for _ in 0..=levels {
            f.end();
        }
        f.build()
    };
    assert!(dt::parse(&build(dt::MAX_DEPTH), 0).is_ok());
    assert_eq!(
        dt::parse(&build(dt::MAX_DEPTH + 1), 0).err(),
        Some(DtError::Malformed)
    );
}

#[test]
fn structural_errors() {
    // A property after a child node, two roots, an unknown token, unbalanced nodes.
    let prop_after_child = Fdt::default()
        .begin("")
        .begin("a")
        .end()
        .cells("x", &[1])
        .end()
        .build();
    let two_roots = Fdt::default().begin("").end().begin("").end().build();
    let bad_token = Fdt::default().begin("").word(7).end().build();
    let unbalanced = Fdt::default().begin("").begin("a").end().build();
    for blob in [prop_after_child, two_roots, bad_token, unbalanced] {
        assert_eq!(dt::parse(&blob, 0).err(), Some(DtError::Malformed));
    }
    // A property name offset past the strings block.
    let mut f = Fdt::default();
    f.begin("").word(3).word(0).word(1000).end();
    assert_eq!(dt::parse(&f.build(), 0).err(), Some(DtError::Malformed));
}

#[test]
fn capacities_overflow_into_warnings() {
    let mut f = Fdt {
        memreserve: (0..70).map(|i| (0x1000 * (i + 1), 0x1000)).collect(),
        ..Fdt::default()
    };
    f.begin("")
        .cells("#address-cells", &[2])
        .cells("#size-cells", &[2]);
    let reg: Vec<u32> = (0..70u32)
        .flat_map(|i| [0, 0x4000_0000 + i * 0x10_0000, 0, 0x1000])
        .collect();
    f.begin("memory@40000000")
        .str("device_type", "memory")
        .cells("reg", &reg)
        .end();
    f.begin("cpus")
        .cells("#address-cells", &[1])
        .cells("#size-cells", &[0]);
    for i in 0..20 {
        f.begin(&format!("cpu@{i}"))
            .str("device_type", "cpu")
            .cells("reg", &[i])
            .end();
    }
    f.end();
    // Many more warnings than fit: memory nodes without reg, each with a long name.
    for i in 0..40 {
        f.begin(&format!("memory@{i:0>120}"))
            .str("device_type", "memory")
            .end();
    }
    let blob = f.end().build();
    let info = parse_ok(&blob);
    assert_eq!(info.reserved.len(), dt::MAX_RESERVED);
    assert_eq!(info.memory.len(), dt::MAX_MEMORY_REGIONS);
    assert_eq!(info.cpus.len(), dt::MAX_CPUS);
    assert_eq!(info.warnings.len(), dt::MAX_WARNINGS);
    assert!(info
        .warnings
        .iter()
        .all(|w| !w.0.is_empty() && w.0.len() <= 96));
}

#[test]
fn interrupts_without_a_gic_warn() {
    let blob = Fdt::default()
        .begin("")
        .begin("pl011@9000000")
        .prop("compatible", b"arm,pl011\0")
        .cells("reg", &[0, 0x0900_0000, 0x1000])
        .cells("interrupts", &[0, 1, 4])
        .end()
        .begin("timer")
        .prop("compatible", b"arm,armv8-timer\0")
        .cells("interrupt-parent", &[0x77])
        .cells("interrupts", &[1, 13, 4])
        .end()
        .end()
        .build();
    let info = parse_ok(&blob);
    assert_eq!(
        info.uart,
        Some(UartInfo {
            range: range(0x0900_0000, 0x1000),
            intid: None
        })
    );
    assert_eq!(info.timer, None);
    assert_eq!(
        warnings(&info),
        [
            "timer: interrupt parent 0x77 is not our GIC",
            "pl011@9000000: no interrupt-parent"
        ]
    );
}
