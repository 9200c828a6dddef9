//! QMP against a running guest: the outside view of the virtio-mem device and the machine.

mod common;

use common::{boot, CMD, EXIT, QMP};
use hotmem_qemu::{Machine, GIB};

/// `qom-set vm0 requested-size 0` succeeds while the guest runs, and the guest stays alive.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn qom_set_requested_size_zero_keeps_guest_alive() {
    let mut vm = boot(&Machine::default());
    let dev = vm
        .qmp()
        .virtio_mem("vm0", QMP)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dev.max_bytes, 4 * GIB, "vm0 backend size");
    assert_eq!(dev.requested_bytes, 0, "vm0 requested-size at boot");
    assert_eq!(dev.plugged_bytes, 0, "vm0 plugged at boot");
    vm.qmp()
        .set_requested_size("vm0", 0, QMP)
        .unwrap_or_else(|e| panic!("{e}"));
    // The guest still answers (a panic would fail this at once).
    vm.cmd("cpus");
    let dev = vm
        .qmp()
        .virtio_mem("vm0", QMP)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((dev.requested_bytes, dev.plugged_bytes), (0, 0));
    vm.poweroff_ok();
}

/// QMP `system_reset` reboots the guest to a fresh prompt; QMP `quit` ends QEMU.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn system_reset_reboots_and_quit_exits() {
    let mut vm = boot(&Machine::default());
    vm.qmp().system_reset(QMP).unwrap_or_else(|e| panic!("{e}"));
    vm.console()
        .wait_for_prompt(common::BOOT)
        .unwrap_or_else(|e| panic!("no prompt after system_reset: {e}"));
    vm.console()
        .command("cpus", CMD)
        .unwrap_or_else(|e| panic!("shell after reset: {e}"));
    vm.qmp().quit(QMP).unwrap_or_else(|e| panic!("{e}"));
    vm.wait_exit(EXIT)
        .unwrap_or_else(|e| panic!("QEMU did not exit after quit: {e}"));
}
