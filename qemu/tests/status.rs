//! The live `vmem` status and its completion signal on a booted guest, with QMP
//! (`query-memory-devices`) as the outside truth:
//! - `vmem` asked right after a `qom-set` never shows the old request as done: its
//!   `requested_kib` is the new request, and `state=ok` only with `plugged_kib` equal to it;
//! - `vmem wait` returns `state=ok` only once QMP shows size == requested (QMP is asked right
//!   after it returns), and `guest_plugged_kib` then equals the plugged size;
//! - `vmem state` agrees with the guest's view on plugged, unplugged and mixed ranges, and
//!   refuses ranges it cannot ask about.
//!
//! One QEMU runs at a time (tests/common); each test boots its own machine.

mod common;

use std::time::Duration;

use common::{boot, check_ok, qmp_dev, request, vmem_line, Vm, QMP};
use hotmem_qemu::guest::{self, VmemLine};
use hotmem_qemu::{Machine, VirtioMem, GIB, KIB, MIB};

/// What `vmem wait` is given (ms), and the console deadline around it.
const WAIT_MS: u64 = 60_000;
const WAIT: Duration = Duration::from_secs(90);

/// Sizes the resize tests walk through: plugs and unplugs, small and large.
const SIZES: [u64; 10] = [
    256 * MIB,
    GIB,
    512 * MIB,
    2 * GIB,
    128 * MIB,
    0,
    3 * GIB,
    GIB,
    64 * MIB,
    0,
];

/// `vmem wait vmem0`, which must not time out; its one line.
fn wait_settled(vm: &mut Vm) -> VmemLine {
    let (v, timed_out) = guest::vmem_wait(vm.console(), Some(0), WAIT_MS, WAIT)
        .unwrap_or_else(|e| panic!("vmem wait: {e}"));
    assert!(!timed_out, "vmem wait timed out:\n{v}");
    match v.devices.as_slice() {
        [l] => l.clone(),
        _ => panic!("vmem wait vmem0: want one line:\n{v}"),
    }
}

/// The state must be `ok` with everything the guest and the device hold equal to `bytes`.
#[track_caller]
fn assert_converged(line: &VmemLine, bytes: u64, when: &str) {
    let kib = bytes / KIB;
    assert_eq!(
        (line.state.as_str(), line.requested_kib, line.plugged_kib),
        ("ok", kib, kib),
        "{when}: `{line}`"
    );
    assert_eq!(line.pending_kib, 0, "{when}: `{line}`");
    assert_eq!(line.guest_plugged_kib, Some(kib), "{when}: `{line}`");
    assert_eq!(line.left_kib, Some(0), "{when}: `{line}`");
}

/// `vmem` polled right after each of 20 `qom-set`s: the record names the new request, and
/// `state=ok` only when it is plugged; then `vmem wait` and QMP agree. About 1 s (the boot included).
#[test]
fn vmem_right_after_qom_set_never_shows_the_old_request_done() {
    let mut vm = boot(&Machine::default());
    for (step, &bytes) in SIZES.iter().chain(SIZES.iter().rev()).enumerate() {
        request(&mut vm, bytes);
        // At once, and a second time while the pass may still run.
        for poll in 0..2 {
            let line = vmem_line(&mut vm);
            let when = format!("step {step} ({} MiB), poll {poll}", bytes >> 20);
            assert_eq!(line.requested_kib, bytes / KIB, "{when}: `{line}`");
            if line.state == "ok" {
                assert_eq!(line.plugged_kib, bytes / KIB, "{when}: ok but `{line}`");
                assert_eq!(line.pending_kib, 0, "{when}: ok but `{line}`");
            } else {
                assert_eq!(line.state, "busy", "{when}: `{line}`");
            }
        }
        let line = wait_settled(&mut vm);
        assert_converged(&line, bytes, &format!("vmem wait at step {step}"));
    }
    check_ok(&mut vm, "after the resizes");
}

/// `vmem wait` right after each `qom-set` returns `ok` only once QMP already shows
/// size == requested; a zero timeout on a large plug says `timeout` with `state=busy`.
/// About 1 s (the boot included).
#[test]
fn vmem_wait_returns_ok_only_once_qmp_shows_the_size() {
    let mut vm = boot(&Machine::default());
    for (step, &bytes) in SIZES.iter().enumerate() {
        request(&mut vm, bytes);
        let line = wait_settled(&mut vm);
        // QMP right after: the guest said ok, so the device must be there already.
        let dev = qmp_dev(&mut vm);
        assert_eq!(
            (dev.plugged_bytes, dev.requested_bytes),
            (bytes, bytes),
            "QMP right after `vmem wait` said `{line}` at step {step}"
        );
        assert_converged(&line, bytes, &format!("step {step}"));
    }
    // A zero timeout returns at once: busy with the timeout line, or already settled.
    request(&mut vm, 4 * GIB);
    let (v, timed_out) = guest::vmem_wait(vm.console(), None, 0, WAIT)
        .unwrap_or_else(|e| panic!("vmem wait 0: {e}"));
    let line = &v.devices[0];
    if timed_out {
        assert_eq!(line.state, "busy", "timed out with `{line}`");
    } else {
        assert_converged(line, 4 * GIB, "vmem wait 0 not timed out");
    }
    let line = wait_settled(&mut vm);
    assert_converged(&line, 4 * GIB, "after 4 GiB");
    // Unknown devices and bad numbers.
    for (cmd, want) in [
        ("vmem wait vmem3", "vmem wait: FAIL no_device"),
        ("vmem wait later", "vmem wait: FAIL bad_timeout"),
    ] {
        let out = vm.cmd(cmd);
        assert_eq!(out.lines, [want], "`{cmd}`");
    }
}

/// `vmem state` over plugged, unplugged and mixed ranges agrees with the guest, and the
/// refusals name their reason. About 0.5 s (the boot included).
#[test]
fn vmem_state_agrees_with_the_guest() {
    let m = Machine {
        virtio_mem: vec![VirtioMem::new(4 * GIB).block_size(2 * MIB)],
        ..Machine::default()
    };
    let mut vm = boot(&m);
    request(&mut vm, GIB);
    let line = wait_settled(&mut vm);
    assert_converged(&line, GIB, "after 1 GiB");
    let base = line.addr;
    let usable = line.usable_kib * KIB;
    for (off, size, want) in [
        (0, 2 * MIB, "plugged"),
        (0, GIB, "plugged"),
        (GIB - 2 * MIB, 2 * MIB, "plugged"),
        (GIB, 2 * MIB, "unplugged"),
        (GIB, usable - GIB, "unplugged"),
        (GIB - 2 * MIB, 4 * MIB, "mixed"),
        (0, usable, "mixed"),
    ] {
        let s = match guest::vmem_state(vm.console(), "vmem0", base + off, size / KIB, QMP) {
            Ok(guest::VmemState::Seen(s)) => s,
            other => panic!("vmem state +{off:#x} {size:#x}: {other:?}"),
        };
        assert_eq!(
            (s.device.as_str(), s.guest.as_str(), s.addr, s.size_kib),
            (want, want, base + off, size / KIB),
            "vmem state +{off:#x} {size:#x}: {s:?}"
        );
    }
    for (cmd, want) in [
        (
            format!("vmem state vmem0 {:#x} 2M", base + 4096),
            "vmem state: FAIL unaligned",
        ),
        (
            format!("vmem state vmem0 {:#x} 2M", base + usable),
            "vmem state: FAIL outside_usable",
        ),
        (
            format!("vmem state vmem0 {:#x} 0", base),
            "vmem state: FAIL empty",
        ),
        (
            format!("vmem state vmem1 {:#x} 2M", base),
            "vmem state: FAIL no_device",
        ),
    ] {
        let out = vm.cmd(&cmd);
        assert_eq!(out.lines, [want], "`{cmd}`");
    }
    check_ok(&mut vm, "after the state queries");
}
