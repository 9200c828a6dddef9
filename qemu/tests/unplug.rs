//! Unplug with page migration: memory that holds live data leaves the guest because
//! the kernel moves the data first. A `hog` keeps that data under constant verification (every
//! mismatch counts as an error), QMP `query-memory-devices` is the outside truth, and `vmem`,
//! `mem`, `check` and `peek` are the guest's view. Every shrink ends one of two ways:
//! - QMP size reaches the request within [`RESIZE`], and `vmem` then agrees (`state=ok`);
//! - or the guest stops short and says why: `vmem` shows `state=stalled` with a reason the test
//!   allows for that situation, and QMP size equals the guest's `plugged_kib`.
//!
//! A stall with any other reason, a hog error, `check` failing or a `PANIC:` fails the test.
//!
//! Covered:
//! - plug 4G, `hog 1536`, request 2G (must complete), then 512M (must stall at the floor with
//!   Normal free memory kept at the floor), then `hog stop` (the request completes);
//! - pins: 64 MiB of hog pages pinned, a request below what they occupy stalls with
//!   `reason=pinned` until `unpin`;
//! - 20 seeded random resizes with a hog task on every CPU but the shell's (`UNPLUG_SEED=<n>`
//!   replays);
//! - `peek` of unplugged memory faults cleanly and the shell goes on;
//! - 1 GiB of boot RAM, 4G plugged, `hog 2048`, request 1G: stops above the floor and says why;
//!   after `hog stop` the request completes.
//!
//! One QEMU runs at a time (tests/common); each test boots its own machine (boots take < 1 s).

mod common;
use common::{check_ok, field, qmp_dev, request, vmem_line as vmem};

use std::time::{Duration, Instant};

use common::{boot, check_cpus, poll, poll_until, Vm, CMD, QMP};
use hotmem_qemu::guest::{self, HogStatus, VmemLine};
use hotmem_qemu::stress::Rng;
use hotmem_qemu::{Machine, VirtioMem, VirtioMemInfo, GIB, KIB, MIB};

/// From `qom-set` to QMP size == requested (unplug migrates up to ~1.5 GiB under TCG).
const RESIZE: Duration = Duration::from_secs(60);
/// From `qom-set` to a stall the test expects (after migrating what fits).
const STALL: Duration = Duration::from_secs(90);
/// For the hog to finish one more verify round (~1-3 s per GiB under TCG, more while
/// migrating).
const ROUND: Duration = Duration::from_secs(60);
/// `hog stop` (frees up to 2 GiB of pages and unmaps them).
const HOG_STOP: Duration = Duration::from_secs(60);
/// Between two polls of QMP and the shell.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How long a stall must hold before the test believes it (no progress behind it).
const STALL_HOLDS: Duration = Duration::from_secs(2);
/// The default `unplug_floor_mib=`.
const FLOOR_KIB: u64 = 64 * 1024;
/// How far below the floor Normal's free memory may dip (heap pages, page tables of the
/// migration, allocations racing the floor check).
const FLOOR_MARGIN_KIB: u64 = 8 * 1024;
/// How far above the floor Normal's free memory may be when the unplug stops for lack of
/// memory (a few plug units' worth of pages it could not use).
const CONVERGED_SLACK_KIB: u64 = 32 * 1024;
/// Stall reasons that a short memory explains (hog data with nowhere left to go).
const MEMORY_SHORT: &[&str] = &["floor", "no_memory"];
/// One step of the random-resize test. The slowest step of the default seed takes about 15 s
/// here; 3 hog tasks on 4 vCPUs make migration very sensitive to the host (every broadcast TLB
/// invalidation stops all vCPUs under TCG, and 4 vCPU threads share 2 host cores), and a loaded
/// host has been seen 10x slower on exactly this load, so the deadline allows 20x.
const RANDOM_STEP: Duration = Duration::from_secs(300);
/// Steps of the random-resize test.
const RANDOM_STEPS: usize = 20;
/// The random-resize test's seed when `UNPLUG_SEED` does not give one. Chosen for what its
/// sizes exercise (six shrinks of 1 GiB or more, four requests below 200 MiB, the first a
/// 2048 -> 128 MiB shrink that migrates the whole hog), not for passing.
const RANDOM_SEED: u64 = 18;
/// Hog of the random-resize test.
const RANDOM_HOG_MIB: u64 = 384;
/// `unplug_floor_mib=` of the random-resize test: Normal (512 MiB of boot RAM) takes only ~180
/// MiB of the hog above it, so sizes below ~200 MiB stall at the floor (3 of the default seed's
/// 20 steps) and what migrates (which is slow with 3 hog tasks on 4 vCPUs) stays bounded.
const RANDOM_FLOOR_MIB: u64 = 256;

/// Free KiB of zone Normal (all nodes) and present KiB of zone Movable (all nodes).
fn normal_free_and_movable_present(vm: &mut Vm) -> (u64, u64) {
    let mem = vm.mem();
    let sum = |zone: &str, key: fn(&guest::MemLine) -> u64| {
        mem.zone_sum(zone, key)
            .unwrap_or_else(|e| panic!("{e}:\n{mem}"))
    };
    (
        sum("Normal", |z| z.free_kib),
        sum("Movable", |z| z.present_kib),
    )
}

/// Waits (every 250 ms, up to [`ROUND`]) until the hog's status satisfies `until`; every status
/// read on the way must show no errors.
fn wait_hog(
    vm: &mut Vm,
    what: &str,
    until: impl FnMut(&HogStatus) -> bool,
) -> (HogStatus, Duration) {
    let started = Instant::now();
    let r = guest::wait_hog(vm.console(), what, ROUND, Duration::from_millis(250), until)
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    (r, started.elapsed())
}

/// `hog <mib>`: max(1, CPUs - 1) tasks map `mib` MiB together. The tasks fill their memory
/// after starting, so this waits for the first completed verify round: then all of it is mapped.
fn hog_start(vm: &mut Vm, mib: u64) {
    let smp = u64::from(vm.machine().smp);
    let r = guest::hog_start(vm.console(), mib, CMD).unwrap_or_else(|e| panic!("`hog {mib}`: {e}"));
    assert_eq!(r.tasks, (smp - 1).max(1), "hog tasks: `{r}`");
    assert_eq!(r.pages, mib * MIB / (4 * KIB), "hog pages: `{r}`");
    let (r, took) = wait_hog(
        vm,
        &format!("`hog {mib}` to fill its memory and verify it once"),
        |r| r.rounds >= 1,
    );
    eprintln!("`hog {mib}` filled and verified after {took:.2?}: `{r}`");
}

/// `hog status`, which must show no errors.
fn hog_status(vm: &mut Vm) -> HogStatus {
    guest::hog_clean(vm.console(), CMD).unwrap_or_else(|e| panic!("`hog status`: {e}"))
}

/// Waits for the hog to complete another verify round (it still runs and still verifies).
fn hog_rounds_advance(vm: &mut Vm, when: &str) -> u64 {
    let r0 = hog_status(vm).rounds;
    let (r, took) = wait_hog(
        vm,
        &format!("the hog to complete a verify round {when}"),
        |r| r.rounds > r0,
    );
    eprintln!("hog round {r0} -> `{r}` in {took:.2?} ({when})");
    r.rounds
}

/// `hog stop` frees all of the hog's memory, which must have no errors.
fn hog_stop(vm: &mut Vm) {
    let started = Instant::now();
    if let Err(e) = guest::hog_stop(vm.console(), HOG_STOP) {
        panic!(
            "`hog stop`: {e}\nwhere the vCPUs are (QEMU `info registers -a`, PC lines):\n{}",
            vcpu_pcs(vm)
        );
    }
    eprintln!("`hog stop` took {:.2?}", started.elapsed());
}

/// The program counters of every vCPU, for a report on a guest that stopped answering.
fn vcpu_pcs(vm: &mut Vm) -> String {
    match vm.qmp().hmp("info registers -a", QMP) {
        Ok(text) => text
            .lines()
            .filter(|l| l.contains("CPU#") || l.trim_start().starts_with("PC="))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(HMP failed: {e})"),
    }
}

/// How a request ended.
#[derive(Debug)]
enum Settled {
    /// QMP size == requested and the guest agrees.
    Reached,
    /// The guest stopped short: its `vmem` line (`state=stalled`) and QMP's view, which agree.
    Stalled(Box<VmemLine>, VirtioMemInfo),
}

impl std::fmt::Display for Settled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Settled::Reached => write!(f, "reached"),
            Settled::Stalled(line, dev) => write!(
                f,
                "stalled at {} MiB (QMP size {}): `{line}`",
                line.plugged_kib / 1024,
                dev.plugged_bytes
            ),
        }
    }
}

/// What a settle saw on the way.
struct Watch {
    /// Lowest Normal `free_kib` over every poll.
    min_normal_free_kib: u64,
    /// Normal `free_kib` before the request, when the caller measured it (else `u64::MAX`).
    normal_free_before_kib: u64,
    took: Duration,
}

/// Polls until QMP size == `requested` (then waits for `vmem` to agree: same size, `state=ok`,
/// `pending_kib=0`) or the guest shows `state=stalled` with a reason in `allowed` and QMP size ==
/// its `plugged_kib`, unchanged over [`STALL_HOLDS`]. With `allowed` empty a stall is only "not
/// yet"; otherwise a stall with another reason fails at once, as does `state=broken`. Checks
/// `mem` Movable present == plugged either way.
fn settle(
    vm: &mut Vm,
    requested: u64,
    allowed: &[&str],
    timeout: Duration,
    what: &str,
) -> (Settled, Watch) {
    let started = Instant::now();
    let mut min_free = u64::MAX;
    let mut stall_since: Option<(Instant, u64)> = None;
    let (outcome, _) = poll(what, timeout, POLL_EVERY, || {
        let (free, _) = normal_free_and_movable_present(vm);
        min_free = min_free.min(free);
        let dev = qmp_dev(vm);
        assert_eq!(dev.requested_bytes, requested, "QMP requested-size");
        if dev.plugged_bytes == requested {
            return Ok(None);
        }
        let line = vmem(vm);
        let (state, reason) = (line.state.as_str(), line.reason.as_str());
        assert_ne!(state, "broken", "vmem: device broken: `{line}`");
        if line.requested_kib != requested / KIB {
            // The guest has not seen the new request yet; its state is about the old one.
            stall_since = None;
            return Err(format!("guest has not seen the request yet: `{line}`"));
        }
        if state != "stalled" {
            stall_since = None;
            return Err(format!("QMP {dev:?}; vmem `{line}`"));
        }
        if allowed.is_empty() {
            // Must reach: a stall is only "not yet" (the deadline says when it is a failure).
            return Err(format!("QMP {dev:?}; stalled: `{line}`"));
        }
        assert!(
            allowed.contains(&reason),
            "{what}: stalled for a reason not allowed here (want one of {allowed:?}): `{line}` \
             (QMP {dev:?})"
        );
        let plugged = line.plugged_kib * KIB;
        let dev_again = qmp_dev(vm);
        if dev_again.plugged_bytes != plugged {
            stall_since = None;
            return Err(format!("QMP {dev_again:?} vs stalled vmem `{line}`"));
        }
        match stall_since {
            Some((since, at)) if at == plugged && since.elapsed() >= STALL_HOLDS => {
                Ok(Some((line, dev_again)))
            }
            Some((_, at)) if at == plugged => Err(format!("stall holding: `{line}`")),
            _ => {
                stall_since = Some((Instant::now(), plugged));
                Err(format!("stall seen: `{line}`"))
            }
        }
    });
    let settled = match outcome {
        Some((line, dev)) => {
            let (_, movable) = normal_free_and_movable_present(vm);
            assert_eq!(
                movable * KIB,
                dev.plugged_bytes,
                "mem: Movable present must be what is plugged while stalled (`{line}`)"
            );
            Settled::Stalled(Box::new(line), dev)
        }
        None => {
            let (line, _) = poll_until(
                &format!("`vmem` to agree with QMP ({what})"),
                CMD,
                POLL_EVERY,
                || vmem(vm),
                |line| {
                    line.plugged_kib == requested / KIB
                        && line.pending_kib == 0
                        && line.state == "ok"
                        && line.reason == "none"
                },
            );
            let (free, movable) = normal_free_and_movable_present(vm);
            min_free = min_free.min(free);
            assert_eq!(
                movable * KIB,
                requested,
                "mem: Movable present must be what is plugged (`{line}`)"
            );
            Settled::Reached
        }
    };
    let watch = Watch {
        min_normal_free_kib: min_free,
        normal_free_before_kib: u64::MAX,
        took: started.elapsed(),
    };
    eprintln!(
        "{what}: {settled} after {:.2?}; lowest Normal free {} KiB",
        watch.took, watch.min_normal_free_kib
    );
    (settled, watch)
}

/// `settle` that must reach `requested`.
fn must_reach(vm: &mut Vm, requested: u64, what: &str) -> Watch {
    let (before, _) = normal_free_and_movable_present(vm);
    request(vm, requested);
    match settle(vm, requested, &[], RESIZE, what) {
        (Settled::Reached, mut w) => {
            w.normal_free_before_kib = before;
            w
        }
        (other, _) => panic!("{what}: want QMP size == {requested}, got {other}"),
    }
}

/// `settle` that must stall above `requested` with a reason in `allowed`.
fn must_stall(
    vm: &mut Vm,
    requested: u64,
    allowed: &[&str],
    what: &str,
) -> (VmemLine, VirtioMemInfo, Watch) {
    let (before, _) = normal_free_and_movable_present(vm);
    request(vm, requested);
    match settle(vm, requested, allowed, STALL, what) {
        (Settled::Stalled(line, dev), mut w) => {
            w.normal_free_before_kib = before;
            assert!(
                dev.plugged_bytes > requested,
                "{what}: stalled below the request? `{line}` {dev:?}"
            );
            (*line, dev, w)
        }
        (other, _) => panic!("{what}: want a stall ({allowed:?}), got {other}"),
    }
}

/// A shrink never takes Normal's free memory below the floor (or below where it was, if a plug
/// had already taken it lower: plugging keeps its own, smaller reserve for mem_maps).
fn assert_floor_kept(w: &Watch, floor_kib: u64, what: &str) {
    let bound = floor_kib.min(w.normal_free_before_kib);
    assert!(
        w.min_normal_free_kib + FLOOR_MARGIN_KIB >= bound,
        "{what}: Normal free_kib fell to {} from {} (floor {floor_kib} KiB, margin \
         {FLOOR_MARGIN_KIB})",
        w.min_normal_free_kib,
        w.normal_free_before_kib
    );
}

/// A stall for lack of memory comes only once Normal's free memory is down near the floor: the
/// unplug went as far as free memory allows.
fn assert_as_far_as_memory_allows(vm: &mut Vm, what: &str) {
    let (free, _) = normal_free_and_movable_present(vm);
    assert!(
        free < FLOOR_KIB + CONVERGED_SLACK_KIB,
        "{what}: stalled for lack of memory with {free} KiB free in Normal (floor {FLOOR_KIB} \
         KiB): it could have migrated more"
    );
}

/// Plug 4G, `hog 1536`, request 2G: completes with the hog intact. Then 512M: the hog cannot
/// fit in 512M plus Normal's free memory above the floor, so the device stops above 512M at the
/// floor, with Normal free memory kept at the floor and nothing corrupted. After `hog stop` the
/// request completes.
///
/// Runtime: about 24 s on the 2-core TCG development host.
#[test]
fn hog_1536_shrink_to_2g_then_512m_stalls() {
    let mut vm = boot(&Machine::default());
    must_reach(&mut vm, 4 * GIB, "plug 4G");
    hog_start(&mut vm, 1536);
    hog_rounds_advance(&mut vm, "before shrinking");

    let w = must_reach(&mut vm, 2 * GIB, "4G -> 2G with hog 1536");
    assert_floor_kept(&w, FLOOR_KIB, "4G -> 2G");
    hog_rounds_advance(&mut vm, "after 4G -> 2G");
    check_ok(&mut vm, "after 4G -> 2G");

    let (_, _, w) = must_stall(&mut vm, 512 * MIB, MEMORY_SHORT, "2G -> 512M with hog 1536");
    assert_as_far_as_memory_allows(&mut vm, "2G -> 512M");
    assert_floor_kept(&w, FLOOR_KIB, "2G -> 512M");
    hog_rounds_advance(&mut vm, "while stalled at the floor");
    check_ok(&mut vm, "while stalled at the floor");

    hog_stop(&mut vm);
    // The stall backs off and retries; with the hog gone every unit is free.
    match settle(&mut vm, 512 * MIB, &[], RESIZE, "512M after `hog stop`") {
        (Settled::Reached, _) => {}
        (other, _) => panic!("512M after `hog stop`: {other}"),
    }
    check_ok(&mut vm, "after `hog stop`");
    vm.poweroff_ok();
}

/// Pins hold unplug up. 1 GiB of boot RAM, 4G plugged, `hog 512` (in Movable), `pin 64`: the
/// pins take the 16384 highest hog pages, which occupy at least 32 plug units (64 MiB), so any
/// request below 64 MiB (here 32 MiB) needs units that hold pinned pages. Normal has room for all
/// the unpinned hog data (~950 MiB free), so the only thing in the way is the pins: the device
/// stalls with `reason=pinned`, the pinned pages stay mapped (`peek` reads them), and after
/// `unpin` it converges.
///
/// Runtime: about 16 s on the 2-core TCG development host.
#[test]
fn pinned_pages_stall_unplug_until_unpin() {
    let mut vm = boot(&Machine::default().ram(GIB));
    must_reach(&mut vm, 4 * GIB, "plug 4G");
    let dev = qmp_dev(&mut vm);
    hog_start(&mut vm, 512);
    let (normal_free, _) = normal_free_and_movable_present(&mut vm);

    let pin = vm.one_record("pin 64", "pin: pinned");
    let pages = field(&pin, "pages");
    let highest = field(&pin, "highest");
    assert_eq!(pages, 64 * MIB / (4 * KIB), "pin pages: `{pin}`");
    assert!(
        (dev.memaddr..dev.memaddr + dev.max_bytes).contains(&highest),
        "the highest pinned page 0x{highest:x} must be in the device region {dev:?} \
         (else the hog is not in plugged memory and the pins hold nothing up)"
    );
    let pinned_bytes = pages * 4 * KIB;
    let target = 32 * MIB;
    assert!(target < pinned_bytes, "the request must need pinned units");
    assert!(
        normal_free > 512 * 1024 + FLOOR_KIB,
        "Normal must have room for the unpinned hog data: {normal_free} KiB free"
    );

    let (line, dev, w) = must_stall(&mut vm, target, &["pinned"], "4G -> 32M with 64M pinned");
    assert!(
        dev.plugged_bytes >= pinned_bytes,
        "the units holding {pinned_bytes} bytes of pinned pages cannot have gone: `{line}`"
    );
    assert_floor_kept(&w, FLOOR_KIB, "4G -> 32M pinned");
    let peek = vm.cmd(&format!("peek 0x{highest:x}")).text();
    assert!(
        peek.starts_with(&format!("peek: 0x{highest:x} = 0x")),
        "a pinned page must stay mapped: `{peek}`"
    );
    hog_rounds_advance(&mut vm, "while stalled on pins");
    check_ok(&mut vm, "while stalled on pins");

    let out = vm.cmd("unpin");
    assert_eq!(
        out.lines,
        [format!("unpin: released pages={pages}")],
        "`unpin`"
    );
    match settle(&mut vm, target, &[], RESIZE, "32M after `unpin`") {
        (Settled::Reached, w) => assert_floor_kept(&w, FLOOR_KIB, "32M after `unpin`"),
        (other, _) => panic!("32M after `unpin`: {other}"),
    }
    hog_rounds_advance(&mut vm, "after `unpin`");
    check_ok(&mut vm, "after `unpin`");
    hog_stop(&mut vm);
    vm.poweroff_ok();
}

/// The seed of the random-resize test: [`RANDOM_SEED`] unless `UNPLUG_SEED=<n>` asks for
/// another (to replay a failure, or to explore). `make test` never takes a seed from the clock:
/// random exploration belongs to `make stress`.
fn seed() -> u64 {
    match std::env::var("UNPLUG_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("UNPLUG_SEED={s:?} is not a number")),
        Err(_) => RANDOM_SEED,
    }
}

/// 20 seeded random resizes (multiples of 64 MiB in 0..=2G, each different from the last; the
/// seed is [`RANDOM_SEED`], `UNPLUG_SEED=<n>` replays another) of a 2G device with `hog 384` on
/// `-smp 4` (3 hog tasks, one per CPU but the shell's) and `unplug_floor_mib=256`. After each: QMP reaches the size, or the guest stalls with
/// `floor`/`no_memory` (Normal cannot take all of the hog above the floor); a shrink never takes
/// Normal below the floor. At the end the hog has no errors and `check: ok`.
///
/// Runtime: about 34 s on the 2-core TCG development host.
#[test]
fn random_resizes_with_hog_on_every_cpu() {
    let seed = seed();
    eprintln!("random resizes: seed {seed} (replay with UNPLUG_SEED={seed})");
    let m = Machine::default()
        .smp(4)
        .without_virtio_mem()
        .with_virtio_mem(VirtioMem::new(2 * GIB))
        .bootargs(&format!("unplug_floor_mib={RANDOM_FLOOR_MIB}"));
    let mut vm = boot(&m);
    must_reach(&mut vm, 2 * GIB, "plug 2G");
    hog_start(&mut vm, RANDOM_HOG_MIB);
    let mut rng = Rng(seed);
    let mut last = 2 * GIB;
    let (mut reached, mut stalled) = (0, 0);
    let started = Instant::now();
    for step in 0..RANDOM_STEPS {
        let mut size = rng.below(2 * GIB / (64 * MIB) + 1) * 64 * MIB;
        if size == last {
            size = (size + 1024 * MIB) % (2 * GIB + 64 * MIB);
        }
        let plugged = qmp_dev(&mut vm).plugged_bytes;
        let what = format!(
            "seed {seed} step {step}: request {} -> {} MiB ({} MiB plugged)",
            last / MIB,
            size / MIB,
            plugged / MIB
        );
        let (before, _) = normal_free_and_movable_present(&mut vm);
        request(&mut vm, size);
        let (settled, mut w) = settle(&mut vm, size, MEMORY_SHORT, RANDOM_STEP, &what);
        if size < plugged {
            w.normal_free_before_kib = before;
            assert_floor_kept(&w, RANDOM_FLOOR_MIB * 1024, &what);
        }
        match settled {
            Settled::Reached => reached += 1,
            Settled::Stalled(..) => stalled += 1,
        }
        hog_status(&mut vm);
        last = size;
    }
    eprintln!(
        "seed {seed}: {RANDOM_STEPS} resizes in {:.2?}: {reached} reached, {stalled} stalled",
        started.elapsed()
    );
    hog_rounds_advance(&mut vm, &format!("after the random resizes (seed {seed})"));
    check_ok(&mut vm, &format!("after the random resizes (seed {seed})"));
    // No `hog stop` here: with 4 vCPUs it takes about a minute (a TLB flush per page); the other
    // tests stop their hogs.
    vm.poweroff_ok();
}

/// Plug 1G, read plugged memory with `peek` (a value), unplug to 0, `peek` the same addresses:
/// `peek: fault addr=…` (never stale data), and the shell goes on: `cpus`, `check`, and a plug
/// after it work.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn peek_of_unplugged_memory_faults() {
    let m = Machine::default();
    let mut vm = boot(&m);
    must_reach(&mut vm, GIB, "plug 1G");
    let addr = vmem(&mut vm).addr;
    let addrs = [addr, addr + 512 * MIB + 8, addr + GIB - 8];
    for a in addrs {
        let out = vm.cmd(&format!("peek 0x{a:x}")).text();
        assert!(
            out.starts_with(&format!("peek: 0x{a:x} = 0x")),
            "peek of plugged memory: `{out}`"
        );
    }
    must_reach(&mut vm, 0, "unplug 1G -> 0");
    for a in addrs {
        let out = vm.cmd(&format!("peek 0x{a:x}")).text();
        assert_eq!(
            out,
            format!("peek: fault addr=0x{a:x}"),
            "peek of unplugged memory"
        );
    }
    check_cpus(&m, &vm.records("cpus"));
    check_ok(&mut vm, "after peeks that faulted");
    must_reach(&mut vm, 512 * MIB, "plug 512M after the faults");
    let out = vm.cmd(&format!("peek 0x{addr:x}")).text();
    assert!(
        out.starts_with(&format!("peek: 0x{addr:x} = 0x")),
        "peek of re-plugged memory: `{out}`"
    );
    vm.poweroff_ok();
}

/// 1 GiB of boot RAM, plug 4G, `hog 2048`, request 1G: 2 GiB of data cannot fit in 1G plus
/// Normal above the floor. The kernel stays up, keeps every byte, and the device stops above 1G
/// with `vmem` saying why (`floor`/`no_memory`) and Normal free memory kept at the floor. After
/// `hog stop` the request completes.
///
/// Runtime: about 27 s on the 2-core TCG development host.
#[test]
fn boot_1g_hog_2048_request_1g_stops_above_floor() {
    let mut vm = boot(&Machine::default().ram(GIB));
    must_reach(&mut vm, 4 * GIB, "plug 4G");
    hog_start(&mut vm, 2048);
    let (_, _, w) = must_stall(&mut vm, GIB, MEMORY_SHORT, "4G -> 1G with hog 2048");
    assert_as_far_as_memory_allows(&mut vm, "4G -> 1G with hog 2048");
    assert_floor_kept(&w, FLOOR_KIB, "4G -> 1G with hog 2048");
    hog_rounds_advance(&mut vm, "while stalled");
    check_ok(&mut vm, "while stalled");
    hog_stop(&mut vm);
    match settle(&mut vm, GIB, &[], RESIZE, "1G after `hog stop`") {
        (Settled::Reached, _) => {}
        (other, _) => panic!("1G after `hog stop`: {other}"),
    }
    check_ok(&mut vm, "after `hog stop`");
    vm.poweroff_ok();
}
