//! Interrupts of virtio-mem: MSI-X through the GICv3 ITS (LPIs) or GICv2m (SPIs), INTx when
//! the board has neither (`gic-version=3,its=off`), as `irqs` shows them.
//!
//! Each test boots the default machine (one 4 GiB virtio-mem device, 00:01.0) on one GIC
//! setup, reads `irqs`, plugs 1 GiB and unplugs it again through QMP, waits until QMP's size
//! equals the request and `vmem` is settled, and reads `irqs` after each step:
//! - on MSI-X, the device's config vector (0) and queue vector (1) have the expected kind and
//!   INTIDs, both counts rise with each resize (the host's request is a configuration change;
//!   each PLUG/UNPLUG answer is a queue interrupt), and its INTx line's count stays 0 (MSI-X
//!   turns INTx off; the line is enabled anyway, so a stray one would be counted);
//! - on INTx, there are no vector sources and the line's count rises.
//!
//! The kernel's `irqs` records are `irq source=NAME kind=KIND intid=N count=N vector=V|-`.
//! Breaking the ITS DeviceID (requester ID + 1) makes `its_lpis_count_resizes` time out
//! waiting for the resize: the host's configuration change never reaches the guest.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{boot, poll, qmp_dev, request, Vm};
use hotmem_qemu::{Gic, Machine, Record, GIB};

const RESIZE: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(20);

/// `irqs` by source name.
fn irqs(vm: &mut Vm) -> BTreeMap<String, Record> {
    let out = vm.cmd("irqs");
    out.lines
        .iter()
        .map(|l| {
            let r =
                Record::parse_after(l, "irq ").unwrap_or_else(|e| panic!("`irqs` line {l:?}: {e}"));
            (r.str("source").unwrap().to_string(), r)
        })
        .collect()
}

fn count(irqs: &BTreeMap<String, Record>, source: &str) -> u64 {
    irqs.get(source)
        .unwrap_or_else(|| panic!("`irqs` has no {source}: {irqs:?}"))
        .u64("count")
        .unwrap()
}

/// Requests `bytes` and waits for QMP's size and a settled `vmem`.
fn resize(vm: &mut Vm, bytes: u64) {
    request(vm, bytes);
    poll("QMP size == requested", RESIZE, POLL_EVERY, || {
        let d = qmp_dev(vm);
        match d.plugged_bytes == bytes {
            true => Ok(()),
            false => Err(format!("{d:?}")),
        }
    });
    let out = vm.cmd("vmem wait vmem0 20000");
    assert!(
        out.text().contains("state=ok"),
        "vmem not settled after resize to {bytes}: {}",
        out.text()
    );
}

/// Boots `machine`, checks the vector sources' kind and INTIDs with `intids_ok`, resizes
/// 0 -> 1 GiB -> 0 and checks the counts after each step.
fn msix_case(machine: Machine, kind: &str, intids_ok: impl Fn(u64, u64) -> bool) {
    let mut vm = boot(&machine);
    let before = irqs(&mut vm);
    let (config, queue) = (&before["vmem0.config"], &before["vmem0.queue"]);
    for (r, vector) in [(config, "0"), (queue, "1")] {
        assert_eq!(r.str("kind").unwrap(), kind, "{r}");
        assert_eq!(r.str("vector").unwrap(), vector, "{r}");
    }
    let ids = (config.u64("intid").unwrap(), queue.u64("intid").unwrap());
    assert!(intids_ok(ids.0, ids.1), "vector INTIDs {ids:?}");
    assert!(before["vmem0.intx"].is("kind", "intx"));
    let mut last = before;
    for bytes in [GIB, 0] {
        resize(&mut vm, bytes);
        let now = irqs(&mut vm);
        for source in ["vmem0.config", "vmem0.queue"] {
            assert!(
                count(&now, source) > count(&last, source),
                "{source} did not count the resize to {bytes}: {} -> {}",
                last[source],
                now[source]
            );
        }
        assert_eq!(count(&now, "vmem0.intx"), 0, "INTx fired on MSI-X");
        last = now;
    }
    vm.poweroff_ok();
}

/// Default GICv3 with its ITS: LPIs from 8192. Under 1 s on the 2-core TCG host (the three
/// tests took 0.84 s together).
#[test]
fn its_lpis_count_resizes() {
    msix_case(Machine::default(), "lpi", |c, q| {
        c >= 8192 && q >= 8192 && c != q
    });
}

/// GICv2 with its v2m frame: SPIs of the frame (QEMU's: INTIDs 80..144). Under 1 s.
#[test]
fn gicv2_v2m_spis_count_resizes() {
    msix_case(Machine::default().gic(Gic::V2), "v2m-spi", |c, q| {
        (80..144).contains(&c) && (80..144).contains(&q) && c != q
    });
}

/// GICv3 without an ITS (`its=off`): no MSI controller, the device stays on INTx and
/// resizes through it. Under 1 s.
#[test]
fn its_off_falls_back_to_intx() {
    let machine = Machine::default().extra_arg("-M").extra_arg("its=off");
    let mut vm = boot(&machine);
    let before = irqs(&mut vm);
    assert!(!before.contains_key("vmem0.config"), "{before:?}");
    assert!(!before.contains_key("vmem0.queue"), "{before:?}");
    let line = &before["vmem0.intx"];
    assert!(line.is("kind", "intx") && line.is("intid", "36"), "{line}");
    let mut last = count(&before, "vmem0.intx");
    for bytes in [GIB, 0] {
        resize(&mut vm, bytes);
        let now = count(&irqs(&mut vm), "vmem0.intx");
        assert!(now > last, "INTx did not count the resize to {bytes}");
        last = now;
    }
    vm.poweroff_ok();
}
