//! Enumeration through bridges over fake config spaces: nested ports, bus numbers, windows
//! (full, empty, reserved for hotplug, QEMU's hints), the INTx swizzle, and untrusted headers
//! (a bus-number loop, a bridge that does not hold its numbers, too few bus numbers, a device
//! bigger than any window, an unknown header type).

use super::*;

const MIB: u64 = 1 << 20;

/// A QEMU `pcie-root-port` like bridge: BAR0 4 KiB, 64-bit prefetchable window, a PCI
/// Express capability at 0x40 with a slot, hotplug-capable when `slot` is given.
fn root_port(slot: Option<u16>) -> FakeFunction {
    let mut f = FakeFunction::new(0x1b36, 0x000c, 0x06, 0x01, 1);
    f.bar_writable[0] = 0xffff_f000;
    f.regs[0x24 / 4] = 0x0001_0001;
    f.regs[1] |= 1 << 20;
    f.regs[0x34 / 4] = 0x40;
    // PCI Express capabilities: version 2, root port (type 4), slot implemented.
    f.regs[0x40 / 4] = (0x0142 << 16) | 0x10;
    f.regs[0x54 / 4] = slot.map_or(0, |n| (u32::from(n) << 19) | (1 << 6));
    f
}

/// QEMU's resource-reserve capability at 0x60, chained after the PCI Express one.
fn with_reserve(mut f: FakeFunction, buses: u32, mem: u32, pref64: u64) -> FakeFunction {
    f.regs[0x40 / 4] |= 0x60 << 8;
    f.regs[0x60 / 4] = 0x09 | (32 << 16) | (1 << 24);
    f.regs[0x64 / 4] = buses;
    f.regs[0x68 / 4] = u32::MAX;
    f.regs[0x6c / 4] = u32::MAX;
    f.regs[0x70 / 4] = mem;
    f.regs[0x74 / 4] = u32::MAX;
    f.regs[0x78 / 4] = pref64 as u32;
    f.regs[0x7c / 4] = (pref64 >> 32) as u32;
    f
}

/// A plain PCI-to-PCI bridge (a switch port): no BARs, no capabilities, 64-bit prefetchable.
fn plain_bridge() -> FakeFunction {
    let mut f = FakeFunction::new(0x1234, 0x0001, 0x06, 0x01, 1);
    f.regs[0x24 / 4] = 0x0001_0001;
    f
}

fn reg(cam: &FakeCam, at: (u8, u8, u8), reg: u8) -> u32 {
    cam.0.borrow().functions[&at].regs[usize::from(reg / 4)]
}

/// A bridge's bus-number register: primary, secondary, subordinate.
fn buses(cam: &FakeCam, at: (u8, u8, u8)) -> (u8, u8, u8) {
    let r = reg(cam, at, 0x18);
    (r as u8, (r >> 8) as u8, (r >> 16) as u8)
}

/// A bridge's memory window `[base, end)`, `None` when closed.
fn mem_window(cam: &FakeCam, at: (u8, u8, u8)) -> Option<(u64, u64)> {
    let r = reg(cam, at, 0x20);
    let base = u64::from(r & 0xfff0) << 16;
    let end = (u64::from((r >> 16) & 0xfff0) << 16) + MIB;
    (base < end).then_some((base, end))
}

/// A bridge's prefetchable window `[base, end)` with the upper halves, `None` when closed.
fn pref_window(cam: &FakeCam, at: (u8, u8, u8)) -> Option<(u64, u64)> {
    let r = reg(cam, at, 0x24);
    let base = (u64::from(r & 0xfff0) << 16) | (u64::from(reg(cam, at, 0x28)) << 32);
    let end = (u64::from((r >> 16) & 0xfff0) << 16 | u64::from(reg(cam, at, 0x2c)) << 32) + MIB;
    (base < end).then_some((base, end))
}

fn command(cam: &FakeCam, at: (u8, u8, u8)) -> u16 {
    cam.0.borrow().functions[&at].command()
}

const BRIDGE_ON: u16 = 0b111; // IO | MEMORY | BUS_MASTER
const DEVICE_ON: u16 = 0b110; // MEMORY | BUS_MASTER

fn inside(bar: &BarAssignment, w: Option<(u64, u64)>) -> bool {
    w.is_some_and(|(base, end)| bar.pci_addr >= base && bar.pci_addr + bar.size_bytes <= end)
}

/// Every BAR of `at` inside one of the bridge's two windows.
fn bars_behind(host: &PciHost<FakeCam>, cam: &FakeCam, at: (u8, u8, u8), bridge: (u8, u8, u8)) {
    let bars = host
        .bars(df(at.0, at.1, at.2))
        .unwrap_or_else(|| panic!("{at:?} not assigned"));
    assert!(!bars.is_empty());
    for b in bars {
        assert!(
            inside(b, mem_window(cam, bridge)) || inside(b, pref_window(cam, bridge)),
            "{b:x?} of {at:?} outside {bridge:?}'s windows {:x?} {:x?}",
            mem_window(cam, bridge),
            pref_window(cam, bridge)
        );
    }
}

fn nested(w: Option<(u64, u64)>, outer: Option<(u64, u64)>) -> bool {
    matches!((w, outer), (Some(w), Some(o)) if w.0 >= o.0 && w.1 <= o.1)
}

#[test]
fn swizzle() {
    assert_eq!(swizzle_intx(1, 0), 1);
    assert_eq!(swizzle_intx(1, 2), 3);
    assert_eq!(swizzle_intx(4, 1), 1);
    assert_eq!(swizzle_intx(2, 7), 1);
    assert_eq!(swizzle_intx(0, 3), 0);
    assert_eq!(swizzle_intx(5, 3), 5);
}

#[test]
fn nested_ports_get_buses_windows_and_bars() {
    let (mut host, cam) = host_with(vec![
        ((0, 1, 0), virtio_mem_like()),
        ((0, 2, 0), root_port(Some(1))),
        ((1, 0, 0), plain_bridge()),
        ((2, 0, 0), plain_bridge()),
        ((3, 0, 0), virtio_mem_like()),
        ((3, 2, 0), virtio_mem_like()),
        ((0, 3, 0), root_port(Some(2))),
        ((0, 4, 0), plain_bridge()),
    ]);
    let found = host.enumerate();
    assert_eq!(found.len(), 8, "{found:#?}");

    // Depth first: 00:02.0 gets 1..=3, the empty hotplug port 4 (its reserved bus), the empty
    // plain bridge 5.
    assert_eq!(buses(&cam, (0, 2, 0)), (0, 1, 3));
    assert_eq!(buses(&cam, (1, 0, 0)), (1, 2, 3));
    assert_eq!(buses(&cam, (2, 0, 0)), (2, 3, 3));
    assert_eq!(buses(&cam, (0, 3, 0)), (0, 4, 4));
    assert_eq!(buses(&cam, (0, 4, 0)), (0, 5, 5));

    // BARs sit in the windows of their bridge, windows in their parent's, 1 MiB aligned.
    bars_behind(&host, &cam, (3, 0, 0), (2, 0, 0));
    bars_behind(&host, &cam, (3, 2, 0), (2, 0, 0));
    for (inner, outer) in [((2, 0, 0), (1, 0, 0)), ((1, 0, 0), (0, 2, 0))] {
        assert!(nested(mem_window(&cam, inner), mem_window(&cam, outer)));
        assert!(nested(pref_window(&cam, inner), pref_window(&cam, outer)));
    }
    for at in [(0, 2, 0), (1, 0, 0), (2, 0, 0), (0, 3, 0)] {
        let (m, p) = (
            mem_window(&cam, at).unwrap(),
            pref_window(&cam, at).unwrap(),
        );
        assert_eq!((m.0 % MIB, m.1 % MIB, p.0 % MIB, p.1 % MIB), (0, 0, 0, 0));
        assert!(m.1 <= 1 << 32, "memory window below 4 GiB");
        assert_eq!(command(&cam, at), BRIDGE_ON, "{at:?} forwards");
    }
    // The empty hotplug port keeps 1 MiB of each; the empty plain bridge forwards nothing.
    let (m, p) = (
        mem_window(&cam, (0, 3, 0)).unwrap(),
        pref_window(&cam, (0, 3, 0)).unwrap(),
    );
    assert_eq!((m.1 - m.0, p.1 - p.0), (MIB, MIB));
    assert!(p.0 >= 1 << 32, "prefetchable reservation is 64-bit");
    assert_eq!(mem_window(&cam, (0, 4, 0)), None);
    assert_eq!(pref_window(&cam, (0, 4, 0)), None);
    assert_eq!(
        reg(&cam, (0, 4, 0), 0x1c) & 0xffff,
        0x00f0,
        "I/O window closed"
    );
    // The root ports' own BAR0 decodes on bus 0, outside their windows.
    let rp_bar = host.bars(df(0, 2, 0)).unwrap()[0];
    assert!(!inside(&rp_bar, mem_window(&cam, (0, 2, 0))));
    assert_eq!(rp_bar.size_bytes, 0x1000);
    // No two BARs overlap anywhere.
    let mut all: Vec<(u64, u64)> = [(0, 1, 0), (0, 2, 0), (0, 3, 0), (3, 0, 0), (3, 2, 0)]
        .iter()
        .flat_map(|&(b, d, f)| host.bars(df(b, d, f)).unwrap().to_vec())
        .map(|b| (b.pci_addr, b.pci_addr + b.size_bytes))
        .collect();
    all.sort();
    assert!(all.windows(2).all(|p| p[0].1 <= p[1].0), "{all:x?}");
    for at in [(0, 1, 0), (3, 0, 0), (3, 2, 0)] {
        assert_eq!(command(&cam, at), DEVICE_ON, "{at:?}");
    }

    // INTx through three bridges: device 0 keeps INTA (the root port's slot 2: INTID 37);
    // device 2's INTA becomes INTC at the first bridge and stays so (slot 2 INTC: INTID 35).
    let rec = |b, d| found.iter().find(|f| f.df == df(b, d, 0)).unwrap();
    assert_eq!(rec(3, 0).intid, Some(37));
    assert_eq!(rec(3, 2).intid, Some(35));
    assert_eq!(rec(3, 0).parent, Some(df(2, 0, 0)));
    assert_eq!(rec(0, 1).parent, None);
    assert_eq!(
        rec(0, 2).bridge,
        Some(BridgeBuses {
            secondary: 1,
            subordinate: 3
        })
    );
    assert_eq!(rec(0, 3).hotplug.map(|s| s.slot_number), Some(2));
    assert_eq!(rec(1, 0).hotplug, None);
    assert_eq!(
        rec(0, 2).capabilities,
        vec![Capability {
            id: caps::CAP_ID_PCIE,
            offset: 0x40
        }]
    );

    // A device that appears later behind the hotplug port is placed in its reservation.
    cam.0
        .borrow_mut()
        .functions
        .insert((4, 0, 0), virtio_mem_like());
    host.setup_bars(df(4, 0, 0)).unwrap();
    bars_behind(&host, &cam, (4, 0, 0), (0, 3, 0));
}

#[test]
fn full_window_disables_only_the_bridge_that_does_not_fit() {
    // MEM32 holds one 1 MiB window and the 4 KiB BARs.
    let windows = vec![
        window(Space::Mem32, false, 0x1000_0000, 0x1000_0000, MIB + 0x4000),
        qemu_windows()[2],
    ];
    let cam = FakeCam::default();
    cam.0.borrow_mut().functions = [
        ((0, 1, 0), virtio_mem_like()),
        ((0, 2, 0), root_port(None)),
        ((1, 0, 0), virtio_mem_like()),
        ((0, 3, 0), root_port(Some(3))),
    ]
    .into_iter()
    .collect();
    let mut host = PciHost::new(cam.clone(), 0, 255, &windows, qemu_irq_map());
    host.enumerate();
    assert_eq!(
        mem_window(&cam, (0, 2, 0)),
        Some((0x1000_0000, 0x1010_0000))
    );
    bars_behind(&host, &cam, (1, 0, 0), (0, 2, 0));
    // The hotplug port's reservation did not fit: closed, not forwarding, not listed.
    assert_eq!(mem_window(&cam, (0, 3, 0)), None);
    assert_eq!(pref_window(&cam, (0, 3, 0)), None);
    assert_eq!(command(&cam, (0, 3, 0)) & 0b111, 0);
    assert!(host.bars(df(0, 3, 0)).is_none());
    assert!(host.bridges().iter().all(|b| b.df != df(0, 3, 0)));
    // A device appearing behind it later has nowhere to go.
    cam.0
        .borrow_mut()
        .functions
        .insert((2, 0, 0), virtio_mem_like());
    assert_eq!(
        host.setup_bars(df(2, 0, 0)),
        Err(PciError::NoBridge(df(2, 0, 0)))
    );
    // Everyone else works.
    assert!(host.bars(df(0, 1, 0)).is_some());
    assert_eq!(command(&cam, (0, 2, 0)), BRIDGE_ON);
}

#[test]
fn device_bigger_than_any_window_is_disabled_alone() {
    let mut huge = FakeFunction::new(0x1234, 0x5679, 0x02, 0, 0);
    huge.regs[0x10 / 4] = 0b0100;
    huge.bar_writable[1] = 0xffff_ff00;
    let (mut host, cam) = host_with(vec![
        ((0, 2, 0), root_port(None)),
        ((1, 0, 0), huge),
        ((1, 1, 0), virtio_mem_like()),
    ]);
    host.enumerate();
    assert!(host.bars(df(1, 0, 0)).is_none());
    assert_eq!(command(&cam, (1, 0, 0)) & 0b11, 0);
    bars_behind(&host, &cam, (1, 1, 0), (0, 2, 0));
    // The window was sized without it.
    let (m, p) = (
        mem_window(&cam, (0, 2, 0)).unwrap(),
        pref_window(&cam, (0, 2, 0)).unwrap(),
    );
    assert_eq!((m.1 - m.0, p.1 - p.0), (MIB, MIB));
}

#[test]
fn bus_number_loop_and_stuck_bridges_are_disabled() {
    // Secondary bus register stuck at 0: the root bus again.
    let mut looping = plain_bridge();
    looping.frozen.push(0x18 / 4);
    // Stuck at secondary 9, which nobody scanned.
    let mut stuck = plain_bridge();
    stuck.regs[0x18 / 4] = 0x0009_0900;
    stuck.frozen.push(0x18 / 4);
    let garbage = FakeFunction::new(0x1234, 0x0002, 0x06, 0x7f, 0);
    let (mut host, cam) = host_with(vec![
        ((0, 2, 0), looping),
        ((0, 3, 0), stuck),
        ((0, 4, 0), garbage),
        ((0, 5, 0), root_port(None)),
        ((1, 0, 0), virtio_mem_like()),
    ]);
    let found = host.enumerate();
    assert_eq!(found.len(), 5);
    for at in [(0, 2, 0), (0, 3, 0)] {
        assert_eq!(command(&cam, at) & 0b111, 0, "{at:?}");
        assert_eq!(mem_window(&cam, at), None, "{at:?}");
        assert!(host.bars(df(at.0, at.1, at.2)).is_none());
    }
    let rec = |d| found.iter().find(|f| f.df == df(0, d, 0)).unwrap();
    assert_eq!(rec(2).bridge, None);
    assert_eq!(rec(4).header_type, HeaderType::Unrecognised(0x7f));
    assert!(host.bars(df(0, 4, 0)).is_none());
    // The good port got the first bus number and its device works.
    assert_eq!(buses(&cam, (0, 5, 0)), (0, 1, 1));
    bars_behind(&host, &cam, (1, 0, 0), (0, 5, 0));
}

#[test]
fn too_few_bus_numbers() {
    let cam = FakeCam::default();
    cam.0.borrow_mut().functions = [
        ((0, 1, 0), plain_bridge()),
        ((1, 0, 0), plain_bridge()),
        ((2, 0, 0), plain_bridge()),
        ((2, 1, 0), virtio_mem_like()),
    ]
    .into_iter()
    .collect();
    let mut host = PciHost::new(cam.clone(), 0, 2, &qemu_windows(), qemu_irq_map());
    host.enumerate();
    assert_eq!(buses(&cam, (0, 1, 0)), (0, 1, 2));
    assert_eq!(buses(&cam, (1, 0, 0)), (1, 2, 2));
    // No bus 3 for the third bridge: disabled; its sibling on bus 2 works.
    assert_eq!(command(&cam, (2, 0, 0)) & 0b111, 0);
    bars_behind(&host, &cam, (2, 1, 0), (1, 0, 0));
}

#[test]
fn qemu_reserve_hints_are_honoured() {
    let (mut host, cam) = host_with(vec![
        (
            (0, 2, 0),
            with_reserve(root_port(Some(1)), 3, 2 << 20, 4 << 20),
        ),
        ((0, 3, 0), root_port(Some(2))),
    ]);
    host.enumerate();
    assert_eq!(buses(&cam, (0, 2, 0)), (0, 1, 3));
    assert_eq!(buses(&cam, (0, 3, 0)), (0, 4, 4));
    let (m, p) = (
        mem_window(&cam, (0, 2, 0)).unwrap(),
        pref_window(&cam, (0, 2, 0)).unwrap(),
    );
    assert_eq!((m.1 - m.0, p.1 - p.0), (2 * MIB, 4 * MIB));
    assert_eq!(
        caps::reserve_hints(
            &cam,
            df(0, 2, 0),
            0x1b36,
            &caps::capabilities(&cam, df(0, 2, 0))
        ),
        Some(ReserveHints {
            buses: Some(3),
            mem_bytes: Some(2 << 20),
            pref32_bytes: None,
            pref64_bytes: Some(4 << 20),
        })
    );
}

#[test]
fn capability_list_loop_ends() {
    let mut f = root_port(Some(1));
    // 0x40 -> 0x60 -> 0x40 ...
    f.regs[0x40 / 4] |= 0x60 << 8;
    f.regs[0x60 / 4] = 0x4009;
    let (_, cam) = host_with(vec![((0, 2, 0), f)]);
    let caps = caps::capabilities(&cam, df(0, 2, 0));
    assert_eq!(caps.len(), 2, "{caps:?}");
}

#[test]
fn hotplug_port_scan_clear_and_slot_registers() {
    let (mut host, cam) = host_with(vec![
        ((0, 1, 0), virtio_mem_like()),
        ((0, 3, 0), root_port(Some(2))),
    ]);
    host.enumerate();
    assert_eq!(host.hotplug_ports(), vec![df(0, 3, 0)]);
    // Nothing behind it yet.
    assert_eq!(host.scan_slot(df(0, 3, 0)).unwrap(), vec![]);
    cam.0
        .borrow_mut()
        .functions
        .insert((1, 0, 0), virtio_mem_like());
    let found = host.scan_slot(df(0, 3, 0)).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].parent, Some(df(0, 3, 0)));
    // INTA behind the port at slot 3 of bus 0: INTID 38.
    assert_eq!(found[0].intid, Some(38));
    bars_behind(&host, &cam, (1, 0, 0), (0, 3, 0));
    let first = host.bars(df(1, 0, 0)).unwrap().to_vec();
    assert_eq!(command(&cam, (1, 0, 0)), DEVICE_ON);
    // Gone and back: the same space again.
    host.clear_slot(df(0, 3, 0));
    assert!(host.bars(df(1, 0, 0)).is_none());
    assert!(host.functions().iter().all(|f| f.df.bus != 1));
    host.scan_slot(df(0, 3, 0)).unwrap();
    assert_eq!(host.bars(df(1, 0, 0)).unwrap(), first.as_slice());
    // Not a hotplug port.
    assert_eq!(
        host.scan_slot(df(0, 1, 0)),
        Err(PciError::NoBridge(df(0, 1, 0)))
    );

    // Slot registers at PCI Express capability + 0x18: control low, status high. Clearing
    // status writes only the high half (the fake stores what is written; RW1C is the port's).
    cam.0
        .borrow_mut()
        .functions
        .get_mut(&(0, 3, 0))
        .unwrap()
        .regs[0x58 / 4] = 0x0048_0123;
    assert_eq!(host.slot_registers(df(0, 3, 0)), Some((0x0123, 0x0048)));
    host.clear_slot_status(df(0, 3, 0), crate::pci::slot::status::PDC);
    assert_eq!(reg(&cam, (0, 3, 0), 0x58), 0x0008_0123);
    host.write_slot_control(df(0, 3, 0), 0x0400);
    assert_eq!(reg(&cam, (0, 3, 0), 0x58), 0x0008_0400);
    assert_eq!(host.slot_registers(df(0, 1, 0)), None);
}
