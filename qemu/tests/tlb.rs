//! TLB maintenance of the linear map on unplug: an invalidation that silently does nothing
//! leaves a stale translation, and a `peek` through it reads memory the guest gave back.
//!
//! The test warms the TLB with a `peek` of one address per plugged block, unplugs, and
//! `peek`s again: exactly the removed blocks must fault. One vCPU, so the peeks and the
//! unplug share one TLB (QEMU keeps a translation until the guest invalidates it), and each
//! address sits at a different page offset inside its block so that QEMU's direct-mapped TLB
//! keeps all of them. Run on both paths of the kernel's plan (`cpus` says which:
//! `tlbi_range=1`): `-cpu max` has FEAT_TLBIRANGE (range instructions), `cortex-a72` does not
//! (one `TLBI VAAE1IS` per 2 MiB block).
//!
//! The `tlbi=` counters of `cpus` bound the broadcasts: at most [`PER_BLOCK`] per 2 MiB block
//! removed (one invalidation per page would be 512), and an unplug of 1 GiB of blocks to 0 is
//! measured and printed.

mod common;

use common::{boot, check_ok, field, poll_until, request, vmem_line, Vm};
use hotmem_qemu::{Machine, GIB, KIB, MIB};
use std::time::Duration;

/// Idle unplug and plug of up to 1 GiB (tens of ms; generous for a loaded host).
const SETTLE: Duration = Duration::from_secs(60);
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Most broadcasts an unplug may cost per 2 MiB block it removes.
const PER_BLOCK: u64 = 2;
/// Plugged before the first unplug.
const PLUGGED: u64 = 64 * MIB;

/// Requests `bytes` and waits until the guest has finished the pass that gets there.
fn settle(vm: &mut Vm, bytes: u64) {
    request(vm, bytes);
    poll_until(
        &format!("vmem at {} MiB", bytes / MIB),
        SETTLE,
        POLL_EVERY,
        || vmem_line(vm),
        |l| l.requested_kib == bytes / KIB && l.plugged_kib == bytes / KIB && l.state == "ok",
    );
}

/// Broadcast TLB invalidations issued so far, summed over CPUs; and whether they use range
/// instructions.
fn broadcasts(vm: &mut Vm) -> (u64, u64) {
    let cpus = vm.records("cpus");
    let total = cpus.iter().map(|r| field(r, "tlbi")).sum();
    (total, field(&cpus[0], "tlbi_range"))
}

/// `peek` of each address: `Some(true)` read, `Some(false)` faulted (anything else panics).
fn peeks(vm: &mut Vm, addrs: &[u64]) -> Vec<bool> {
    addrs
        .iter()
        .map(|a| {
            let out = vm.cmd(&format!("peek 0x{a:x}")).text();
            if out.starts_with(&format!("peek: 0x{a:x} = 0x")) {
                true
            } else {
                assert_eq!(out, format!("peek: fault addr=0x{a:x}"), "peek");
                false
            }
        })
        .collect()
}

fn stale_translations_fault(cpu: &str, want_range: u64) {
    let m = Machine::default().cpu(cpu).smp(1);
    let mut vm = boot(&m);
    let (_, range) = broadcasts(&mut vm);
    assert_eq!(range, want_range, "cpus: tlbi_range on -cpu {cpu}");

    settle(&mut vm, PLUGGED);
    let line = vmem_line(&mut vm);
    let block = line.block_kib * KIB;
    assert_eq!(
        block,
        2 * MIB,
        "the device's block is one 2 MiB linear-map block"
    );
    let blocks = PLUGGED / block;
    let addrs: Vec<u64> = (0..blocks)
        .map(|i| line.addr + i * block + i * 4096 + 8)
        .collect();
    assert!(
        peeks(&mut vm, &addrs).iter().all(|&r| r),
        "plugged memory reads"
    );

    // One block goes: its address, and only it, faults.
    let (before, _) = broadcasts(&mut vm);
    settle(&mut vm, PLUGGED - block);
    let (after, _) = broadcasts(&mut vm);
    let read = peeks(&mut vm, &addrs);
    let faulted = read.iter().filter(|&&r| !r).count();
    assert_eq!(
        faulted,
        1,
        "-cpu {cpu}: after unplugging one block exactly one peek must fault ({} = a stale \
         TLB entry read memory the guest gave back)",
        if faulted == 0 { "none" } else { "more" }
    );
    let one = after - before;
    assert!(
        (1..=PER_BLOCK).contains(&one),
        "-cpu {cpu}: unplugging one 2 MiB block took {one} TLB broadcasts"
    );

    // The rest go (their translations warm from the peeks just made): all fault.
    let (before, _) = broadcasts(&mut vm);
    settle(&mut vm, 0);
    let (after, _) = broadcasts(&mut vm);
    let read = peeks(&mut vm, &addrs);
    assert!(
        read.iter().all(|&r| !r),
        "-cpu {cpu}: unplugged memory still reads through a stale TLB entry: {read:?}"
    );
    let rest = after - before;
    assert!(
        (1..=PER_BLOCK * (blocks - 1)).contains(&rest),
        "-cpu {cpu}: unplugging {} blocks took {rest} TLB broadcasts",
        blocks - 1
    );

    // Measured: 1 GiB of blocks plugged and unplugged.
    settle(&mut vm, GIB);
    let (before, _) = broadcasts(&mut vm);
    settle(&mut vm, 0);
    let (after, _) = broadcasts(&mut vm);
    let units = GIB / block;
    let gib = after - before;
    eprintln!(
        "-cpu {cpu} (tlbi_range={range}): unplug 1 GiB -> 0: {gib} TLB broadcasts, {:.3} per \
         2 MiB block",
        gib as f64 / units as f64
    );
    assert!(
        gib <= PER_BLOCK * units,
        "-cpu {cpu}: 1 GiB -> 0 took {gib} TLB broadcasts"
    );
    check_ok(&mut vm, "after the unplugs");
    vm.poweroff_ok();
}

/// The range path (`-cpu max`, FEAT_TLBIRANGE).
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn stale_translation_faults_range_path() {
    stale_translations_fault("max", 1);
}

/// The fallback path (`cortex-a72`: one `TLBI VAAE1IS` per 2 MiB block).
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn stale_translation_faults_block_path() {
    stale_translations_fault("cortex-a72", 0);
}
