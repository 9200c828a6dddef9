//! Which MSI controller the host bridge's `msi-map` / `msi-parent` names, on QEMU's dumps
//! (ITS on GICv3, v2m on GICv2, none with `its=off`) and on built trees: `msi-map-mask`,
//! several entries, entries to unknown frames, `msi-parent`, v2m SPI properties.
use hotmem::dt::{MsiController, MsiMapEntry, PciMsi};

use super::builder::Fdt;
use super::*;

fn msi_of(info: &BootInfo<'_>) -> Option<PciMsi> {
    info.pci.as_ref().unwrap().msi.clone()
}

fn identity() -> MsiMapEntry {
    MsiMapEntry {
        rid_base: 0,
        msi_base: 0,
        length: 0x1_0000,
    }
}

#[test]
fn default_dump_uses_the_its_with_requester_ids() {
    let blob = load("default");
    let info = parse_ok(&blob);
    let msi = msi_of(&info).expect("msi-map to the ITS");
    assert_eq!(
        msi.controller,
        MsiController::Its {
            regs: range(0x0808_0000, 0x2_0000)
        }
    );
    assert_eq!(msi.map.as_slice(), [identity()]);
    // The DeviceID is the requester ID: bus 1, device 0, function 0 is 0x100.
    assert_eq!(msi.device_id(0x0008), Some(0x0008));
    assert_eq!(msi.device_id(0x0100), Some(0x0100));
}

#[test]
fn gicv2_dump_uses_v2m_and_reads_msi_typer() {
    let blob = load("gicv2");
    let info = parse_ok(&blob);
    let msi = msi_of(&info).expect("msi-map to the v2m frame");
    assert_eq!(
        msi.controller,
        MsiController::V2m {
            regs: range(0x0802_0000, 0x1000),
            spis: None
        }
    );
}

#[test]
fn its_off_dump_has_no_msi_controller() {
    let blob = load("gicv3-noits");
    let info = parse_ok(&blob);
    assert_eq!(msi_of(&info), None);
}

/// A GIC with one ITS (phandle 2) and one v2m-like frame of the wrong version (phandle 3),
/// and a host bridge whose extra properties the caller gives.
fn tree(pcie: impl Fn(&mut Fdt) -> &mut Fdt, v2: bool) -> Vec<u8> {
    let mut t = Fdt::default();
    t.begin("").cell_counts(2, 2);
    t.begin("intc@8000000")
        .compatible(if v2 {
            "arm,cortex-a15-gic"
        } else {
            "arm,gic-v3"
        })
        .cells("phandle", &[1])
        .prop("interrupt-controller", &[])
        .cells("#interrupt-cells", &[3])
        .cell_counts(2, 2)
        .prop("ranges", &[])
        .cells(
            "reg",
            &[0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 0x2_0000],
        );
    t.begin("its@8080000")
        .compatible("arm,gic-v3-its")
        .prop("msi-controller", &[])
        .cells("phandle", &[2])
        .cells("reg", &[0, 0x0808_0000, 0, 0x2_0000])
        .end();
    t.begin("v2m@8020000")
        .compatible("arm,gic-v2m-frame")
        .prop("msi-controller", &[])
        .cells("phandle", &[3])
        .cells("arm,msi-base-spi", &[64])
        .cells("arm,msi-num-spis", &[16])
        .cells("reg", &[0, 0x0802_0000, 0, 0x1000])
        .end();
    t.end();
    t.begin("pcie@10000000")
        .compatible("pci-host-ecam-generic")
        .cells("reg", &[0x40, 0x1000_0000, 0, 0x1000_0000]);
    pcie(&mut t).end().end().build()
}

#[test]
fn msi_map_entries_and_mask() {
    let blob = tree(
        |t| {
            t.cells(
                "msi-map",
                &[0, 2, 0x1000, 0x100, 0x100, 9, 0, 0x100, 0x200, 2, 0x20, 0],
            )
            .cells("msi-map-mask", &[0xfff8])
        },
        false,
    );
    let info = parse_ok(&blob);
    let msi = msi_of(&info).unwrap();
    assert!(matches!(msi.controller, MsiController::Its { .. }));
    assert_eq!(
        msi.map.as_slice(),
        [MsiMapEntry {
            rid_base: 0,
            msi_base: 0x1000,
            length: 0x100
        }]
    );
    // The mask drops the function bits before the lookup.
    assert_eq!(msi.device_id(0x0009), Some(0x1008));
    assert_eq!(msi.device_id(0x0100), None);
    assert_eq!(
        warnings(&info),
        [
            "pcie@10000000: msi-map: 0x9 is not an MSI frame",
            "pcie@10000000: msi-map entry of length 0"
        ]
    );
}

#[test]
fn msi_parent_is_an_identity_map() {
    let blob = tree(|t| t.cells("msi-parent", &[2]), false);
    let info = parse_ok(&blob);
    let msi = msi_of(&info).unwrap();
    assert!(matches!(msi.controller, MsiController::Its { .. }));
    assert_eq!(msi.map.as_slice(), [identity()]);
    assert_eq!(msi.device_id(0xffff), Some(0xffff));
}

#[test]
fn a_frame_of_the_other_gic_version_is_not_an_msi_controller() {
    // On a v3 GIC the v2m frame (phandle 3) cannot be used.
    let blob = tree(|t| t.cells("msi-parent", &[3]), false);
    let info = parse_ok(&blob);
    assert_eq!(msi_of(&info), None);
    assert_eq!(
        warnings(&info),
        ["pcie@10000000: msi-parent is not an MSI frame of our GIC"]
    );
    // On a v2 GIC it is, with its SPI properties.
    let blob = tree(|t| t.cells("msi-parent", &[3]), true);
    let info = parse_ok(&blob);
    assert_eq!(
        msi_of(&info).unwrap().controller,
        MsiController::V2m {
            regs: range(0x0802_0000, 0x1000),
            spis: Some((64, 16))
        }
    );
}

#[test]
fn no_msi_properties_no_msi() {
    let blob = tree(|t| t, false);
    let info = parse_ok(&blob);
    assert_eq!(msi_of(&info), None);
    assert!(warnings(&info).is_empty());
}
