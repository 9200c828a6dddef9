//! virtio-mem devices that cannot give what is asked: a host that cannot back a big request,
//! and devices the kernel cannot drive. QMP `query-memory-devices` is the outside truth;
//! `vmem`, `mem`, `check` and the console are the guest's view.
//!
//! Covered:
//! - a `prealloc=on` device on a `memory-backend-file,share=on` whose file lives on a 1100 MiB
//!   tmpfs: QEMU answers BUSY to any PLUG whose range it cannot preallocate. Asked for 3 GiB,
//!   the guest plugs about what the tmpfs holds (it halves a run on BUSY), then says
//!   `state=stalled reason=device_busy`, and stays healthy; a smaller request afterwards
//!   converges. The tmpfs is mounted in QEMU's own mount namespace (`unshare -m`, which needs
//!   root): it disappears with QEMU. Without root or `unshare` the test fails and says so.
//! - a machine with three devices: one whose region starts at an odd MiB (1 MiB blocks,
//!   `memaddr` aligned to the block but not to 2 MiB), one on NUMA node 16 (the kernel's
//!   memory model holds nodes 0..15), and a valid one. `vmem` shows the first two
//!   `state=broken` with `reason=unaligned_region` and `reason=unsupported_node` from the
//!   prompt on, requests to them change nothing (no plug/unplug loop), and the valid one plugs
//!   and unplugs normally.
//!
//! One QEMU runs at a time (tests/common); each test boots its own machine.

mod common;
use common::check_ok;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{boot, boot_with, poll, Vm, QMP};
use hotmem_qemu::guest::{self, VmemLine};
use hotmem_qemu::{Backend, LaunchOptions, Machine, VirtioMem, VirtioMemInfo, GIB, KIB, MIB};

/// From `qom-set` to the guest showing what the test waits for (a resize of up to 3 GiB, or
/// a stall after the halvings: at most 2.5 s here, so a host 3x slower fits with room).
const RESIZE: Duration = Duration::from_secs(90);
/// Between two polls of QMP and the shell.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// The tmpfs under the prealloc'd backend.
const TMPFS_MIB: u64 = 1100;
/// How far below the tmpfs size the guest may stop: a few 2 MiB units (tmpfs keeps a few
/// pages of its own; the last halvings stop at one unit).
const TMPFS_SLACK_MIB: u64 = 8;

/// The QMP device with id `vmN`.
fn qmp_dev(vm: &mut Vm, index: usize) -> VirtioMemInfo {
    let id = Machine::virtio_mem_id(index);
    vm.qmp()
        .virtio_mem(&id, QMP)
        .unwrap_or_else(|e| panic!("QMP {id}: {e}"))
}

/// The `vmem` line of the device QMP knows as `dev`.
fn vmem_of(vm: &mut Vm, dev: &VirtioMemInfo) -> VmemLine {
    let vmem = vm.vmem();
    vmem.by_addr(dev.memaddr)
        .unwrap_or_else(|| panic!("vmem has no line with addr={:#x}:\n{vmem}", dev.memaddr))
        .clone()
}

fn resize(vm: &mut Vm, index: usize, bytes: u64) {
    guest::resize(vm.qmp(), index, bytes, QMP)
        .unwrap_or_else(|e| panic!("qom-set vm{index} requested-size {bytes}: {e}"));
}

/// Waits until device `index` converged at `bytes`: QMP size == requested, `vmem` agrees
/// with `state=ok`.
fn wait_converged(vm: &mut Vm, index: usize, bytes: u64) {
    poll(
        &format!("vm{index} to converge at {} MiB", bytes / MIB),
        RESIZE,
        POLL_EVERY,
        || {
            let dev = qmp_dev(vm, index);
            let line = vmem_of(vm, &dev);
            if dev.plugged_bytes == bytes && line.plugged_kib == bytes / KIB && line.converged() {
                Ok(())
            } else {
                Err(format!("QMP {dev:?}, vmem `{line}`"))
            }
        },
    );
}

/// Fails (never skips) unless this process can mount a tmpfs in a new mount namespace.
fn require_unshare_and_root(dir: &Path) {
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1M none '{}' && umount '{}'",
            dir.display(),
            dir.display()
        ))
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "this test mounts a size-limited tmpfs in QEMU's own mount namespace and needs \
             root for it: `unshare -m sh -c 'mount -t tmpfs …'` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "this test runs QEMU under `unshare -m` (util-linux) to mount a size-limited \
             tmpfs, but `unshare` cannot be started: {e}"
        ),
    }
}

/// A host that can back 1100 MiB of a 4 GiB device: asked for 3 GiB, the guest plugs
/// about 1100 MiB, stalls with `device_busy`, stays healthy, and converges on a smaller
/// request. 4.6 s here (2.3 s from the request to the stall: the halvings, while QEMU
/// preallocates up to 1.1 GB per refused request; then a 2 s hold and two resizes down).
#[test]
fn prealloc_on_a_small_tmpfs_plugs_what_fits_and_says_device_busy() {
    let dir = tempfile::Builder::new()
        .prefix("hotmem-tmpfs-")
        .tempdir()
        .expect("a temporary directory");
    require_unshare_and_root(dir.path());
    let machine = Machine::default()
        .ram(GIB)
        .without_virtio_mem()
        .with_virtio_mem(
            VirtioMem::new(4 * GIB)
                .backend(Backend::File {
                    path: dir.path().join("backing"),
                    share: true,
                })
                .prealloc(),
        );
    // QEMU in its own mount namespace, over a tmpfs only it sees; both end with QEMU.
    let mount = format!(
        "mount -t tmpfs -o size={TMPFS_MIB}M none '{}' && exec \"$@\"",
        dir.path().display()
    );
    let options = LaunchOptions {
        wrapper: ["unshare", "-m", "sh", "-c", &mount, "sh"]
            .map(String::from)
            .to_vec(),
        ..LaunchOptions::default()
    };
    let mut vm = boot_with(&machine, &options);

    resize(&mut vm, 0, 3 * GIB);
    let (line, took) = poll(
        "`vmem` to say state=stalled reason=device_busy",
        RESIZE,
        POLL_EVERY,
        || {
            let dev = qmp_dev(&mut vm, 0);
            let line = vmem_of(&mut vm, &dev);
            let stalled = line.state == "stalled" && line.reason == "device_busy";
            if stalled && line.plugged_kib == dev.plugged_bytes / KIB {
                Ok(line)
            } else {
                Err(format!("QMP {dev:?}, vmem `{line}`"))
            }
        },
    );
    eprintln!("stalled after {took:.2?}: {line}");
    let plugged_mib = line.plugged_kib / 1024;
    assert!(
        (TMPFS_MIB - TMPFS_SLACK_MIB..=TMPFS_MIB).contains(&plugged_mib),
        "the guest must plug about what the {TMPFS_MIB} MiB tmpfs holds: `{line}`"
    );
    assert_eq!(line.requested_kib, 3 * GIB / KIB, "vmem: `{line}`");
    // The stall holds (retries stay BUSY), the kernel is healthy, everything plugged is
    // online.
    std::thread::sleep(Duration::from_secs(2));
    let dev = qmp_dev(&mut vm, 0);
    assert_eq!(dev.plugged_bytes / KIB, line.plugged_kib, "QMP {dev:?}");
    let mem = vm.mem();
    let movable = mem.zone(0, "Movable").expect("mem: no node=0 Movable");
    assert_eq!(movable.present_kib, line.plugged_kib, "mem:\n{mem}");
    check_ok(&mut vm, "stalled on device_busy");

    // A request the host can back converges.
    resize(&mut vm, 0, GIB);
    wait_converged(&mut vm, 0, GIB);
    check_ok(&mut vm, "after converging at 1 GiB");
    resize(&mut vm, 0, 0);
    wait_converged(&mut vm, 0, 0);
    vm.poweroff_ok();
}

/// A region at an odd MiB and a node beyond the memory model: both `broken` with their
/// reason from the prompt on, no request changes that; a valid device next to them plugs and
/// unplugs. 1.5 s here.
#[test]
fn unaligned_region_and_unsupported_node_are_broken_and_others_work() {
    const ODD_MIB_ADDR: u64 = 0x8010_0000;
    const NODES: u32 = 17;
    let mut machine = Machine::default()
        .numa_nodes(&[GIB])
        .without_virtio_mem()
        .with_virtio_mem(
            VirtioMem::new(GIB)
                .backend(Backend::Memfd)
                .block_size(MIB)
                .memaddr(ODD_MIB_ADDR),
        )
        .with_virtio_mem(VirtioMem::new(GIB).node(NODES - 1))
        .with_virtio_mem(VirtioMem::new(GIB));
    // Nodes 1..16 without memory or CPUs (QEMU allows them; the device tree names none).
    for n in 1..NODES {
        machine = machine
            .extra_arg("-numa")
            .extra_arg(&format!("node,nodeid={n}"));
    }
    let mut vm = boot(&machine);

    let devs: Vec<VirtioMemInfo> = (0..3).map(|i| qmp_dev(&mut vm, i)).collect();
    assert_eq!(devs[0].memaddr, ODD_MIB_ADDR, "QMP {:?}", devs[0]);
    let want = [
        (0, "unaligned_region", 0),
        (1, "unsupported_node", u64::from(NODES - 1)),
    ];
    let check_broken = |vm: &mut Vm, when: &str| {
        for &(i, reason, node) in &want {
            let line = vmem_of(vm, &devs[i]);
            assert_eq!(
                (line.state.as_str(), line.reason.as_str(), line.node),
                ("broken", reason, node),
                "vmem {when}: `{line}`"
            );
            assert_eq!(line.plugged_kib, 0, "vmem {when}: `{line}`");
            let dev = qmp_dev(vm, i);
            assert_eq!(dev.plugged_bytes, 0, "QMP {when}: {dev:?}");
        }
    };
    check_broken(&mut vm, "at the prompt");
    let valid = vmem_of(&mut vm, &devs[2]);
    assert_eq!(valid.state, "ok", "vmem: `{valid}`");

    // Requests to the broken devices change nothing; the valid one plugs.
    let before = vm.console().transcript().len();
    resize(&mut vm, 0, 64 * MIB);
    resize(&mut vm, 1, 64 * MIB);
    resize(&mut vm, 2, 512 * MIB);
    wait_converged(&mut vm, 2, 512 * MIB);
    std::thread::sleep(Duration::from_secs(1));
    check_broken(&mut vm, "after requests");
    let log = vm.console().text_since(before);
    assert!(
        !log.contains("unplugging it again"),
        "a broken device must not loop plug/fail/unplug:\n{log}"
    );
    let mem = vm.mem();
    let movable: u64 = (0..u64::from(NODES))
        .filter_map(|n| mem.zone(n, "Movable").map(|z| z.present_kib))
        .sum();
    assert_eq!(
        movable,
        512 * MIB / KIB,
        "only the valid device plugged:\n{mem}"
    );
    check_ok(&mut vm, "with two broken devices");

    resize(&mut vm, 2, 0);
    wait_converged(&mut vm, 2, 0);
    check_broken(&mut vm, "at the end");
    check_ok(&mut vm, "at the end");
    vm.poweroff_ok();
}
