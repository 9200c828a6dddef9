//! The case shapes VMM test suites run against virtio-mem, on our kernel:
//! - hotplug: `device_add` of a virtio-mem on a PCIe root port at run time, requested 4 GiB then
//!   2 GiB with QMP `size` == requested each time; `device_del` refused (a QMP error) while memory
//!   is plugged, accepted once requested-size is 0 and the guest unplugged it, then
//!   `DEVICE_DELETED` and the guest's `vmem` without the device;
//! - NUMA: two nodes with one 8 GiB device each, resized in lockstep through "4G 8G 0" (device
//!   0) and "1G 8G 0" (device 1), once with a `system_reset` after the 8G step (QEMU unplugs
//!   everything; the rebooted guest plugs the requests again) and once with a save to a file and
//!   a restore there (`stop`, `migrate file:…`, a second QEMU with the same devices on its
//!   command line and `-incoming defer`, `migrate-incoming`, `cont`), the hog running throughout
//!   (started again after the reset) with 0 errors.
//!
//! Each NUMA case runs in two placements: [`Placement::RootPorts`], the suites' shape (device 0
//! cold-plugged behind a root port, device 1 hot-added with `device_add` on a second one), and
//! [`Placement::Bus0`] (both cold-plugged on `pcie.0`, no root port). After every step QMP is the
//! outside truth and the guest must agree: `size` == `requested-size` for every device, and
//! `vmem`'s line of that device (matched by `addr` == `memaddr`) converged with the same
//! plugged and requested sizes; `check: ok` at the end.
//!
//! The devices' backends are `memory-backend-ram,reserve=off`: 17 GiB of guest memory costs the
//! host only what the guest touches (its mem_map for the plugged memory and the hog's pages).
//!
//! One QEMU runs at a time (tests/common); each test boots its own machine.

mod common;

use std::time::Duration;

use common::{boot, check_ok, poll, Vm, CMD, QMP};
use hotmem_qemu::guest;
use hotmem_qemu::{Error, Machine, Qemu, RootPort, VirtioMem, GIB, KIB, MIB};

/// From a request to QMP size == requested for every device (8 GiB plugs, and unplugs that
/// migrate the hog, under TCG on a shared host).
const RESIZE: Duration = Duration::from_secs(90);
/// From QMP's size to the guest's `vmem` showing it converged.
const SETTLE: Duration = Duration::from_secs(30);
/// From the prompt (or a `device_add`) to the guest listing the device in `vmem`.
const SEE_DEVICE: Duration = Duration::from_secs(10);
/// The `DEVICE_DELETED` event after an accepted `device_del`.
const DELETED: Duration = Duration::from_secs(30);
/// Saving (or restoring) the VM to (from) a file.
const MIGRATE: Duration = Duration::from_secs(120);
/// The hog's first verify round.
const HOG_ROUND: Duration = Duration::from_secs(60);
/// Between two polls of QMP or the shell.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// The hog's size: it moves between zones on every unplug, so keep it small.
const HOG_MIB: u64 = 64;

/// Where the two devices of a NUMA case sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Both cold-plugged on `pcie.0`.
    Bus0,
    /// Device 0 cold-plugged behind root port `rp1`, device 1 hot-added behind `rp2`.
    RootPorts,
}

/// What happens between the 8G step and the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Between {
    /// QMP `system_reset`.
    Reset,
    /// Save to a file, restore into a second QEMU.
    SaveRestore,
}

/// Two 512 MiB NUMA nodes with one CPU and one 8 GiB device each.
fn numa_machine(placement: Placement) -> Machine {
    let base = Machine::default()
        .smp(2)
        .numa_nodes(&[512 * MIB, 512 * MIB])
        .without_virtio_mem();
    let dev = |node| VirtioMem::new(8 * GIB).node(node).no_reserve();
    match placement {
        Placement::Bus0 => base.with_virtio_mem(dev(0)).with_virtio_mem(dev(1)),
        Placement::RootPorts => base
            .with_root_port(RootPort::new("rp1", 1, 1))
            .with_root_port(RootPort::new("rp2", 2, 2))
            .with_virtio_mem(dev(0).bus("rp1"))
            .with_virtio_mem(dev(1).bus("rp2").hot()),
    }
}

/// QMP `device_add` of every hot device of `machine`.
fn add_hot_devices(vm: &mut Vm, machine: &Machine) {
    for (i, d) in machine.virtio_mem.iter().enumerate() {
        if d.hot {
            vm.qmp()
                .device_add(machine, i, QMP)
                .unwrap_or_else(|e| panic!("device_add vm{i}: {e}"));
        }
    }
}

/// Waits until the guest's `vmem` lists a device at each QMP `memaddr` of `ids`.
fn wait_guest_sees(vm: &mut Vm, ids: &[String]) {
    let qmp_devs = vm
        .qmp()
        .virtio_mem_in_order(ids, QMP)
        .unwrap_or_else(|e| panic!("query-memory-devices: {e}"));
    poll(
        "the guest to list every device in `vmem`",
        SEE_DEVICE,
        POLL_EVERY,
        || {
            let shown = guest::vmem_if_ready(vm.console(), CMD)
                .unwrap_or_else(|e| panic!("shell command `vmem`: {e}"));
            match shown {
                Some(v) if qmp_devs.iter().all(|d| v.by_addr(d.memaddr).is_some()) => Ok(()),
                Some(v) => Err(format!("`vmem`:\n{v}\nQMP: {qmp_devs:?}")),
                None => Err(format!("`{}`; QMP: {qmp_devs:?}", guest::NO_DEVICE)),
            }
        },
    );
}

/// Asks device `vm<i>` for `targets[i]` bytes (all at once), waits for QMP size == requested for
/// all, then for the guest's `vmem` to agree; `step` names the step in failures.
fn resize_all(vm: &mut Vm, targets: &[u64], step: &str) {
    let ids: Vec<String> = (0..targets.len()).map(Machine::virtio_mem_id).collect();
    for (i, &bytes) in targets.iter().enumerate() {
        guest::resize(vm.qmp(), i, bytes, QMP)
            .unwrap_or_else(|e| panic!("{step}: qom-set vm{i} requested-size {bytes}: {e}"));
    }
    agree(vm, &ids, targets, step);
}

/// Waits for QMP size == `targets[i]` == requested-size of each device `ids[i]`, then for the
/// guest's `vmem` to show each converged with the same sizes.
fn agree(vm: &mut Vm, ids: &[String], targets: &[u64], step: &str) {
    let (devs, took) = poll(
        &format!("{step}: QMP size == requested"),
        RESIZE,
        POLL_EVERY,
        || {
            let devs = vm
                .qmp()
                .virtio_mem_in_order(ids, QMP)
                .unwrap_or_else(|e| panic!("{step}: query-memory-devices: {e}"));
            let done = devs
                .iter()
                .zip(targets)
                .all(|(d, &t)| d.requested_bytes == t && d.plugged_bytes == t);
            if done {
                Ok(devs)
            } else {
                Err(format!("{devs:?}, want {targets:?}"))
            }
        },
    );
    poll(
        &format!("{step}: the guest's `vmem` agrees with QMP"),
        SETTLE,
        POLL_EVERY,
        || {
            let v = vm.vmem();
            for d in &devs {
                let Some(line) = v.by_addr(d.memaddr) else {
                    return Err(format!("no line at {:#x}:\n{v}", d.memaddr));
                };
                if !line.converged()
                    || line.plugged_kib * KIB != d.plugged_bytes
                    || line.requested_kib * KIB != d.requested_bytes
                {
                    return Err(format!("`{line}` vs QMP {d:?}"));
                }
            }
            Ok(())
        },
    );
    eprintln!("{step}: {targets:?} in {took:.2?}");
}

/// Starts the hog and waits for its first clean verify round.
fn start_hog(vm: &mut Vm) {
    guest::hog_start(vm.console(), HOG_MIB, CMD).unwrap_or_else(|e| panic!("`hog`: {e}"));
    guest::wait_hog(
        vm.console(),
        "the hog's first round",
        HOG_ROUND,
        POLL_EVERY,
        |s| s.rounds >= 1,
    )
    .unwrap_or_else(|e| panic!("hog: {e}"));
}

/// `hog status` must show no errors.
fn hog_clean(vm: &mut Vm, when: &str) {
    guest::hog_clean(vm.console(), CMD).unwrap_or_else(|e| panic!("hog {when}: {e}"));
}

/// Saves the running VM to a file and restores it into a second QEMU of `machine` with every
/// device on its command line and `-incoming defer`; the first QEMU is gone afterwards. Returns
/// once the restored guest answers at a fresh prompt.
fn save_and_restore(vm: &mut Vm, machine: &Machine) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let uri = format!("file:{}", dir.path().join("vm.state").display());
    let qmp = vm.qmp();
    qmp.stop(QMP).unwrap_or_else(|e| panic!("stop: {e}"));
    qmp.migrate(&uri, QMP)
        .unwrap_or_else(|e| panic!("migrate {uri}: {e}"));
    qmp.wait_migration(MIGRATE)
        .unwrap_or_else(|e| panic!("saving to {uri}: {e}"));
    let saved = std::fs::metadata(dir.path().join("vm.state")).map_or(0, |m| m.len());
    eprintln!("saved {} MiB to {uri}", saved / MIB);

    let target = machine.clone().all_cold().incoming_defer();
    // Replacing the Qemu kills the first one (it is stopped and saved) and keeps the one-QEMU
    // lock the Vm holds.
    vm.qemu = Qemu::launch(&target).unwrap_or_else(|e| panic!("launching the restore target: {e}"));
    let qmp = vm.qmp();
    qmp.migrate_incoming(&uri, QMP)
        .unwrap_or_else(|e| panic!("migrate-incoming {uri}: {e}"));
    qmp.wait_migration(MIGRATE)
        .unwrap_or_else(|e| panic!("restoring from {uri}: {e}"));
    qmp.cont(QMP).unwrap_or_else(|e| panic!("cont: {e}"));
    // The restored guest printed nothing on this console yet: an empty line gets a prompt.
    let console = vm.console();
    console
        .send(b"\r")
        .unwrap_or_else(|e| panic!("console: {e}"));
    console
        .wait_for_prompt(CMD)
        .unwrap_or_else(|e| panic!("no prompt after the restore: {e}"));
}

/// The NUMA case: "4G 8G 0" and "1G 8G 0" with `between` after the 8G step, the hog running.
fn numa_case(placement: Placement, between: Between) {
    let machine = numa_machine(placement);
    let ids = [Machine::virtio_mem_id(0), Machine::virtio_mem_id(1)];
    let mut vm = boot(&machine);
    add_hot_devices(&mut vm, &machine);
    wait_guest_sees(&mut vm, &ids);
    start_hog(&mut vm);

    resize_all(&mut vm, &[4 * GIB, GIB], "step 1");
    hog_clean(&mut vm, "after step 1");
    resize_all(&mut vm, &[8 * GIB, 8 * GIB], "step 2");
    hog_clean(&mut vm, "after step 2");

    match between {
        Between::Reset => {
            vm.qmp()
                .system_reset(QMP)
                .unwrap_or_else(|e| panic!("system_reset: {e}"));
            vm.wait_reboot("system_reset");
            // QEMU unplugged everything; the requests stay, and the rebooted guest plugs them.
            agree(&mut vm, &ids, &[8 * GIB, 8 * GIB], "after the reset");
            start_hog(&mut vm);
        }
        Between::SaveRestore => {
            save_and_restore(&mut vm, &machine);
            agree(&mut vm, &ids, &[8 * GIB, 8 * GIB], "after the restore");
            hog_clean(&mut vm, "after the restore");
        }
    }

    resize_all(&mut vm, &[0, 0], "step 3");
    guest::hog_stop(vm.console(), CMD).unwrap_or_else(|e| panic!("hog stop: {e}"));
    check_ok(&mut vm, "at the end");
    vm.poweroff_ok();
}

/// The suites' hotplug case: `device_add` on a root port, 4G then 2G, `device_del` refused while
/// plugged and completed after requested-size 0. About 10 s.
#[test]
fn device_add_on_a_root_port_resize_and_device_del() {
    let machine = Machine::default()
        .without_virtio_mem()
        .with_root_port(RootPort::new("rp1", 1, 1))
        .with_virtio_mem(VirtioMem::new(4 * GIB).bus("rp1").hot());
    let id = Machine::virtio_mem_id(0);
    let mut vm = boot(&machine);
    add_hot_devices(&mut vm, &machine);
    wait_guest_sees(&mut vm, std::slice::from_ref(&id));

    resize_all(&mut vm, &[4 * GIB], "4G");
    resize_all(&mut vm, &[2 * GIB], "2G");
    match vm.qmp().device_del(&id, QMP) {
        Err(Error::Qmp { message, .. }) => {
            assert!(
                message.contains("plugged"),
                "device_del refused for another reason: {message}"
            )
        }
        other => panic!("device_del with 2 GiB plugged must be refused, got {other:?}"),
    }
    resize_all(&mut vm, &[0], "0");
    vm.qmp()
        .device_del(&id, QMP)
        .unwrap_or_else(|e| panic!("device_del with nothing plugged: {e}"));
    vm.qmp()
        .wait_device_deleted(&id, DELETED)
        .unwrap_or_else(|e| panic!("device_del: {e}"));
    let left = vm
        .qmp()
        .virtio_mem_devices(QMP)
        .unwrap_or_else(|e| panic!("query-memory-devices: {e}"));
    assert!(left.is_empty(), "QMP still lists {left:?}");
    poll(
        "the guest to drop the device",
        SEE_DEVICE,
        POLL_EVERY,
        || match guest::vmem_if_ready(vm.console(), CMD)
            .unwrap_or_else(|e| panic!("shell command `vmem`: {e}"))
        {
            Some(v) if !v.devices.is_empty() => Err(v.to_string()),
            _ => Ok(()),
        },
    );
    check_ok(&mut vm, "after device_del");
    vm.poweroff_ok();
}

/// Two nodes, device 0 behind a root port, device 1 hot-added on another; a `system_reset`
/// between "4G/1G, 8G/8G" and "0/0". About 10 s.
#[test]
fn numa_root_ports_with_a_reset_between() {
    numa_case(Placement::RootPorts, Between::Reset);
}

/// Two nodes, device 0 behind a root port, device 1 hot-added on another; a save to a file and
/// a restore between "4G/1G, 8G/8G" and "0/0". About 10 s.
#[test]
fn numa_root_ports_with_a_save_and_restore_between() {
    numa_case(Placement::RootPorts, Between::SaveRestore);
}

/// Two nodes, both devices on `pcie.0`; a `system_reset` between the steps. About 8 s.
#[test]
fn numa_bus0_with_a_reset_between() {
    numa_case(Placement::Bus0, Between::Reset);
}

/// Two nodes, both devices on `pcie.0`; a save to a file (about 250 MiB) and a restore between
/// the steps. About 8 s.
#[test]
fn numa_bus0_with_a_save_and_restore_between() {
    numa_case(Placement::Bus0, Between::SaveRestore);
}
