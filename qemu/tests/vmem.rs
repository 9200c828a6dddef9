//! virtio-mem on a booted guest: QMP resizes the devices and the guest plugs, onlines
//! and reports the memory. QMP `query-memory-devices` is the outside truth; `vmem`, `mem` and
//! `check` are the guest's view, and every step checks that the two agree:
//! - QMP `size` reaches `requested-size` within [`RESIZE`];
//! - `vmem` has one line per device, matched to QMP's by `addr` == `memaddr`, with the same
//!   plugged, requested, block and region sizes and node, `pending_kib=0 state=ok reason=none`;
//! - `mem`: per node, zone Movable holds exactly what that node's devices plugged, all of it
//!   managed and free (nothing else uses it), zone Normal still holds the node's boot RAM, and
//!   what the plug cost in Normal (mem_map and friends) stays below Linux's 17 MiB per GiB;
//! - `check: ok`.
//!
//! Covered: 0 → 1G → 3G → 4G → 0 with a `memtest` through the plugged memory at 4G; block sizes
//! 1M, 2M, 128M and 1G; two devices on two NUMA nodes; `system_reset` with memory plugged;
//! rejected `qom-set`s; and a device that still has memory plugged when the kernel probes it
//! (QEMU cannot unplug at reset while a migration runs, so the test starts a throttled migration
//! to `/dev/null`, resets, and cancels the migration later).
//!
//! One QEMU runs at a time (tests/common); each test boots its own machine.

mod common;
use common::check_ok;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{boot, poll, Vm, CMD, QMP};
use hotmem_qemu::guest::{self, Mem, Vmem};
use hotmem_qemu::stress::Topology;
use hotmem_qemu::{Error, Machine, VirtioMem, VirtioMemInfo, GIB, KIB, MIB};
use qapi::qmp;

/// From `qom-set` to QMP size == requested, and from there to the guest showing it online.
const RESIZE: Duration = Duration::from_secs(30);
/// Between two polls of QMP or the shell.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// `memtest` of ~4.5 GiB under TCG on a shared host.
const MEMTEST: Duration = Duration::from_secs(240);
/// What `memtest` leaves free in Normal: the heap and the shell must still work during it.
const MEMTEST_HEADROOM_MIB: u64 = 32;
/// How far `free_kib` may drift across a `memtest` (pages the heap keeps).
const FREE_DRIFT_KIB: u64 = 256;
/// Linux 6.12 spends about 17 MiB of existing memory per GiB plugged (measured on the same QEMU);
/// we must spend less.
const LINUX_BOOKKEEPING_KIB_PER_GIB: u64 = 17 * 1024;

/// A booted machine and what its zone Normal managed at boot, per node.
struct Rig {
    vm: Vm,
    machine: Machine,
    boot_normal_managed_kib: BTreeMap<u64, u64>,
}

/// What the guest showed once it agreed with QMP.
struct Seen {
    vmem: Vmem,
    mem: Mem,
}

/// The NUMA nodes of `machine` and their boot RAM (node 0 with all of it without NUMA).
fn node_sizes(machine: &Machine) -> BTreeMap<u64, u64> {
    if machine.numa.is_empty() {
        BTreeMap::from([(0, machine.ram_bytes)])
    } else {
        (0u64..)
            .zip(machine.numa.iter().map(|n| n.size_bytes))
            .collect()
    }
}

/// The node a QMP device's memory belongs to.
fn qmp_node(dev: &VirtioMemInfo) -> u64 {
    u64::try_from(dev.node).unwrap_or_else(|_| panic!("QMP node {} of {dev:?}", dev.node))
}

impl Rig {
    fn boot(machine: Machine) -> Rig {
        let mut vm = boot(&machine);
        let mem = vm.mem();
        let boot_normal_managed_kib = node_sizes(&machine)
            .keys()
            .map(|&n| {
                let normal = mem
                    .zone(n, "Normal")
                    .unwrap_or_else(|| panic!("mem at boot: no node={n} zone=Normal"));
                (n, normal.managed_kib)
            })
            .collect();
        let mut rig = Rig {
            vm,
            machine,
            boot_normal_managed_kib,
        };
        // Nothing plugged at boot, and the guest says so.
        let devs = rig.qmp_devices();
        for d in &devs {
            assert_eq!(d.plugged_bytes, 0, "QMP size at boot: {d:?}");
        }
        rig.guest_agrees(&devs);
        rig
    }

    fn qmp_devices(&mut self) -> Vec<VirtioMemInfo> {
        let mut devs = self
            .vm
            .qmp()
            .virtio_mem_devices(QMP)
            .unwrap_or_else(|e| panic!("{e}"));
        devs.sort_by_key(|d| d.memaddr);
        assert_eq!(
            devs.len(),
            self.machine.virtio_mem.len(),
            "QMP virtio-mem devices: {devs:?}"
        );
        devs
    }

    /// Sets `requested-size` of each `(device index, bytes)`, waits for QMP size == requested on
    /// all of them, then for the guest to agree. Returns the QMP view.
    fn resize(&mut self, sizes: &[(usize, u64)]) -> (Vec<VirtioMemInfo>, Seen) {
        for &(i, bytes) in sizes {
            guest::resize(self.vm.qmp(), i, bytes, QMP).unwrap_or_else(|e| {
                panic!(
                    "qom-set {} requested-size {bytes}: {e}",
                    Machine::virtio_mem_id(i)
                )
            });
        }
        let devs = self.wait_qmp_sizes(sizes);
        let seen = self.guest_agrees(&devs);
        (devs, seen)
    }

    /// Polls QMP until each listed device has size == requested-size == the given bytes.
    fn wait_qmp_sizes(&mut self, sizes: &[(usize, u64)]) -> Vec<VirtioMemInfo> {
        let label: Vec<String> = sizes
            .iter()
            .map(|&(i, b)| format!("vm{i}={}MiB", b / MIB))
            .collect();
        let (devs, took) = poll(
            &format!("QMP size == requested ({})", label.join(" ")),
            RESIZE,
            POLL_EVERY,
            || {
                let devs = self.qmp_devices();
                for &(i, bytes) in sizes {
                    let id = Machine::virtio_mem_id(i);
                    let d = devs
                        .iter()
                        .find(|d| d.id.as_deref() == Some(id.as_str()))
                        .unwrap_or_else(|| panic!("QMP has no {id}: {devs:?}"));
                    assert_eq!(d.requested_bytes, bytes, "QMP requested-size of {id}");
                    if d.plugged_bytes != bytes {
                        return Err(format!("{d:?}"));
                    }
                }
                Ok(devs)
            },
        );
        eprintln!(
            "[{}] QMP size == requested after {took:.2?}",
            label.join(" ")
        );
        devs
    }

    /// Waits until `vmem` and `mem` show what QMP says (`devs`), then checks every field, the
    /// zones and `check: ok`.
    fn guest_agrees(&mut self, devs: &[VirtioMemInfo]) -> Seen {
        let nodes = node_sizes(&self.machine);
        let mut plugged_by_node: BTreeMap<u64, u64> = nodes.keys().map(|&n| (n, 0)).collect();
        for d in devs {
            *plugged_by_node.entry(qmp_node(d)).or_default() += d.plugged_bytes;
        }
        let vm = &mut self.vm;
        let (seen, took) = poll(
            "the guest's `vmem` and `mem` to agree with QMP",
            RESIZE,
            POLL_EVERY,
            || {
                let vmem = vm.vmem();
                let mem = vm.mem();
                let show = || format!("\nvmem:\n{vmem}\nmem:\n{mem}");
                for d in devs {
                    let line = vmem.by_addr(d.memaddr).ok_or_else(|| {
                        format!("no vmem line with addr={:#x}{}", d.memaddr, show())
                    })?;
                    let settled = line.plugged_kib == d.plugged_bytes / KIB
                        && line.pending_kib == 0
                        && line.state == "ok";
                    if !settled {
                        return Err(format!("{d:?}{}", show()));
                    }
                }
                for (&n, &bytes) in &plugged_by_node {
                    let movable = mem.zone(n, "Movable").map(|r| r.present_kib);
                    if movable != Some(bytes / KIB) {
                        return Err(format!(
                            "node {n}: want {} KiB Movable{}",
                            bytes / KIB,
                            show()
                        ));
                    }
                }
                Ok(Seen { vmem, mem })
            },
        );
        eprintln!("guest agrees with QMP {took:.2?} after QMP did");
        self.check_vmem(devs, &seen.vmem);
        self.check_mem(&plugged_by_node, &seen.mem);
        check_ok(&mut self.vm, "after the resize");
        seen
    }

    /// Every `vmem` field against QMP's view of the same device.
    fn check_vmem(&self, devs: &[VirtioMemInfo], vmem: &Vmem) {
        let all = vmem.to_string();
        assert_eq!(
            vmem.devices.len(),
            devs.len(),
            "vmem: one line per device:\n{all}"
        );
        let mut ids: Vec<&str> = vmem.devices.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        let want_ids: Vec<String> = (0..devs.len()).map(|i| format!("vmem{i}")).collect();
        assert_eq!(ids, want_ids, "vmem ids:\n{all}");
        for d in devs {
            let line = vmem
                .by_addr(d.memaddr)
                .unwrap_or_else(|| panic!("vmem: no addr={:#x}:\n{all}", d.memaddr));
            let want = [
                ("region_kib", line.region_kib, d.max_bytes / KIB),
                ("block_kib", line.block_kib, d.block_size_bytes / KIB),
                ("plugged_kib", line.plugged_kib, d.plugged_bytes / KIB),
                ("requested_kib", line.requested_kib, d.requested_bytes / KIB),
                ("pending_kib", line.pending_kib, 0),
                ("node", line.node, qmp_node(d)),
            ];
            for (key, seen, value) in want {
                assert_eq!(seen, value, "vmem `{key}` of `{line}` vs QMP {d:?}");
            }
            for (key, seen, value) in [
                ("state", &line.state, "ok"),
                ("reason", &line.reason, "none"),
            ] {
                assert!(seen == value, "vmem: want {key}={value} in `{line}`");
            }
            let usable = line.usable_kib;
            assert!(
                usable >= d.requested_bytes / KIB
                    && usable <= d.max_bytes / KIB
                    && usable % (d.block_size_bytes / KIB) == 0,
                "vmem: usable_kib must be whole blocks between requested and region: `{line}`"
            );
        }
    }

    /// Zones per node after plugging `plugged_by_node` bytes.
    fn check_mem(&self, plugged_by_node: &BTreeMap<u64, u64>, mem: &Mem) {
        let all = mem.to_string();
        let nodes = node_sizes(&self.machine);
        let mut bookkeeping_kib = 0;
        for (&n, &boot_bytes) in &nodes {
            let normal = mem
                .zone(n, "Normal")
                .unwrap_or_else(|| panic!("mem: no node={n} Normal:\n{all}"));
            assert_eq!(
                normal.present_kib,
                boot_bytes / KIB,
                "mem: Normal of node {n} must still be its boot RAM:\n{all}"
            );
            let boot_managed = self.boot_normal_managed_kib[&n];
            bookkeeping_kib += boot_managed.saturating_sub(normal.managed_kib);
            let movable = mem
                .zone(n, "Movable")
                .unwrap_or_else(|| panic!("mem: no node={n} Movable:\n{all}"));
            let plugged_kib = plugged_by_node.get(&n).copied().unwrap_or(0) / KIB;
            for (key, value) in [
                ("present_kib", movable.present_kib),
                ("managed_kib", movable.managed_kib),
                ("free_kib", movable.free_kib),
            ] {
                assert_eq!(
                    value, plugged_kib,
                    "mem: Movable `{key}` of node {n} must be the {plugged_kib} KiB its devices \
                     plugged, all of it free:\n{all}"
                );
            }
        }
        let plugged_kib: u64 = plugged_by_node.values().sum::<u64>() / KIB;
        let total = mem.total().unwrap_or_else(|e| panic!("{e}:\n{all}"));
        assert_eq!(
            total.present_kib,
            self.machine.boot_ram_bytes() / KIB + plugged_kib,
            "mem: total present_kib must be boot RAM + plugged:\n{all}"
        );
        let gib = plugged_kib.div_ceil(GIB / KIB);
        assert!(
            bookkeeping_kib <= gib * LINUX_BOOKKEEPING_KIB_PER_GIB,
            "mem: Normal managed_kib dropped by {bookkeeping_kib} KiB for {plugged_kib} KiB \
             plugged (Linux: {LINUX_BOOKKEEPING_KIB_PER_GIB} KiB per GiB):\n{all}"
        );
        eprintln!("plugged {plugged_kib} KiB; Normal managed {bookkeeping_kib} KiB below boot");
    }
}

fn total_free_kib(mem: &Mem) -> u64 {
    mem.total().unwrap_or_else(|e| panic!("{e}")).free_kib
}

/// `memtest` of all plugged memory plus most of Normal's free memory (memtest takes Movable
/// first), so it must use every plugged page; then `check: ok` and free memory back.
fn memtest_through_plugged(rig: &mut Rig, plugged_bytes: u64) {
    let mem = rig.vm.mem();
    let free_before = total_free_kib(&mem);
    let normal_free_mib: u64 = node_sizes(&rig.machine)
        .keys()
        .map(|&n| mem.zone(n, "Normal").expect("Normal").free_kib / 1024)
        .sum();
    let mib = plugged_bytes / MIB + normal_free_mib.saturating_sub(MEMTEST_HEADROOM_MIB);
    assert!(
        mib * 1024 <= free_before,
        "memtest {mib} MiB with {free_before} KiB free"
    );
    let cmd = format!("memtest {mib}");
    let started = std::time::Instant::now();
    let out = rig
        .vm
        .console()
        .command(&cmd, MEMTEST)
        .unwrap_or_else(|e| panic!("`{cmd}`: {e}"));
    eprintln!("`{cmd}` took {:.2?}", started.elapsed());
    assert_eq!(
        out.lines,
        [format!("memtest: ok mib={mib}")],
        "`{cmd}` with {plugged_bytes} bytes plugged and {free_before} KiB free"
    );
    check_ok(&mut rig.vm, "after memtest");
    let free_after = total_free_kib(&rig.vm.mem());
    assert!(
        free_after.abs_diff(free_before) <= FREE_DRIFT_KIB,
        "free_kib {free_before} before `{cmd}`, {free_after} after"
    );
}

/// The default machine (512M RAM, a 4G device with 2M blocks): 0 → 1G → 3G → 4G → 0, and at 4G
/// a `memtest` that needs every plugged page.
///
/// Runtime: about 34 s on the 2-core TCG development host.
#[test]
fn resize_0_1g_3g_4g_0() {
    let mut rig = Rig::boot(Machine::default());
    for size in [GIB, 3 * GIB, 4 * GIB] {
        rig.resize(&[(0, size)]);
    }
    memtest_through_plugged(&mut rig, 4 * GIB);
    // memtest left Movable free again and QMP unchanged.
    let devs = rig.qmp_devices();
    rig.guest_agrees(&devs);
    rig.resize(&[(0, 0)]);
    rig.vm.poweroff_ok();
}

/// One device of `block` blocks: plug `size`, then unplug to 0.
fn block_size_plug_unplug(block: u64, size: u64) {
    let m = Machine::default()
        .without_virtio_mem()
        .with_virtio_mem(VirtioMem::new(4 * GIB).block_size(block));
    let mut rig = Rig::boot(m);
    let devs = rig.qmp_devices();
    assert_eq!(devs[0].block_size_bytes, block, "QMP block-size");
    rig.resize(&[(0, size)]);
    rig.resize(&[(0, 0)]);
    rig.vm.poweroff_ok();
}

/// 1 MiB blocks: smaller than a subsection (the guest works in 2 MiB units).
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn block_size_1m() {
    block_size_plug_unplug(MIB, GIB);
}

/// 1 MiB blocks and an odd number of them requested: the guest plugs and unplugs in 2 MiB units
/// (as Linux does), so it stops 1 MiB short and says why (`reason=granularity`).
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn block_size_1m_odd_request_stops_at_2m_unit() {
    let m = Machine::default()
        .without_virtio_mem()
        .with_virtio_mem(VirtioMem::new(4 * GIB).block_size(MIB));
    let mut rig = Rig::boot(m);
    for (requested, plugged) in [(GIB + MIB, GIB), (3 * MIB, 2 * MIB)] {
        guest::resize(rig.vm.qmp(), 0, requested, QMP).unwrap_or_else(|e| panic!("{e}"));
        let vm = &mut rig.vm;
        let (line, _) = poll(
            &format!("`vmem` to settle at {plugged} of {requested} bytes"),
            RESIZE,
            POLL_EVERY,
            || {
                let vmem = vm.vmem();
                match vmem.devices.as_slice() {
                    // `vmem` is live: the device's size arrives before the pass ends, and
                    // the record says `busy` until it has.
                    [l] if l.requested_kib == requested / KIB
                        && l.plugged_kib == plugged / KIB
                        && l.state != "busy" =>
                    {
                        Ok(l.clone())
                    }
                    _ => Err(vmem.to_string()),
                }
            },
        );
        assert_eq!(line.pending_kib, MIB / KIB, "vmem: `{line}`");
        assert!(
            line.state == "ok" && line.reason == "granularity",
            "vmem: want state=ok reason=granularity in `{line}`"
        );
        let dev = rig.qmp_devices().remove(0);
        assert_eq!(
            (dev.plugged_bytes, dev.requested_bytes),
            (plugged, requested),
            "QMP size and requested-size"
        );
        let mem = rig.vm.mem();
        rig.check_mem(&BTreeMap::from([(0, plugged)]), &mem);
        check_ok(&mut rig.vm, "after an odd request");
    }
    rig.resize(&[(0, 0)]);
    rig.vm.poweroff_ok();
}

/// 2 MiB blocks: one subsection each.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn block_size_2m() {
    block_size_plug_unplug(2 * MIB, GIB);
}

/// 128 MiB blocks: one section each.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn block_size_128m() {
    block_size_plug_unplug(128 * MIB, GIB);
}

/// 1 GiB blocks: each spans 8 sections.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn block_size_1g() {
    block_size_plug_unplug(GIB, 2 * GIB);
}

/// The stress runner's two-node machine (two NUMA nodes of 512M, a 2G device on each): both
/// devices resized at once, grown and shrunk independently; each node's Movable zone holds its
/// own device's memory.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn two_devices_on_two_numa_nodes() {
    let mut rig = Rig::boot(Topology::TwoNode.machine());
    let devs = rig.qmp_devices();
    let nodes: Vec<i64> = devs.iter().map(|d| d.node).collect();
    assert_eq!(nodes, [0, 1], "QMP nodes of vm0, vm1 (by address)");
    rig.resize(&[(0, GIB), (1, 2 * GIB)]);
    rig.resize(&[(0, 2 * GIB), (1, 512 * MIB)]);
    rig.resize(&[(1, 0)]);
    rig.resize(&[(0, 0), (1, GIB)]);
    rig.resize(&[(1, 0)]);
    rig.vm.poweroff_ok();
}

/// `system_reset` with 3G plugged: QEMU unplugs everything and keeps requested-size; the guest
/// boots again, plugs 3G again, and then follows a new size.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn system_reset_with_memory_plugged() {
    let mut rig = Rig::boot(Machine::default());
    rig.resize(&[(0, 3 * GIB)]);
    rig.vm
        .qmp()
        .system_reset(QMP)
        .unwrap_or_else(|e| panic!("{e}"));
    rig.vm.wait_reboot("system_reset");
    // requested-size survived the reset, so the guest plugs 3G again by itself.
    let devs = rig.wait_qmp_sizes(&[(0, 3 * GIB)]);
    rig.guest_agrees(&devs);
    rig.resize(&[(0, GIB)]);
    rig.resize(&[(0, 2 * GIB)]);
    rig.vm.poweroff_ok();
}

/// `qom-set` of a size that is not a multiple of the block size, or above the region, fails in
/// QMP and changes nothing: QMP and `vmem` read as before, `check: ok`, and a valid resize after
/// them works.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn rejected_requests_change_nothing() {
    let mut rig = Rig::boot(Machine::default());
    let (before, seen) = rig.resize(&[(0, GIB)]);
    let bad = [
        (GIB + 4 * KIB, "multiple"),
        (GIB + MIB, "multiple"),
        (4 * GIB + 2 * MIB, "exceed"),
        (8 * GIB, "exceed"),
    ];
    for (bytes, why) in bad {
        match guest::resize(rig.vm.qmp(), 0, bytes, QMP) {
            Err(Error::Qmp { message, .. }) => assert!(
                message.contains(why),
                "qom-set requested-size {bytes}: want an error saying `{why}`, got `{message}`"
            ),
            other => panic!("qom-set requested-size {bytes}: want a QMP error, got {other:?}"),
        }
    }
    let after = rig.qmp_devices();
    assert_eq!(after, before, "QMP view after the rejected requests");
    // Give the guest a chance to (wrongly) react, then compare its view.
    std::thread::sleep(Duration::from_millis(200));
    let vmem = rig.vm.vmem();
    assert_eq!(
        vmem.to_string(),
        seen.vmem.to_string(),
        "vmem after the rejected requests"
    );
    let mem = rig.vm.mem();
    assert_eq!(
        mem.to_string(),
        seen.mem.to_string(),
        "mem after the rejected requests"
    );
    check_ok(&mut rig.vm, "after the rejected requests");
    rig.resize(&[(0, 2 * GIB)]);
    rig.resize(&[(0, 0)]);
    rig.vm.poweroff_ok();
}

/// A device that still has memory plugged when the kernel probes it. QEMU unplugs everything at
/// reset unless a migration is running (then it answers BUSY to every request, UNPLUG_ALL
/// included). So: plug 1G, start a migration throttled to 64 KiB/s into `/dev/null`, reset. The
/// rebooted guest finds 1G plugged, must not online it (it cannot know the contents) and reports
/// the device busy; a new requested size is recorded but not acted on. After `migrate_cancel`
/// the guest unplugs the leftover and plugs the requested size.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn leftover_plugged_at_probe() {
    let mut rig = Rig::boot(Machine::default());
    rig.resize(&[(0, GIB)]);
    let params = qmp::MigrateSetParameters {
        max_bandwidth: Some(64 * KIB),
        ..Default::default()
    };
    rig.vm
        .qmp()
        .execute(&qmp::migrate_set_parameters(params), QMP)
        .unwrap_or_else(|e| panic!("{e}"));
    rig.vm
        .qmp()
        .execute(
            &qmp::migrate {
                uri: Some("exec:cat > /dev/null".into()),
                channels: None,
                detach: None,
                resume: None,
            },
            QMP,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let status = |vm: &mut Vm| {
        vm.qmp()
            .execute(&qmp::query_migrate {}, QMP)
            .unwrap_or_else(|e| panic!("{e}"))
            .status
    };
    poll(
        "the migration to be active",
        CMD,
        POLL_EVERY,
        || match status(&mut rig.vm) {
            Some(qmp::MigrationStatus::active) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    rig.vm
        .qmp()
        .system_reset(QMP)
        .unwrap_or_else(|e| panic!("{e}"));
    rig.vm.wait_reboot("system_reset");
    let dev = rig.qmp_devices().remove(0);
    assert_eq!(
        (dev.plugged_bytes, dev.requested_bytes),
        (GIB, GIB),
        "QMP: the reset during migration must leave 1G plugged (else this test tests nothing)"
    );
    let busy = |rig: &mut Rig, requested: u64| {
        let (vmem, _) = poll(
            "`vmem` to show the device busy with the new request",
            RESIZE,
            POLL_EVERY,
            || {
                let vmem = rig.vm.vmem();
                match vmem.devices.as_slice() {
                    // `vmem` is live: right after the qom-set it is busy with reason=none
                    // (a change no pass has answered yet); wait for the pass that answers it
                    // and meets the device's BUSY.
                    [line]
                        if line.state == "busy"
                            && line.requested_kib == requested / KIB
                            && line.reason == "device_busy" =>
                    {
                        Ok(line.clone())
                    }
                    _ => Err(vmem.to_string()),
                }
            },
        );
        let want = [
            ("addr", vmem.addr, dev.memaddr),
            ("plugged_kib", vmem.plugged_kib, GIB / KIB),
            ("requested_kib", vmem.requested_kib, requested / KIB),
            (
                "pending_kib",
                vmem.pending_kib,
                requested.abs_diff(GIB) / KIB,
            ),
        ];
        for (key, seen, value) in want {
            assert_eq!(seen, value, "vmem `{key}` of `{vmem}`");
        }
        assert!(vmem.reason == "device_busy", "vmem: `{vmem}`");
        let mem = rig.vm.mem();
        let movable = mem.zone(0, "Movable").expect("mem: no node=0 Movable");
        assert_eq!(
            movable.present_kib, 0,
            "mem: leftover memory must not be onlined:\n{mem}"
        );
        check_ok(&mut rig.vm, "with the leftover");
    };
    busy(&mut rig, GIB);
    guest::resize(rig.vm.qmp(), 0, 2 * GIB, QMP).unwrap_or_else(|e| panic!("{e}"));
    busy(&mut rig, 2 * GIB);
    let dev = rig.qmp_devices().remove(0);
    assert_eq!(dev.plugged_bytes, GIB, "QMP size while the migration runs");

    rig.vm
        .qmp()
        .execute(&qmp::migrate_cancel {}, QMP)
        .unwrap_or_else(|e| panic!("{e}"));
    poll("the migration to end", CMD, POLL_EVERY, || {
        match status(&mut rig.vm) {
            Some(qmp::MigrationStatus::cancelled) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let devs = rig.wait_qmp_sizes(&[(0, 2 * GIB)]);
    rig.guest_agrees(&devs);
    rig.resize(&[(0, 0)]);
    rig.vm.poweroff_ok();
}
