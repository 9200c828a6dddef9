//! PCIe topologies on `virt`: virtio-mem behind `pcie-root-port`s, next to the default device
//! on bus 0. The guest numbers the buses, programs the root ports' windows and places the
//! BARs behind them (QEMU leaves all of it to the guest under `-kernel`); a device behind a
//! port must then resize like one on bus 0. QMP `query-memory-devices` is the outside truth,
//! `vmem` (matched by `addr` == `memaddr`) and `check` the guest's view.
//!
//! The extra devices come as raw QEMU arguments (`Machine::extra_arg`); a second `-m` raises
//! `maxmem` by their backends' size (QEMU merges the two `-m` options, the later keys win).
//!
//! One QEMU runs at a time (tests/common); each test boots its own machine.

mod common;

use std::time::Duration;

use common::{boot, check_ok, poll, Vm, QMP};
use hotmem_qemu::machine::format_size;
use hotmem_qemu::{Machine, VirtioMemInfo, GIB};
use qapi::qmp;

/// From `qom-set` to QMP size == requested, and from there to the guest showing it.
const RESIZE: Duration = Duration::from_secs(30);
/// Between two polls of QMP or the shell.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// The backend of the device behind the root port.
const RP_DEVICE_BYTES: u64 = 2 * GIB;

/// The backend `hot0` for the devices `device_add` puts on `rp2`.
const HOT_DEVICE_BYTES: u64 = 4 * GIB;
/// From `device_add` to the guest showing the device, and from the last unplug to QEMU's
/// DEVICE_DELETED.
const HOTPLUG: Duration = Duration::from_secs(30);

/// The default machine (`vm0` on bus 0) plus root port `rp1` (slot 1) holding `vmrp`
/// (`RP_DEVICE_BYTES`, requested 0), an empty hotplug root port `rp2` (slot 2), and the
/// unused backend `hot0` (`HOT_DEVICE_BYTES`) for a device added later.
fn root_port_machine() -> Machine {
    let m = Machine::default();
    let memory = format!(
        "{},maxmem={}",
        format_size(m.boot_ram_bytes()),
        format_size(m.maxmem_bytes() + RP_DEVICE_BYTES + HOT_DEVICE_BYTES)
    );
    let args = [
        "-m".to_string(),
        memory,
        "-device".into(),
        "pcie-root-port,id=rp1,chassis=1,slot=1,bus=pcie.0".into(),
        "-object".into(),
        format!(
            "memory-backend-ram,id=rpmem,size={}",
            format_size(RP_DEVICE_BYTES)
        ),
        "-device".into(),
        "virtio-mem-pci,id=vmrp,memdev=rpmem,bus=rp1,requested-size=0".into(),
        "-device".into(),
        "pcie-root-port,id=rp2,chassis=2,slot=2,bus=pcie.0".into(),
        "-object".into(),
        format!(
            "memory-backend-ram,id=hot0,size={}",
            format_size(HOT_DEVICE_BYTES)
        ),
    ];
    args.iter().fold(m, |m, a| m.extra_arg(a))
}

fn qmp_device(vm: &mut Vm, id: &str) -> VirtioMemInfo {
    vm.qmp()
        .virtio_mem(id, QMP)
        .unwrap_or_else(|e| panic!("QMP {id}: {e}"))
}

/// `qom-set <id> requested-size`, then waits for QMP size == requested and for the guest's
/// `vmem` line of that device (by address) to show it plugged and converged.
fn resize(vm: &mut Vm, id: &str, bytes: u64) {
    vm.qmp()
        .set_requested_size(id, bytes, QMP)
        .unwrap_or_else(|e| panic!("qom-set {id} requested-size {bytes}: {e}"));
    let (dev, took) = poll(
        &format!("QMP {id} size == {bytes}"),
        RESIZE,
        POLL_EVERY,
        || {
            let d = qmp_device(vm, id);
            (d.plugged_bytes == bytes)
                .then_some(d.clone())
                .ok_or(format!("{d:?}"))
        },
    );
    eprintln!("[{id} {bytes}] QMP size == requested after {took:.2?}");
    poll(
        &format!("vmem to show {id} at {bytes}"),
        RESIZE,
        POLL_EVERY,
        || {
            let vmem = vm.vmem();
            let line = vmem
                .by_addr(dev.memaddr)
                .ok_or_else(|| format!("no addr={:#x}:\n{vmem}", dev.memaddr))?;
            (line.plugged_kib * 1024 == bytes
                && line.requested_kib * 1024 == bytes
                && line.converged())
            .then_some(())
            .ok_or_else(|| line.to_string())
        },
    );
}

/// A virtio-mem device behind a root port at boot is found (`pci=01:00.0`, the default
/// device keeps `pci=00:01.0`), plugs 1 GiB and unplugs it; the default device on bus 0 still resizes; `check` is ok after each step.
///
/// Runtime: about 1 s on the 2-core TCG development host.
#[test]
fn cold_plugged_behind_root_port_resizes() {
    let mut vm = boot(&root_port_machine());
    let vmem = vm.vmem();
    assert_eq!(vmem.devices.len(), 2, "two devices:\n{vmem}");
    // The default device stays on bus 0; the one behind the root port is on bus 1.
    for (id, pci) in [("vm0", "00:01.0"), ("vmrp", "01:00.0")] {
        let addr = qmp_device(&mut vm, id).memaddr;
        let line = vmem
            .by_pci(pci)
            .unwrap_or_else(|| panic!("no pci={pci}:\n{vmem}"));
        assert_eq!(line.addr, addr, "{id} at {pci}:\n{vmem}");
    }
    resize(&mut vm, "vmrp", GIB);
    check_ok(&mut vm, "with 1 GiB plugged behind the root port");
    resize(&mut vm, "vm0", GIB);
    resize(&mut vm, "vm0", 0);
    resize(&mut vm, "vmrp", 0);
    check_ok(&mut vm, "after unplugging both");
    vm.poweroff_ok();
}

/// `device_add` of `vmh` on `rp2` with `requested_size` (HMP prints nothing on success).
fn device_add(vm: &mut Vm, requested_size: &str) {
    let out = vm
        .qmp()
        .hmp(
            &format!(
                "device_add virtio-mem-pci,id=vmh,memdev=hot0,bus=rp2,requested-size={requested_size}"
            ),
            QMP,
        )
        .unwrap_or_else(|e| panic!("device_add: {e}"));
    assert!(out.trim().is_empty(), "device_add: {out}");
}

/// Waits until the guest lists the device at `pci` with `plugged_kib` and converged;
/// returns its id.
fn wait_listed(vm: &mut Vm, pci: &str, bytes: u64) -> String {
    let (id, took) = poll(
        &format!("vmem to list pci={pci} at {bytes} bytes"),
        HOTPLUG,
        POLL_EVERY,
        || {
            let vmem = vm.vmem();
            let line = vmem
                .by_pci(pci)
                .ok_or_else(|| format!("no pci={pci}:\n{vmem}"))?;
            (line.plugged_kib * 1024 == bytes && line.converged())
                .then(|| line.id.clone())
                .ok_or_else(|| line.to_string())
        },
    );
    eprintln!("[{pci}] listed at {bytes} after {took:.2?}");
    id
}

/// `device_del vmh`: refused by QEMU while memory is plugged; after requested-size 0 it
/// completes (DEVICE_DELETED) once the guest released the device.
fn device_del_after_unplug(vm: &mut Vm) {
    let refused = vm.qmp().execute(&qmp::device_del { id: "vmh".into() }, QMP);
    assert!(
        refused.is_err(),
        "device_del with memory plugged: {refused:?}"
    );
    resize(vm, "vmh", 0);
    vm.qmp()
        .execute(&qmp::device_del { id: "vmh".into() }, QMP)
        .unwrap_or_else(|e| panic!("device_del after unplug: {e}"));
    let mut deleted = false;
    let ((), took) = poll("DEVICE_DELETED vmh", HOTPLUG, POLL_EVERY, || {
        // Any command reads the events that arrived before its answer.
        let _ = vm.qmp().virtio_mem_devices(QMP);
        deleted |= vm.qmp().events().iter().any(|e| {
            matches!(e, qmp::Event::DEVICE_DELETED { data, .. } if data.device.as_deref() == Some("vmh"))
        });
        deleted.then_some(()).ok_or_else(|| "not yet".to_string())
    });
    eprintln!("[vmh] DEVICE_DELETED after {took:.2?}");
}

/// The suites' hot-add case on a spare root port: `device_add` with requested-size 1G
/// converges and `vmem` lists it with `pci=02:00.0`; 4G then 2G, size == requested each
/// time; `device_del` refused while plugged, completed after requested-size 0, and `vmem`
/// no longer lists it; a second `device_add` gets a new id; `check` ok throughout.
///
/// Runtime: about 1 s on the 2-core TCG development host.
#[test]
fn device_add_and_del_on_root_port() {
    let mut vm = boot(&root_port_machine());
    device_add(&mut vm, "1G");
    let first = wait_listed(&mut vm, "02:00.0", GIB);
    for size in [4 * GIB, 2 * GIB] {
        resize(&mut vm, "vmh", size);
    }
    check_ok(&mut vm, "with 2 GiB plugged in the hot-added device");
    device_del_after_unplug(&mut vm);
    let vmem = vm.vmem();
    assert!(vmem.by_pci("02:00.0").is_none(), "still listed:\n{vmem}");
    assert_eq!(vmem.devices.len(), 2, "{vmem}");
    check_ok(&mut vm, "after device_del");
    // Again: a new id, never the old one.
    device_add(&mut vm, "1G");
    let second = wait_listed(&mut vm, "02:00.0", GIB);
    assert_ne!(first, second, "device id reused");
    let vmem = vm.vmem();
    assert!(vmem.by_id(&first).is_none(), "{first} came back:\n{vmem}");
    resize(&mut vm, "vmh", 0);
    check_ok(&mut vm, "after the second hot-add");
    vm.poweroff_ok();
}
