//! Fault injection under QEMU: the guest's `inject` command and bootarg, and the kernel's
//! reaction to injected device replies, torn configuration reads, allocation and migration
//! failures, with a `hog` verifying its memory throughout.
//!
//! A reply test (one per mode, answer and direction) arms one fault (`replace`: the device
//! acts and its ACK is replaced; `refuse`: the request is not sent), starts a resize that
//! meets it, waits until it fired, disarms (`inject off`) and then requires, within
//! [`SETTLE`]:
//! - QMP size == requested, and `vmem` agreeing with QMP (`plugged_kib`, `requested_kib`,
//!   `state=ok`, nothing pending);
//! - zone Movable holding exactly the plugged memory (`present_kib`): nothing the device
//!   reports unplugged is online, nothing plugged is left out;
//! - `hog status` with `errors=0` and `check: ok`; no `PANIC:` (every console wait fails on one).
//!
//! Each test boots its own machine (the default one: 512M of RAM, a 4G device, 2 CPUs) with
//! fixed sizes and counts; the plan's seed is fixed too (0 unless a test sets one). Runtimes
//! in the doc comments are this 2-core TCG host's (the whole file: about 30 s); the deadlines
//! allow a host 3x slower and more.

mod common;
use common::{boot, check_ok, poll, poll_until, qmp_dev, request, vmem_line, Vm, CMD};

use std::time::Duration;

use hotmem_qemu::guest::{self, InjectPlan, MemNode};
use hotmem_qemu::{Machine, KIB, MIB};

/// From the end of a fault (`inject off`, or the last firing) to a converged, agreeing device
/// (an unplug migrates up to ~400 MiB of hog data; a back-off may last up to 5 s).
const SETTLE: Duration = Duration::from_secs(120);
/// From arming a fault and starting the resize to the fault firing.
const FIRE: Duration = Duration::from_secs(60);
/// For the hog to fill its memory and verify it once.
const HOG_ROUND: Duration = Duration::from_secs(90);
/// Between two polls of QMP and the shell.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// The hog of the plug tests (it lands in boot memory, zone Normal).
const PLUG_HOG_MIB: u64 = 128;
/// The hog of the unplug tests (it lands in plugged memory, zone Movable, and must move).
const UNPLUG_HOG_MIB: u64 = 384;
/// Plugged before the unplug tests start.
const UNPLUG_FROM_MIB: u64 = 1536;
/// Where the unplug tests shrink to (below the hog).
const UNPLUG_TO_MIB: u64 = 128;
/// Where the plug tests grow to.
const PLUG_TO_MIB: u64 = 1024;

fn plan(vm: &mut Vm) -> InjectPlan {
    guest::inject_plan(vm.console(), CMD).unwrap_or_else(|e| panic!("`inject`: {e}"))
}

fn arm(vm: &mut Vm, spec: &str) {
    let r = guest::inject_arm(vm.console(), spec, CMD).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("armed `{spec}`: {r}");
}

fn off(vm: &mut Vm) {
    guest::inject_off(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
}

/// Polls `inject` until the plan's rules fired at least `times` in all.
fn wait_fired(vm: &mut Vm, times: u64, what: &str) -> InjectPlan {
    let (p, took) = poll_until(what, FIRE, POLL_EVERY, || plan(vm), |p| p.fired() >= times);
    eprintln!("{what}: after {took:.2?}:\n{p}");
    p
}

/// Starts the hog and waits for its first verify round (all of it mapped and checked).
fn hog_start(vm: &mut Vm, mib: u64) {
    guest::hog_start(vm.console(), mib, CMD).unwrap_or_else(|e| panic!("`hog {mib}`: {e}"));
    guest::wait_hog(
        vm.console(),
        &format!("`hog {mib}` to verify once"),
        HOG_ROUND,
        Duration::from_millis(250),
        |s| s.rounds >= 1,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Waits until the device holds `mib` by QMP and by the guest (see the module doc), then
/// checks the hog and the model.
fn settled(vm: &mut Vm, mib: u64, what: &str) {
    let want_kib = mib * MIB / KIB;
    let (_, took) = poll(
        &format!("{what}: {mib} MiB plugged, agreed and online"),
        SETTLE,
        POLL_EVERY,
        || {
            let q = qmp_dev(vm);
            let line = vmem_line(vm);
            // No Movable line at all (nothing ever plugged) is 0 too.
            let movable: u64 = vm
                .mem()
                .lines()
                .iter()
                .filter(|z| z.zone == "Movable" && z.node != MemNode::All)
                .map(|z| z.present_kib)
                .sum();
            let agree = q.plugged_bytes == mib * MIB
                && line.plugged_kib == want_kib
                && line.requested_kib == q.requested_bytes / KIB
                && line.converged();
            if agree && movable == want_kib {
                Ok(())
            } else {
                Err(format!(
                    "QMP size {} requested {}; `{line}`; Movable present_kib={movable}",
                    q.plugged_bytes, q.requested_bytes
                ))
            }
        },
    );
    eprintln!("{what}: settled after {took:.2?}");
    guest::hog_clean(vm.console(), CMD).unwrap_or_else(|e| panic!("{what}: {e}"));
    check_ok(vm, what);
}

/// Arms one reply fault, `mode` (`replace` or `refuse`) with `answer` on the requests `on`
/// (count 2: below the three contradictions after which the policy gives a device up),
/// resizes to `mib`, waits for the fault, disarms and settles.
fn reply_fault(vm: &mut Vm, mode: &str, answer: &str, on: &str, mib: u64) {
    let what = format!("{mode} {answer} on {on}, resize to {mib} MiB");
    arm(vm, &format!("reply {mode} {answer} {on} count=2"));
    request(vm, mib * MIB);
    wait_fired(vm, 1, &what);
    off(vm);
    settled(vm, mib, &what);
}

/// A plug from 0 to 1 GiB meeting the fault, with a 128 MiB hog in boot memory.
fn plug_fault(mode: &str, answer: &str) {
    let mut vm = boot(&Machine::default());
    hog_start(&mut vm, PLUG_HOG_MIB);
    reply_fault(&mut vm, mode, answer, "plug", PLUG_TO_MIB);
    guest::hog_stop(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
    check_ok(&mut vm, "after hog stop");
    vm.poweroff_ok();
}

/// An unplug from 1.5 GiB to 128 MiB meeting the fault, with a 384 MiB hog in plugged memory
/// (its data must move to boot memory; the first UNPLUG takes the empty units, the second a
/// unit whose pages moved).
fn unplug_fault(mode: &str, answer: &str) {
    let mut vm = boot(&Machine::default());
    request(&mut vm, UNPLUG_FROM_MIB * MIB);
    settled(&mut vm, UNPLUG_FROM_MIB, "plug before the hog");
    hog_start(&mut vm, UNPLUG_HOG_MIB);
    reply_fault(&mut vm, mode, answer, "unplug", UNPLUG_TO_MIB);
    guest::hog_stop(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
    check_ok(&mut vm, "after hog stop");
    vm.poweroff_ok();
}

/// The device plugged, the guest is told NACK: it must find out (its next PLUG of those
/// blocks is NACKed for real, as the device already holds the requested size) and adopt
/// them (the policy's `plugged_size` audit). About 2 s.
#[test]
fn replace_nack_during_plug() {
    plug_fault("replace", "nack");
}

/// The device plugged, the guest is told BUSY: as for NACK, after the back-off. About 2 s.
#[test]
fn replace_busy_during_plug() {
    plug_fault("replace", "busy");
}

/// The device plugged, the guest is told ERROR: STATE says plugged, the guest adopts the
/// blocks. About 2 s.
#[test]
fn replace_error_during_plug() {
    plug_fault("replace", "error");
}

/// PLUG not sent, NACK: re-read, retry. About 2 s.
#[test]
fn refuse_nack_during_plug() {
    plug_fault("refuse", "nack");
}

/// PLUG not sent, BUSY: back off, retry. About 2 s.
#[test]
fn refuse_busy_during_plug() {
    plug_fault("refuse", "busy");
}

/// PLUG not sent, ERROR: STATE says unplugged (a contradiction), back off, retry. About 2 s.
#[test]
fn refuse_error_during_plug() {
    plug_fault("refuse", "error");
}

/// The device unplugged, the guest is told NACK: memory the device took back must not stay
/// online, the hog's data survives. About 3 s.
#[test]
fn replace_nack_during_unplug() {
    unplug_fault("replace", "nack");
}

/// The device unplugged, the guest is told BUSY. About 3 s.
#[test]
fn replace_busy_during_unplug() {
    unplug_fault("replace", "busy");
}

/// The device unplugged, the guest is told ERROR: STATE says unplugged, the unit goes. About
/// 3 s.
#[test]
fn replace_error_during_unplug() {
    unplug_fault("replace", "error");
}

/// UNPLUG not sent, NACK: the unit goes back online at once, the unplug completes later.
/// About 3 s.
#[test]
fn refuse_nack_during_unplug() {
    unplug_fault("refuse", "nack");
}

/// UNPLUG not sent, BUSY: the unit goes back online, back off, retry. About 3 s.
#[test]
fn refuse_busy_during_unplug() {
    unplug_fault("refuse", "busy");
}

/// UNPLUG not sent, ERROR: STATE says plugged, the unit goes back online, retry. About 3 s.
#[test]
fn refuse_error_during_unplug() {
    unplug_fault("refuse", "error");
}

/// `inject` alone lists the armed rules; the bootarg `inject=` arms exactly what the same
/// commands arm; a boot-armed rule fires (two refused PLUGs) and the device still converges;
/// `inject help` shows the grammar and a bad command its usage. About 1 s.
#[test]
fn bootarg_arms_what_the_command_arms() {
    let spec = "seed,7;reply,refuse,busy,plug,count=2;migrate,ppm=500;reply,replace,error,state";
    let mut vm = boot(&Machine::default().bootargs(&format!("inject={spec}")));
    let at_boot = plan(&mut vm);
    assert_eq!((at_boot.seed, at_boot.armed), (7, 3), "{at_boot}");
    assert_eq!(
        at_boot.armed_specs(),
        [
            "rule=0 kind=reply mode=refuse answer=busy request=plug ppm=1000000",
            "rule=1 kind=migrate ppm=500",
            "rule=2 kind=reply mode=replace answer=error request=state ppm=1000000",
        ],
        "{at_boot}"
    );
    off(&mut vm);
    assert_eq!(plan(&mut vm).rules.len(), 0);
    let seed = vm.cmd("inject seed 7");
    assert_eq!(seed.lines, ["inject: seed=7"]);
    arm(&mut vm, "reply refuse busy plug count=2");
    arm(&mut vm, "migrate ppm=500");
    let by_command = plan(&mut vm);
    assert_eq!(
        by_command.armed_specs()[..2],
        at_boot.armed_specs()[..2],
        "{by_command}"
    );
    request(&mut vm, 256 * MIB);
    let p = wait_fired(&mut vm, 2, "two refused PLUGs");
    assert_eq!(p.rules[0].str("left").ok(), Some("0"), "{p}");
    assert_eq!(p.armed, 1, "only the migrate rule is left: {p}");
    settled(&mut vm, 256, "after the refused PLUGs");
    let help = vm.cmd("inject help");
    for form in ["reply", "config", "alloc", "migrate", "seed", "off"] {
        assert!(
            help.lines.iter().any(|l| l.contains(form)),
            "`inject help` lacks {form}:\n{}",
            help.text()
        );
    }
    let bad = vm.cmd("inject reply sideways busy plug");
    assert!(
        bad.lines.len() == 1 && bad.lines[0].starts_with("usage: inject reply"),
        "{}",
        bad.text()
    );
    vm.poweroff_ok();
}

/// Torn configuration reads (the generation counter moves mid-read and `requested_size` reads
/// wrong meanwhile): the driver reads again, and the device reaches exactly the requested
/// size, not the torn one. About 1 s.
#[test]
fn torn_config_reads_are_read_again() {
    let mut vm = boot(&Machine::default());
    arm(&mut vm, "config torn count=5");
    request(&mut vm, 256 * MIB);
    let p = wait_fired(&mut vm, 5, "five torn reads");
    assert_eq!(p.armed, 0, "{p}");
    settled(&mut vm, 256, "after torn reads");
    vm.poweroff_ok();
}

/// Page allocations failing: with every movable allocation failing `memtest` reports out of
/// memory and nothing leaks; after `inject off` it passes. About 1 s.
#[test]
fn failing_page_allocations_are_reported() {
    let mut vm = boot(&Machine::default());
    arm(&mut vm, "alloc movable ppm=1000000");
    let out = vm.cmd("memtest 16");
    assert_eq!(
        out.lines,
        ["memtest: FAIL out of memory after 0 of 16 MiB"],
        "{}",
        out.text()
    );
    check_ok(&mut vm, "after the failed memtest");
    off(&mut vm);
    let out = vm.cmd("memtest 16");
    assert_eq!(out.lines, ["memtest: ok mib=16"], "{}", out.text());
    vm.poweroff_ok();
}

/// Migrations failing (64 hog pages fail to move, as if pinned mid-move) during an unplug to
/// 0 with a 256 MiB hog in plugged memory: the unplug stalls or goes around them, completes
/// once injection stops, and the hog's data is intact. About 3 s.
#[test]
fn failing_migrations_during_unplug() {
    let mut vm = boot(&Machine::default());
    request(&mut vm, 1024 * MIB);
    settled(&mut vm, 1024, "plug before the hog");
    hog_start(&mut vm, 256);
    arm(&mut vm, "migrate count=64");
    request(&mut vm, 0);
    let p = wait_fired(&mut vm, 64, "64 failed migrations");
    assert_eq!(p.armed, 0, "{p}");
    off(&mut vm);
    settled(&mut vm, 0, "after failed migrations");
    guest::hog_stop(vm.console(), CMD).unwrap_or_else(|e| panic!("{e}"));
    vm.poweroff_ok();
}
