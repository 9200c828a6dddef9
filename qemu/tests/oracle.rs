//! The stress oracle against a real disagreement, produced with fault injection on the
//! kernel as built (no second build).
//!
//! `inject reply replace nack plug` lets the device plug a run while the guest reads NACK, so
//! the guest holds nothing of it; the `plugged_size` audit would find the difference at the
//! next step by asking STATE, so `inject reply refuse busy state` keeps every STATE from
//! reaching the device (the guest sees BUSY and backs off, `state=busy reason=device_busy`).
//! While both are armed, QMP shows memory plugged that the guest never added: `vmem`'s
//! numbers, copied from the device configuration, still agree with QMP
//! ([`oracle::disagreement`] finds nothing), but the guest's own books — the sections of the
//! device region and `mem`'s Movable present — do not, and [`oracle::accounting`] must say so.
//! Once the faults are off, the audit adopts the run, the device converges, and the same
//! check must pass. About 20 s on this 2-core TCG host.

mod common;
use common::{boot, poll_until, qmp_dev, request, Vm, CMD};

use std::time::Duration;

use hotmem_qemu::guest;
use hotmem_qemu::stress::oracle;
use hotmem_qemu::{Machine, MIB};

/// For the device to plug the run the guest does not know about, and to converge later.
const SETTLE: Duration = Duration::from_secs(60);
const POLL_EVERY: Duration = Duration::from_millis(100);

/// `accounting` over what the guest prints now, against QMP now.
fn books(vm: &mut Vm) -> Option<String> {
    let d = qmp_dev(vm);
    let vmem = guest::vmem(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
    let sections = guest::sections(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
    let mem = guest::mem(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
    let ids = ["vm0".to_string()];
    let qmp = [d];
    let seen = oracle::disagreement(&ids, &qmp, &vmem, &qmp, &[0]).unwrap();
    eprintln!("vmem vs QMP: {seen:?}\nvmem:\n{vmem}");
    oracle::accounting(&ids, &qmp, &vmem, &sections, &mem, true).unwrap()
}

#[test]
fn oracle_catches_memory_the_device_plugged_behind_the_guest() {
    let mut vm = boot(&Machine::default());
    for spec in [
        "reply replace nack plug count=1",
        "reply refuse busy state count=100000",
    ] {
        let r = guest::inject_arm(vm.console(), spec, CMD).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("armed `{spec}`: {r}");
    }
    request(&mut vm, 512 * MIB);
    // The device plugged the first run; the guest, told NACK, asks STATE and is refused.
    let (d, took) = poll_until(
        "QMP size > 0 with the guest stuck busy",
        SETTLE,
        POLL_EVERY,
        || {
            let d = qmp_dev(&mut vm);
            let v = guest::vmem(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
            format!("size={} state={}", d.plugged_bytes, v.devices[0].state)
        },
        |s| !s.starts_with("size=0 ") && s.ends_with(" state=busy"),
    );
    eprintln!("after {took:.2?}: QMP {d}");
    // QMP stands still while STATE is refused.
    std::thread::sleep(Duration::from_secs(1));
    let caught = books(&mut vm).expect("the oracle must see the guest's books disagree");
    eprintln!("caught: {caught}");
    // The first book that disagrees is named: the guest's own accounting when it prints
    // one (`guest_plugged_kib`), else the present sections of the region.
    assert!(
        caught.contains("guest_plugged_kib=0 but QMP size is 524288 KiB")
            || (caught.contains("the sections of [0x") && caught.contains("hold 0 KiB present")),
        "{caught}"
    );
    // Faults off: the audit adopts the run, the device converges, the books agree.
    guest::inject_off(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
    poll_until(
        "QMP size == 512 MiB and vmem converged",
        SETTLE,
        POLL_EVERY,
        || {
            let d = qmp_dev(&mut vm);
            let v = guest::vmem(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
            format!(
                "size={} converged={}",
                d.plugged_bytes,
                v.devices[0].converged()
            )
        },
        |s| *s == format!("size={} converged=true", 512 * MIB),
    );
    assert_eq!(books(&mut vm), None);
    guest::check(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
}
