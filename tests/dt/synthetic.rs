//! Corner cases built in memory with [`Fdt`]: zero and huge cell counts, depth limits,
//! structural errors, full lists, interrupts without a GIC.
use hotmem::dt::DtError;

use super::builder::Fdt;
use super::*;

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
        .cell_counts(0, 0)
        .begin("memory@0")
        .device_type("memory")
        .cells("reg", &[])
        .end()
        .begin("soc")
        .cell_counts(0, 0)
        .prop("ranges", &[0, 0, 0, 0])
        .begin("uart@0")
        .compatible("arm,pl011")
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
        .cell_counts(3, 2)
        // Address wider than 64 bits, then one that wraps past 2^64.
        .begin("memory@0")
        .device_type("memory")
        .cells(
            "reg",
            &[1, 0, 0, 0, 0x1000, 0, 0xffff_ffff, 0xffff_f000, 0, 0x2000],
        )
        .end()
        .begin("cpus")
        .cell_counts(0xffff_ffff, 0)
        .begin("cpu@0")
        .device_type("cpu")
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
    let mut f = Fdt::with_memreserve((0..70).map(|i| (0x1000 * (i + 1), 0x1000)).collect());
    f.begin("").cell_counts(2, 2);
    let reg: Vec<u32> = (0..70u32)
        .flat_map(|i| [0, 0x4000_0000 + i * 0x10_0000, 0, 0x1000])
        .collect();
    f.begin("memory@40000000")
        .device_type("memory")
        .cells("reg", &reg)
        .end();
    f.begin("cpus").cell_counts(1, 0);
    for i in 0..20 {
        f.begin(&format!("cpu@{i}"))
            .device_type("cpu")
            .cells("reg", &[i])
            .end();
    }
    f.end();
    // Many more warnings than fit: memory nodes without reg, each with a long name.
    for i in 0..40 {
        f.begin(&format!("memory@{i:0>120}"))
            .device_type("memory")
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
        .compatible("arm,pl011")
        .cells("reg", &[0, 0x0900_0000, 0x1000])
        .cells("interrupts", &[0, 1, 4])
        .end()
        .begin("timer")
        .compatible("arm,armv8-timer")
        .cells("interrupt-parent", &[0x77])
        .cells("interrupts", &[1, 13, 4])
        .end()
        .end()
        .build();
    let info = parse_ok(&blob);
    assert_eq!(info.uart, Some(uart(0x0900_0000, None)));
    assert_eq!(info.timer, None);
    assert_eq!(
        warnings(&info),
        [
            "timer: interrupt parent 0x77 is not our GIC",
            "pl011@9000000: no interrupt-parent"
        ]
    );
}
