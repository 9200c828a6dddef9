//! Boot matrix: boot to `hotmem> `, check `cpus` and `mem` against the machine, `poweroff`, and
//! QEMU exits with status 0.
//!
//! Five dimensions: CPU model {max, cortex-a53, cortex-a57, cortex-a72, neoverse-n1} × GIC {2, 3}
//! × EL2 entry {off, on (`virtualization=on`)} × CPUs {1, 2, 4, 8} × memory {128M; 512M + 4G
//! virtio-mem (the default); 2G; 16G; two NUMA nodes 384M + 640M with a 1G virtio-mem on node 1}.
//! The full product is 800 boots; 12 rows sampled pairwise (a greedy search, then fixed here)
//! cover:
//!
//! | pair      | covered | | pair      | covered |
//! |-----------|---------|-|-----------|---------|
//! | cpu × gic | 10/10   | | gic × smp | 8/8     |
//! | cpu × el  | 10/10   | | gic × mem | 10/10   |
//! | gic × el  | 4/4     | | el × smp  | 8/8     |
//! | el × mem  | 10/10   | | cpu × smp | 12/20   |
//! | cpu × mem | 12/25   | | smp × mem | 12/20   |
//!
//! 96 of the 125 value pairs; 12 rows can cover at most 120, and cpu × mem alone needs 25 rows.
//! [`matrix_coverage`] recomputes this table, so editing a row cannot silently lose coverage of
//! the small dimensions. QEMU accepts every row (cortex-a53's 40-bit PA still fits 16G RAM and the
//! high PCIe windows). NUMA is never paired with one CPU (a node without CPUs is legal but not
//! what this row is about).
//!
//! Runtime: each row boots once, well under 1 s on the 2-core TCG development host (the 13
//! tests, the coverage check included, took 3–6 s together in `make test`).
//!
//! | row | cpu         | gic | el2 | smp | memory        |
//! |-----|-------------|-----|-----|-----|---------------|
//! | 0   | max         | 3   | off | 2   | 512M + vmem   |
//! | 1   | max         | 2   | on  | 4   | 16G           |
//! | 2   | max         | 3   | on  | 8   | 2G            |
//! | 3   | cortex-a53  | 2   | on  | 1   | 512M + vmem   |
//! | 4   | cortex-a53  | 3   | off | 2   | NUMA          |
//! | 5   | cortex-a57  | 2   | off | 8   | NUMA          |
//! | 6   | cortex-a57  | 3   | on  | 2   | 16G           |
//! | 7   | cortex-a57  | 3   | off | 4   | 128M          |
//! | 8   | cortex-a72  | 2   | off | 1   | 2G            |
//! | 9   | cortex-a72  | 3   | on  | 4   | NUMA          |
//! | 10  | neoverse-n1 | 2   | on  | 2   | 128M          |
//! | 11  | neoverse-n1 | 3   | off | 1   | 16G           |

mod common;

use std::collections::BTreeSet;

use hotmem_qemu::{Gic, Machine, VirtioMem, GIB, MIB};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mem {
    M128,
    Default512,
    G2,
    G16,
    Numa,
}

const CPUS: [&str; 5] = [
    "max",
    "cortex-a53",
    "cortex-a57",
    "cortex-a72",
    "neoverse-n1",
];
const SMPS: [u32; 4] = [1, 2, 4, 8];
const MEMS: [Mem; 5] = [Mem::M128, Mem::Default512, Mem::G2, Mem::G16, Mem::Numa];

/// (cpu, gic, el2, smp, memory); see the table in the module docs.
const MATRIX: [(&str, Gic, bool, u32, Mem); 12] = [
    ("max", Gic::V3, false, 2, Mem::Default512),
    ("max", Gic::V2, true, 4, Mem::G16),
    ("max", Gic::V3, true, 8, Mem::G2),
    ("cortex-a53", Gic::V2, true, 1, Mem::Default512),
    ("cortex-a53", Gic::V3, false, 2, Mem::Numa),
    ("cortex-a57", Gic::V2, false, 8, Mem::Numa),
    ("cortex-a57", Gic::V3, true, 2, Mem::G16),
    ("cortex-a57", Gic::V3, false, 4, Mem::M128),
    ("cortex-a72", Gic::V2, false, 1, Mem::G2),
    ("cortex-a72", Gic::V3, true, 4, Mem::Numa),
    ("neoverse-n1", Gic::V2, true, 2, Mem::M128),
    ("neoverse-n1", Gic::V3, false, 1, Mem::G16),
];

fn machine(row: usize) -> Machine {
    let (cpu, gic, el2, smp, mem) = MATRIX[row];
    let m = Machine::default().cpu(cpu).gic(gic).el2(el2).smp(smp);
    match mem {
        Mem::M128 => m.ram(128 * MIB).without_virtio_mem(),
        Mem::Default512 => m,
        Mem::G2 => m.ram(2 * GIB).without_virtio_mem(),
        Mem::G16 => m.ram(16 * GIB).without_virtio_mem(),
        Mem::Numa => m
            .numa_nodes(&[384 * MIB, 640 * MIB])
            .without_virtio_mem()
            .with_virtio_mem(VirtioMem::new(GIB).node(1)),
    }
}

fn boot_check_poweroff(row: usize) {
    let m = machine(row);
    let mut vm = common::boot(&m);
    let cpus = vm.records("cpus");
    common::check_cpus(&m, &cpus);
    let mem = vm.mem();
    common::check_mem(&m, &mem);
    vm.poweroff_ok();
}

#[test]
fn row_00_max_gic3_el1_smp2_default() {
    boot_check_poweroff(0);
}
#[test]
fn row_01_max_gic2_el2_smp4_16g() {
    boot_check_poweroff(1);
}
#[test]
fn row_02_max_gic3_el2_smp8_2g() {
    boot_check_poweroff(2);
}
#[test]
fn row_03_a53_gic2_el2_smp1_default() {
    boot_check_poweroff(3);
}
#[test]
fn row_04_a53_gic3_el1_smp2_numa() {
    boot_check_poweroff(4);
}
#[test]
fn row_05_a57_gic2_el1_smp8_numa() {
    boot_check_poweroff(5);
}
#[test]
fn row_06_a57_gic3_el2_smp2_16g() {
    boot_check_poweroff(6);
}
#[test]
fn row_07_a57_gic3_el1_smp4_128m() {
    boot_check_poweroff(7);
}
#[test]
fn row_08_a72_gic2_el1_smp1_2g() {
    boot_check_poweroff(8);
}
#[test]
fn row_09_a72_gic3_el2_smp4_numa() {
    boot_check_poweroff(9);
}
#[test]
fn row_10_n1_gic2_el2_smp2_128m() {
    boot_check_poweroff(10);
}
#[test]
fn row_11_n1_gic3_el1_smp1_16g() {
    boot_check_poweroff(11);
}

/// The matrix keeps its promises without booting anything: every value of every dimension
/// appears, and the pairs the module docs claim are covered are covered.
#[test]
fn matrix_coverage() {
    let row = |r: &(&str, Gic, bool, u32, Mem)| {
        [
            CPUS.iter().position(|c| *c == r.0).expect("known cpu"),
            usize::from(r.1 == Gic::V3),
            usize::from(r.2),
            SMPS.iter().position(|s| *s == r.3).expect("known smp"),
            MEMS.iter().position(|m| *m == r.4).expect("known mem"),
        ]
    };
    let sizes = [CPUS.len(), 2, 2, SMPS.len(), MEMS.len()];
    let rows: Vec<[usize; 5]> = MATRIX.iter().map(row).collect();
    assert!(rows.len() <= 12, "at most 12 boots");
    let covered = |i: usize, j: usize| {
        rows.iter()
            .map(|r| (r[i], r[j]))
            .collect::<BTreeSet<_>>()
            .len()
    };
    // (dimension a, dimension b, pairs covered): cpu=0 gic=1 el=2 smp=3 mem=4.
    let claims = [
        (0, 1, 10),
        (0, 2, 10),
        (1, 2, 4),
        (2, 4, 10),
        (0, 4, 12),
        (1, 3, 8),
        (1, 4, 10),
        (2, 3, 8),
        (0, 3, 12),
        (3, 4, 12),
    ];
    for (i, j, want) in claims {
        assert_eq!(covered(i, j), want, "pairs of dimensions {i} × {j}");
    }
    for (d, &n) in sizes.iter().enumerate() {
        assert_eq!(covered(d, d), n, "every value of dimension {d} appears");
    }
    assert_eq!(MATRIX[0].4, Mem::Default512);
    assert_eq!(
        machine(0),
        Machine::default(),
        "row 0 is the `make run` machine"
    );
    for (i, r) in MATRIX.iter().enumerate() {
        assert!(
            !(r.4 == Mem::Numa && r.3 == 1),
            "row {i}: NUMA with one CPU"
        );
    }
}
