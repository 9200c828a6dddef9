//! Memory under pressure: a workload grows while the device shrinks, and the kernel stays up.
//! QMP `query-memory-devices` is the outside truth; `vmem`, `mem`, `hog`, `memtest` and
//! `check` are the guest's view. Every test here must end the same way: never a `PANIC:` (the
//! harness fails any wait that sees one), the workload reports what it could not get, its
//! teardown works, the device converges once the workload is gone, and `check: ok` (which
//! also fails on a heap allocation made under the memory-model lock).
//!
//! Covered:
//! - `mem` reports the kernel reserve and the floor on its total line;
//! - 1 GiB of boot RAM, 2G plugged, `hog 1024` and at once a request of 0: the hog runs out of
//!   memory, the device stops where memory allows, `hog stop` works, then 0 is reached;
//! - a `memtest` of most of memory while a shrink migrates a hog's data;
//! - `pin`, a shrink, `unpin`, `hog stop` with the hog's data short of room.
//!
//! While memory is short, Normal's free memory never falls below the kernel reserve (by more
//! than [`RESERVE_MARGIN_KIB`], what kernel allocations may take of it), and the kernel heap
//! never has to refuse an allocation (it would log `heap: no memory`). Deadlines allow a host
//! three times slower than the one the times in the doc comments were taken on.
//!
//! One QEMU runs at a time (tests/common); each test boots its own machine.

mod common;
use common::{boot, check_ok, field, poll, Vm, QMP};

use std::time::{Duration, Instant};

use hotmem_qemu::{Machine, Record, GIB, KIB, MIB};

/// The default `unplug_floor_mib=`.
const FLOOR_MIB: u64 = 64;
/// How far Normal's free memory may fall below the reserve: the reserve is the kernel's, and
/// its allocations (heap slabs, page tables) may use it while workloads hold the rest.
const RESERVE_MARGIN_KIB: u64 = 4 * 1024;
/// A workload start, a shrink, or a stall (migrating up to ~1 GiB: ~15 s here).
const SETTLE: Duration = Duration::from_secs(300);
/// A `memtest` of ~2.5 GiB (~15 s here).
const MEMTEST: Duration = Duration::from_secs(300);
/// `hog stop` of 1 GiB (under 1 s here).
const HOG_STOP: Duration = Duration::from_secs(180);
/// How long a stall must hold before the test believes it.
const STALL_HOLDS: Duration = Duration::from_secs(3);
/// Between two polls.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Stall reasons a memory shortage explains.
const SHORT: &[&str] = &["floor", "no_memory"];

fn plugged_bytes(vm: &mut Vm) -> u64 {
    vm.qmp()
        .virtio_mem("vm0", QMP)
        .unwrap_or_else(|e| panic!("QMP vm0: {e}"))
        .plugged_bytes
}

fn set_requested(vm: &mut Vm, bytes: u64) {
    vm.qmp()
        .set_requested_size("vm0", bytes, QMP)
        .unwrap_or_else(|e| panic!("qom-set vm0 requested-size {bytes}: {e}"));
}

/// The one line of `cmd`, which must start with `prefix`; the rest as a record.
fn one_line(vm: &mut Vm, cmd: &str, prefix: &str, deadline: Duration) -> Record {
    let out = vm
        .console()
        .command(cmd, deadline)
        .unwrap_or_else(|e| panic!("`{cmd}`: {e}"));
    match out.lines.as_slice() {
        [line] if line.starts_with(prefix) => Record::parse(&line[prefix.len()..])
            .unwrap_or_else(|e| panic!("`{cmd}`: `{line}`: {e}")),
        lines => panic!("`{cmd}`: want one `{prefix} …` line, got {lines:?}"),
    }
}

/// `mem`'s total line and the free and managed KiB of zone Normal (all nodes).
fn mem_view(vm: &mut Vm) -> (Record, u64, u64) {
    let mem = vm.records("mem");
    let normal = |key: &str| -> u64 {
        mem.iter()
            .filter(|r| r.is("zone", "Normal"))
            .map(|r| field(r, key))
            .sum()
    };
    let (free, managed) = (normal("free_kib"), normal("managed_kib"));
    let total = mem
        .iter()
        .find(|r| r.is("node", "all"))
        .unwrap_or_else(|| panic!("mem: no total line"))
        .clone();
    (total, free, managed)
}

/// Normal's free memory is not below the reserve (but for [`RESERVE_MARGIN_KIB`]).
fn assert_reserve_kept(vm: &mut Vm, when: &str) {
    let (total, free, _) = mem_view(vm);
    let reserve = field(&total, "reserve_kib");
    assert!(
        free + RESERVE_MARGIN_KIB >= reserve,
        "{when}: Normal free_kib {free} is below the kernel reserve {reserve} KiB: `{total}`"
    );
    eprintln!("{when}: Normal free {free} KiB, reserve {reserve} KiB");
}

/// The kernel never ran out of memory for itself: the heap logs `heap: no memory for …` with
/// the memory state whenever it must return null.
fn assert_heap_never_refused(vm: &mut Vm, when: &str) {
    let transcript = vm.console().transcript();
    if let Some(line) = transcript.lines().find(|l| l.contains("heap: no memory")) {
        panic!("{when}: the kernel heap ran out of memory: `{line}`");
    }
}

/// `hog status`: the hog never found corrupted memory.
fn hog_status(vm: &mut Vm) -> Record {
    let r = one_line(vm, "hog status", "hog:", common::CMD);
    assert_eq!(
        field(&r, "errors"),
        0,
        "the hog found corrupted memory: `{r}`"
    );
    r
}

/// Starts `hog <mib>` (one task on the default 2 vCPUs).
fn hog_start(vm: &mut Vm, mib: u64) {
    let r = one_line(vm, &format!("hog {mib}"), "hog: started", common::CMD);
    assert_eq!(
        field(&r, "pages"),
        mib * MIB / (4 * KIB),
        "`hog {mib}`: `{r}`"
    );
}

/// Waits until the hog mapped all it could: a verify round done, or its task logged that it
/// ran out of memory (then it verifies what it has). Returns whether it ran out.
fn hog_settled(vm: &mut Vm, what: &str) -> bool {
    let (short, took) = poll(what, SETTLE, POLL_EVERY, || {
        if vm.console().transcript().contains("pages: out of memory") {
            return Ok(true);
        }
        let r = hog_status(vm);
        if field(&r, "rounds") >= 1 {
            Ok(false)
        } else {
            Err(r.to_string())
        }
    });
    eprintln!("{what}: after {took:.2?} (out of memory: {short})");
    short
}

/// `hog stop`: every task unmaps and frees its memory, with no errors.
fn hog_stop(vm: &mut Vm) {
    let started = Instant::now();
    let r = one_line(vm, "hog stop", "hog: stopped", HOG_STOP);
    assert_eq!(field(&r, "errors"), 0, "`hog stop`: `{r}`");
    eprintln!("`hog stop` took {:.2?}", started.elapsed());
}

/// How a request ended.
#[derive(Debug, PartialEq)]
enum End {
    Reached,
    /// Stalled at `plugged` bytes for `reason`.
    Stalled {
        plugged: u64,
        reason: String,
    },
}

/// Waits until QMP reaches `requested` and `vmem` agrees (`state=ok`), or the guest stalls
/// with a reason in `allowed` at the size QMP reports, for [`STALL_HOLDS`]. With `allowed`
/// empty a stall only means "not yet" (the deadline decides); otherwise a stall for another
/// reason fails at once.
fn settle(vm: &mut Vm, requested: u64, allowed: &[&str], what: &str) -> End {
    let mut holding: Option<(Instant, u64)> = None;
    let (end, took) = poll(what, SETTLE, POLL_EVERY, || {
        let plugged = plugged_bytes(vm);
        let line = vm.records("vmem").swap_remove(0);
        let state = line
            .str("state")
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        let reason = line
            .str("reason")
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        assert_ne!(state, "broken", "{what}: `{line}`");
        if field(&line, "requested_kib") != requested / KIB {
            return Err(format!("the guest has not seen the request: `{line}`"));
        }
        if plugged == requested {
            return if state == "ok" && field(&line, "plugged_kib") == requested / KIB {
                Ok(End::Reached)
            } else {
                Err(format!("QMP reached it, vmem not yet: `{line}`"))
            };
        }
        let stalled_here = state == "stalled" && field(&line, "plugged_kib") * KIB == plugged;
        if !stalled_here || allowed.is_empty() {
            holding = None;
            return Err(format!("QMP {plugged}; `{line}`"));
        }
        assert!(
            allowed.contains(&reason.as_str()),
            "{what}: stalled for `{reason}`, want one of {allowed:?}: `{line}`"
        );
        match holding {
            Some((since, at)) if at == plugged && since.elapsed() >= STALL_HOLDS => {
                Ok(End::Stalled { plugged, reason })
            }
            Some((_, at)) if at == plugged => Err(format!("stall holding: `{line}`")),
            _ => {
                holding = Some((Instant::now(), plugged));
                Err(format!("stall seen: `{line}`"))
            }
        }
    });
    eprintln!("{what}: {end:?} after {took:.2?}");
    end
}

fn must_reach(vm: &mut Vm, requested: u64, what: &str) {
    assert_eq!(settle(vm, requested, &[], what), End::Reached, "{what}");
}

/// The machine of the workload tests: 1 GiB of boot RAM (Normal), the default 4 GiB device with
/// 2G plugged (Movable).
fn boot_1g_plugged_2g() -> Vm {
    let mut vm = boot(&Machine::default().ram(GIB));
    set_requested(&mut vm, 2 * GIB);
    must_reach(&mut vm, 2 * GIB, "plug 2G");
    vm
}

/// `mem` ends its total line with the kernel reserve (max(8 MiB, managed Normal / 64), in whole
/// pages) and the floor (`unplug_floor_mib=`). About 1 s.
#[test]
fn mem_reports_reserve_and_floor() {
    let m = Machine::default()
        .ram(2 * GIB)
        .bootargs("unplug_floor_mib=48");
    let mut vm = boot(&m);
    let (total, _, managed) = mem_view(&mut vm);
    let reserve_kib = (managed * KIB / 64 / (4 * KIB) * 4).max(8 * 1024);
    assert_eq!(field(&total, "reserve_kib"), reserve_kib, "`{total}`");
    assert_eq!(field(&total, "floor_kib"), 48 * 1024, "`{total}`");
    let keys: Vec<&str> = total.fields().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "node",
            "zone",
            "present_kib",
            "managed_kib",
            "free_kib",
            "reserve_kib",
            "floor_kib"
        ],
        "the new keys come last: `{total}`"
    );
    check_ok(&mut vm, "after boot");
    vm.poweroff_ok();
}

/// 1 GiB of boot RAM, 2G plugged, `hog 1024` and at once a request of 0: the hog maps while its
/// memory goes away under it. It stops short ("out of memory") or maps it all; the device stops
/// where Normal (above the reserve and the floor) can take no more of the hog, or reaches 0;
/// Normal keeps the kernel reserve; `hog stop` works (this is where the kernel used to panic:
/// "memory allocation of 32768 bytes failed"), and then the device reaches 0. About 10 s.
#[test]
fn hog_grows_while_the_device_shrinks_to_0() {
    let mut vm = boot_1g_plugged_2g();
    let (total, _, _) = mem_view(&mut vm);
    assert_eq!(
        field(&total, "floor_kib"),
        FLOOR_MIB * 1024,
        "default floor: `{total}`"
    );
    hog_start(&mut vm, 1024);
    set_requested(&mut vm, 0);
    let short = hog_settled(&mut vm, "`hog 1024` while shrinking to 0");
    let end = settle(&mut vm, 0, SHORT, "2G -> 0 with hog 1024");
    // Either the hog got all of its 1 GiB and the device stopped short, or the device went
    // faster and the hog got what Normal had above the reserve and the floor.
    assert!(
        short || end != End::Reached,
        "1 GiB of hog data cannot all fit in 1 GiB of RAM"
    );
    assert_reserve_kept(&mut vm, "with the hog, memory short");
    let r = hog_status(&mut vm);
    eprintln!("the hog holds {} of 262144 pages", field(&r, "pages"));
    check_ok(&mut vm, "with the hog, memory short");
    hog_stop(&mut vm);
    must_reach(&mut vm, 0, "0 after `hog stop`");
    check_ok(&mut vm, "after `hog stop`");
    assert_heap_never_refused(&mut vm, "at the end");
    vm.poweroff_ok();
}

/// `memtest <mib>`: its one line, `Ok(())` for `memtest: ok`, `Err(got_mib)` for a shortfall
/// (`memtest: FAIL out of memory after X of N MiB`); anything else (a mismatch) fails.
fn memtest(vm: &mut Vm, mib: u64, when: &str) -> Result<(), u64> {
    let cmd = format!("memtest {mib}");
    let started = Instant::now();
    let out = vm
        .console()
        .command(&cmd, MEMTEST)
        .unwrap_or_else(|e| panic!("`{cmd}` {when}: {e}"));
    let [line] = out.lines.as_slice() else {
        panic!("`{cmd}` {when}: want one line, got {:?}", out.lines);
    };
    eprintln!("`{cmd}` {when}: `{line}` after {:.2?}", started.elapsed());
    if *line == format!("memtest: ok mib={mib}") {
        return Ok(());
    }
    Err(line
        .strip_prefix("memtest: FAIL out of memory after ")
        .and_then(|rest| rest.strip_suffix(&format!(" of {mib} MiB")))
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("`{cmd}` {when}: want ok or a shortfall, got `{line}`")))
}

/// 1 GiB of boot RAM, 2G plugged, `hog 512` in it; a request of 0 starts moving the hog's data
/// into Normal, and at once a `memtest` of all free memory but the reserve (and 16 MiB) fills
/// and verifies what it gets while the shrink waits for memory: it passes or reports a
/// shortfall, never a mismatch. Then a `memtest` of all free memory must fall short by at
/// least the kernel reserve (memtest never takes it). The kernel heap never runs dry; once
/// memtest is done the device reaches 0 with the hog's data in Normal. About 20 s.
#[test]
fn memtest_of_most_of_memory_during_a_shrink() {
    let mut vm = boot_1g_plugged_2g();
    hog_start(&mut vm, 512);
    assert!(!hog_settled(&mut vm, "`hog 512`"), "512 MiB fits in 2G");
    let (total, _, _) = mem_view(&mut vm);
    let reserve_mib = field(&total, "reserve_kib") / 1024;
    set_requested(&mut vm, 0);
    let most = field(&total, "free_kib") / 1024 - reserve_mib - 16;
    let _ = memtest(&mut vm, most, "as the shrink starts");
    let during = vm.records("vmem").swap_remove(0);
    eprintln!("the shrink right after memtest: `{during}`");
    let (total, _, _) = mem_view(&mut vm);
    let all = field(&total, "free_kib") / 1024;
    match memtest(&mut vm, all, "of all free memory") {
        Ok(()) => panic!("`memtest {all}` of all free memory took the kernel reserve"),
        Err(got) => assert!(
            all - got + 1 >= reserve_mib,
            "`memtest {all}` got {got} MiB: it took the kernel reserve ({reserve_mib} MiB)"
        ),
    }
    assert_reserve_kept(&mut vm, "after memtest");
    assert_heap_never_refused(&mut vm, "after memtest");
    check_ok(&mut vm, "after memtest");
    // Normal has room for the hog's 512 MiB above the reserve and the floor.
    must_reach(&mut vm, 0, "2G -> 0 with hog 512 after memtest");
    hog_status(&mut vm);
    hog_stop(&mut vm);
    check_ok(&mut vm, "after `hog stop`");
    assert_heap_never_refused(&mut vm, "at the end");
    vm.poweroff_ok();
}

/// 1 GiB of boot RAM, 2G plugged, `hog 1100` (more than Normal can take), `pin 64`, request 0:
/// the device stops short (pins, or no room left for the hog's data) with Normal keeping the
/// kernel reserve; `unpin`: it moves more and stops for lack of memory; `hog stop` with memory
/// short, and the device reaches 0. About 20 s.
#[test]
fn pin_shrink_unpin_hog_stop() {
    let mut vm = boot_1g_plugged_2g();
    hog_start(&mut vm, 1100);
    assert!(!hog_settled(&mut vm, "`hog 1100`"), "1100 MiB fits in 2G");
    let pin = one_line(&mut vm, "pin 64", "pin: pinned", common::CMD);
    assert_eq!(
        field(&pin, "pages"),
        64 * MIB / (4 * KIB),
        "`pin 64`: `{pin}`"
    );
    set_requested(&mut vm, 0);
    let end = settle(
        &mut vm,
        0,
        &["pinned", "floor", "no_memory"],
        "2G -> 0 pinned",
    );
    assert_ne!(end, End::Reached, "pinned pages cannot go");
    assert_reserve_kept(&mut vm, "stalled with pins");
    check_ok(&mut vm, "stalled with pins");
    let out = vm.cmd("unpin");
    assert_eq!(out.lines, ["unpin: released pages=16384"], "`unpin`");
    // Until the pass that `unpin` asked for, `vmem` may still say `pinned`.
    let end = settle(
        &mut vm,
        0,
        &["pinned", "floor", "no_memory"],
        "2G -> 0 after `unpin`",
    );
    match &end {
        End::Stalled { reason, .. } => assert!(
            SHORT.contains(&reason.as_str()),
            "after `unpin` the device may only stop for lack of memory: {end:?}"
        ),
        End::Reached => panic!("1100 MiB of hog data cannot all fit in 1 GiB of RAM"),
    }
    assert_reserve_kept(&mut vm, "stalled after `unpin`");
    hog_status(&mut vm);
    hog_stop(&mut vm);
    must_reach(&mut vm, 0, "0 after `hog stop`");
    check_ok(&mut vm, "after `hog stop`");
    assert_heap_never_refused(&mut vm, "at the end");
    vm.poweroff_ok();
}
