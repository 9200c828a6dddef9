//! Probe (feature negotiation, config validation, failure paths) and config re-reads.

use super::fake::{probe_with, ready, ACPI_PXM, UNPLUGGED_INACCESSIBLE, VERSION_1};
use super::*;

#[test]
fn negotiation_accepts_unplugged_inaccessible() {
    let (dev, vm) = ready();
    let d = dev.borrow();
    assert_eq!(
        d.driver_features,
        ACPI_PXM | UNPLUGGED_INACCESSIBLE | VERSION_1
    );
    assert_eq!(
        d.status_log.first(),
        Some(&DeviceStatus::empty()),
        "starts with a reset"
    );
    assert_eq!(
        d.status,
        DeviceStatus::ACKNOWLEDGE
            | DeviceStatus::DRIVER
            | DeviceStatus::FEATURES_OK
            | DeviceStatus::DRIVER_OK
    );
    assert_eq!(d.queue.size as usize, QUEUE_SIZE);
    drop(d);
    assert!(vm.node_id_valid());
    assert_eq!(vm.config(), Ok(qemu_config()));
}

#[test]
fn features_ok_not_sticking_fails_probe() {
    let (dev, vm) = probe_with(&qemu_config(), |d| d.refuse_features = true);
    assert_eq!(vm.err(), Some(VirtioMemError::FeaturesNotAccepted));
    let d = dev.borrow();
    assert_eq!(d.status, DeviceStatus::FAILED);
    assert_eq!(
        d.status_log[d.status_log.len() - 2],
        DeviceStatus::empty(),
        "reset before FAILED"
    );
}

#[test]
fn probe_requires_version_1_and_memory_type() {
    let (_, vm) = probe_with(&qemu_config(), |d| {
        d.device_features = UNPLUGGED_INACCESSIBLE;
    });
    assert_eq!(vm.err(), Some(VirtioMemError::Version1NotOffered));
    let (dev, vm) = probe_with(&qemu_config(), |d| d.device_type = DeviceType::Block);
    assert_eq!(
        vm.err(),
        Some(VirtioMemError::WrongDeviceType(DeviceType::Block))
    );
    assert!(
        dev.borrow().status_log.is_empty(),
        "not our device: untouched"
    );
}

#[test]
fn without_acpi_pxm_node_id_is_ignored() {
    let (dev, vm) = probe_with(&qemu_config(), |d| {
        d.device_features = UNPLUGGED_INACCESSIBLE | VERSION_1;
    });
    let vm = vm.expect("probe");
    assert!(!vm.node_id_valid());
    assert_eq!(vm.config().map(|c| c.node_id), Ok(0));
    assert_eq!(
        dev.borrow().driver_features,
        UNPLUGGED_INACCESSIBLE | VERSION_1
    );
}

#[test]
fn invalid_config_fails_probe_and_disables_device() {
    let config = Config {
        block_size: 3 * MIB,
        ..qemu_config()
    };
    let (dev, vm) = probe_with(&config, |_| {});
    assert_eq!(vm.err(), Some(VirtioMemError::BadBlockSize(3 * MIB)));
    let d = dev.borrow();
    assert_eq!(d.status, DeviceStatus::FAILED);
    assert_eq!(
        d.queue.desc, 0,
        "the device no longer knows the freed queue"
    );
    assert!(!d
        .status_log
        .iter()
        .any(|s| s.contains(DeviceStatus::DRIVER_OK)));
}

#[test]
fn short_config_space_is_a_transport_error() {
    let (_, vm) = probe_with(&qemu_config(), |d| d.config.truncate(40));
    assert_eq!(
        vm.err(),
        Some(VirtioMemError::Transport(
            virtio_drivers::Error::ConfigSpaceTooSmall
        ))
    );
}

#[test]
fn queue_too_small_is_a_transport_error() {
    let (_, vm) = probe_with(&qemu_config(), |d| d.max_queue_size = 1);
    assert_eq!(
        vm.err(),
        Some(VirtioMemError::Transport(
            virtio_drivers::Error::InvalidParam
        ))
    );
}

#[test]
fn config_reread_sees_new_requested_size() {
    let (dev, vm) = ready();
    dev.borrow_mut().set_u64(48, 2 * GIB);
    assert_eq!(vm.config().map(|c| c.requested_size), Ok(2 * GIB));
}

#[test]
fn config_reread_retries_across_generation_change() {
    let (dev, vm) = ready();
    // The first read of the pass changes requested_size and bumps the generation.
    dev.borrow_mut().change_after_read = Some((48, 2 * GIB));
    let before = dev.borrow().generation;
    assert_eq!(vm.config().map(|c| c.requested_size), Ok(2 * GIB));
    assert_eq!(dev.borrow().generation, before + 1);
}

#[test]
fn config_generation_never_settling_is_an_error() {
    let (dev, vm) = ready();
    dev.borrow_mut().unstable = true;
    assert_eq!(vm.config(), Err(VirtioMemError::ConfigUnstable));
}

#[test]
fn config_reread_rejects_changed_region_and_bad_sizes() {
    let (dev, vm) = ready();
    dev.borrow_mut().set_u64(16, 0x1_0000_0000);
    assert_eq!(vm.config(), Err(VirtioMemError::ConfigChanged));
    dev.borrow_mut().set_u64(16, qemu_config().addr);
    dev.borrow_mut().set_u64(0, 4 * MIB);
    assert_eq!(vm.config(), Err(VirtioMemError::ConfigChanged));
    dev.borrow_mut().set_u64(0, 2 * MIB);
    dev.borrow_mut().set_u64(48, 3 * GIB); // requested > usable (2 GiB)
    assert_eq!(vm.config(), Err(VirtioMemError::RequestedTooLarge));
}
