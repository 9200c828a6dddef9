//! The sparse memory model on a booted guest: `mem`, `sections`, `check` and `memtest`
//! with one and two NUMA nodes and with DT reservations; `peek` of mapped and unmapped physical
//! addresses; `mem` across a `reboot`. One QEMU runs at a time (tests/common).
//!
//! DT reservations come from `tests/data/reserved.dtb`, booted with `-dtb` on the machine it was
//! dumped from (`Machine::default()`); `tests/data/regen.sh` says how it was made and what QEMU
//! keeps of a `-dtb` (everything but /memory and /chosen, reservations included).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{boot, check_cpus, check_mem, check_ok, Vm};
use hotmem_qemu::guest::{Mem, MemLine};
use hotmem_qemu::{Machine, KIB, MIB};

/// Where QEMU `virt` puts boot RAM.
const RAM_BASE: u64 = 0x4000_0000;
/// Sparse-memory section and subsection sizes.
const SECTION: u64 = 128 * MIB;
const SUBSECTION: u64 = 2 * MIB;
/// What `memtest` leaves free: the heap and the shell must still work during it.
const MEMTEST_HEADROOM_MIB: u64 = 16;
/// How far `free_kib` may drift after a `memtest` (pages the heap keeps).
const FREE_DRIFT_KIB: u64 = 256;
/// `memtest` of ~500 MiB under TCG on a shared host.
const MEMTEST: Duration = Duration::from_secs(180);

/// The reservations in `tests/data/reserved.dts`.
const RESERVED_MEMORY: (u64, u64) = (0x5000_0000, 16 * MIB); // /reserved-memory static child
const MEMRESERVE: (u64, u64) = (0x5800_0000, 4 * MIB); // /memreserve/

fn data_file(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "data", name]
        .iter()
        .collect();
    assert!(
        p.is_file(),
        "{} missing (see tests/data/regen.sh)",
        p.display()
    );
    p.display().to_string()
}

/// `machine` booted with the device tree `tests/data/<name>` instead of QEMU's own.
fn with_dtb(machine: Machine, name: &str) -> Machine {
    machine.extra_arg("-dtb").extra_arg(&data_file(name))
}

fn total(mem: &Mem) -> &MemLine {
    mem.total().unwrap_or_else(|e| panic!("{e}"))
}

/// Boot memory per node as `(node, start, end)`: QEMU lays the nodes out in order from
/// [`RAM_BASE`].
fn node_ranges(machine: &Machine) -> Vec<(u64, u64, u64)> {
    let sizes: Vec<u64> = if machine.numa.is_empty() {
        vec![machine.ram_bytes]
    } else {
        machine.numa.iter().map(|n| n.size_bytes).collect()
    };
    let mut start = RAM_BASE;
    (0u64..)
        .zip(sizes)
        .map(|(node, size)| {
            let r = (node, start, start + size);
            start += size;
            r
        })
        .collect()
}

/// The `sections` lines a freshly booted `machine` must print: one per 128 MiB section that
/// boot RAM touches, in order, online in zone Normal of its node, every present subsection
/// online, none isolated.
fn expected_sections(machine: &Machine) -> Vec<String> {
    let mut lines = Vec::new();
    for (node, start, end) in node_ranges(machine) {
        assert!(
            start % SECTION == 0 && end % SECTION == 0,
            "test machines keep NUMA nodes section-aligned"
        );
        for s in start / SECTION..end / SECTION {
            let (a, b) = (s * SECTION, (s + 1) * SECTION);
            let subs = (b.min(end) - a.max(start)) / SUBSECTION;
            lines.push(format!(
                "section={s} start={a:#x} end={b:#x} node={node} zone=Normal state=online-boot \
                 subsections={subs}/64 online={subs}/64 isolated=0/64"
            ));
        }
    }
    lines
}

/// `mem` right after boot: the common checks plus what the sparse model adds: Normal holds each
/// node's RAM, Movable is empty, both zones listed per node.
fn check_boot_mem(machine: &Machine, mem: &Mem) {
    check_mem(machine, mem);
    for (node, start, end) in node_ranges(machine) {
        let zone = |z: &str| {
            mem.zone(node, z)
                .unwrap_or_else(|| panic!("mem: no node={node} zone={z} line"))
        };
        let normal = zone("Normal");
        assert_eq!(
            normal.present_kib,
            (end - start) / KIB,
            "mem: node {node} Normal present_kib must be all of the node's RAM: `{normal}`"
        );
        let movable = zone("Movable");
        for (key, value) in [
            ("present_kib", movable.present_kib),
            ("managed_kib", movable.managed_kib),
            ("free_kib", movable.free_kib),
        ] {
            assert_eq!(
                value, 0,
                "mem: node {node} Movable must be empty at boot ({key}): `{movable}`"
            );
        }
    }
}

/// `memtest` of all free memory but [`MEMTEST_HEADROOM_MIB`]; then `check: ok` and free memory
/// back to where it was. Returns the MiB tested.
fn memtest_most_of_free(vm: &mut Vm) -> u64 {
    let free_before = total(&vm.mem()).free_kib;
    let mib = (free_before / 1024)
        .checked_sub(MEMTEST_HEADROOM_MIB)
        .filter(|&m| m > 0)
        .unwrap_or_else(|| panic!("only {free_before} KiB free"));
    let cmd = format!("memtest {mib}");
    let out = vm
        .console()
        .command(&cmd, MEMTEST)
        .unwrap_or_else(|e| panic!("`{cmd}`: {e}"));
    assert_eq!(
        out.lines,
        [format!("memtest: ok mib={mib}")],
        "`{cmd}` with {free_before} KiB free"
    );
    check_ok(vm, "after memtest");
    let free_after = total(&vm.mem()).free_kib;
    assert!(
        free_after.abs_diff(free_before) <= FREE_DRIFT_KIB,
        "free_kib {free_before} before `{cmd}`, {free_after} after (allowed drift \
         {FREE_DRIFT_KIB} KiB)"
    );
    mib
}

/// The whole memory-model check of one freshly booted machine.
fn check_memory_model(machine: &Machine) {
    let mut vm = boot(machine);
    check_ok(&mut vm, "after boot");
    let mem = vm.mem();
    check_boot_mem(machine, &mem);
    let sections: Vec<String> = vm
        .records("sections")
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(sections, expected_sections(machine), "sections");
    memtest_most_of_free(&mut vm);
    vm.poweroff_ok();
}

/// The default machine (512 MiB, one node, virtio-mem with nothing plugged): sections 8..11.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn one_node_mem_sections_memtest() {
    let m = Machine::default();
    assert_eq!(expected_sections(&m).len(), 4);
    check_memory_model(&m);
}

/// Two NUMA nodes of different sizes: node 0 owns sections 8..9, node 1 sections 10..12.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn two_nodes_mem_sections_memtest() {
    let m = Machine::default().numa_nodes(&[256 * MIB, 384 * MIB]);
    check_memory_model(&m);
}

/// `/reserved-memory` (16 MiB) and `/memreserve/` (4 MiB) through `-dtb`: managed memory drops by
/// exactly the reserved size against the same DTB without them; `memtest` of nearly all free
/// memory never touches the reservations (they read zero after it, while free memory next to
/// them holds the test pattern); the reserved ranges are still RAM and `peek` reads them.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn dt_reservations_are_not_managed() {
    let m = Machine::default();
    let baseline = {
        let plain = with_dtb(m.clone(), "plain.dtb");
        let mut vm = boot(&plain);
        let mem = vm.mem();
        check_boot_mem(&plain, &mem);
        vm.poweroff_ok();
        total(&mem).managed_kib
    };

    let reserved = with_dtb(m, "reserved.dtb");
    let mut vm = boot(&reserved);
    check_ok(&mut vm, "after boot");
    let mem = vm.mem();
    let t = total(&mem);
    assert_eq!(t.present_kib, reserved.boot_ram_bytes() / KIB);
    let managed = t.managed_kib;
    let reserved_kib = (RESERVED_MEMORY.1 + MEMRESERVE.1) / KIB;
    assert!(
        managed + reserved_kib <= baseline,
        "managed_kib {managed} with the reservations, {baseline} without: want at least \
         {reserved_kib} KiB less"
    );
    // Not much more either: the early allocator may round, but not lose megabytes.
    assert!(
        managed + reserved_kib + 1024 > baseline,
        "managed_kib {managed} with the reservations, {baseline} without: more than \
         {reserved_kib} + 1024 KiB lost"
    );
    eprintln!("managed_kib: {baseline} without the reservations, {managed} with them");
    let sections: Vec<String> = vm
        .records("sections")
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(sections, expected_sections(&reserved), "sections");

    // Reserved memory is RAM: mapped, readable, and (QEMU zeroes RAM) zero.
    let probes = [
        RESERVED_MEMORY.0,
        RESERVED_MEMORY.0 + RESERVED_MEMORY.1 - 8,
        MEMRESERVE.0,
        MEMRESERVE.0 + MEMRESERVE.1 - 8,
    ];
    for pa in probes {
        assert_eq!(
            peek(&mut vm, pa),
            Ok(0),
            "peek {pa:#x} (reserved) before memtest"
        );
    }
    memtest_most_of_free(&mut vm);
    for pa in probes {
        assert_eq!(
            peek(&mut vm, pa),
            Ok(0),
            "peek {pa:#x}: memtest wrote into reserved memory"
        );
    }
    // The probe can see memtest's writes: free pages right after each reservation hold its
    // pattern now (if not, this test could not notice a reservation being handed out).
    let written = [
        RESERVED_MEMORY.0 + RESERVED_MEMORY.1,
        MEMRESERVE.0 + MEMRESERVE.1,
    ]
    .iter()
    .filter(|&&pa| peek(&mut vm, pa).is_ok_and(|v| v != 0))
    .count();
    assert!(
        written > 0,
        "memtest left no trace next to the reservations"
    );
    vm.poweroff_ok();
}

/// `peek <pa>`: `Ok(value)` or `Err(fault address)`; panics on any other output.
fn peek(vm: &mut Vm, pa: u64) -> Result<u64, u64> {
    let out = vm.cmd(&format!("peek {pa:#x}"));
    let [line] = out.lines.as_slice() else {
        panic!("peek {pa:#x}: want one line, got {:?}", out.lines);
    };
    let hex = |s: &str| {
        s.strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or_else(|| panic!("peek {pa:#x}: bad number in `{line}`"))
    };
    if let Some(rest) = line.strip_prefix("peek: fault addr=") {
        return Err(hex(rest));
    }
    let (addr, value) = line
        .strip_prefix("peek: ")
        .and_then(|r| r.split_once(" = "))
        .unwrap_or_else(|| panic!("peek {pa:#x}: unexpected `{line}`"));
    assert_eq!(hex(addr), pa, "peek {pa:#x}: address echoed in `{line}`");
    assert_eq!(
        value.len(),
        18,
        "peek {pa:#x}: want 16 hex digits in `{line}`"
    );
    Ok(hex(value))
}

/// `peek` reads the kernel image where QEMU loaded it (0x4008_0000: the bytes of
/// target/hotmem.img), reports a fault for unmapped physical addresses without panicking, and
/// rejects unaligned addresses; the shell keeps working after all of it.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn peek_ram_and_unmapped() {
    let image = std::fs::read(hotmem_qemu::default_image()).expect("read the kernel image");
    let word = |off: usize| u64::from_le_bytes(image[off..off + 8].try_into().unwrap());
    let m = Machine::default(); // 512 MiB: RAM ends at 0x6000_0000
    let mut vm = boot(&m);
    const LOAD: u64 = 0x4008_0000;
    for off in [0usize, 0x1000] {
        let want = word(off);
        assert_ne!(want, 0, "image word at {off:#x}");
        assert_eq!(
            peek(&mut vm, LOAD + off as u64),
            Ok(want),
            "peek of the kernel image at {:#x}",
            LOAD + off as u64
        );
    }
    // Last word of RAM.
    assert!(peek(&mut vm, RAM_BASE + m.ram_bytes - 8).is_ok());
    for pa in [0x7fff_0000_0000u64, 0x1_0000_0000, RAM_BASE + m.ram_bytes] {
        assert_eq!(peek(&mut vm, pa), Err(pa), "peek {pa:#x} (not RAM)");
        check_cpus(&m, &vm.records("cpus"));
    }
    let out = vm.cmd("peek 0x40080001");
    assert!(
        out.text().starts_with("usage:"),
        "unaligned peek: {:?}",
        out.lines
    );
    check_ok(&mut vm, "after the peeks");
    vm.poweroff_ok();
}

/// `reboot` resets through PSCI: the kernel boots again (its banner, then a fresh prompt) and
/// `mem` reads the same as on the first boot.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn reboot_boots_again_with_same_mem() {
    let m = Machine::default();
    let mut vm = boot(&m);
    let before = vm.mem();
    check_boot_mem(&m, &before);
    let start = vm.console().position();
    vm.console().send(b"reboot\r").expect("send reboot");
    vm.wait_reboot("reboot");
    let text = vm.console().text_since(start);
    let banners = text
        .lines()
        .filter(|l| l.contains("] hotmem ") && l.trim_end().ends_with(" booting"))
        .count();
    assert_eq!(banners, 1, "want one boot banner after reboot:\n{text}");
    assert!(vm.try_exit_status().is_none(), "QEMU exited on reboot");
    let after = vm.mem();
    check_boot_mem(&m, &after);
    let strip = |mem: &Mem| -> Vec<String> { mem.lines().iter().map(|r| r.to_string()).collect() };
    assert_eq!(
        strip(&after),
        strip(&before),
        "mem after reboot vs first boot"
    );
    check_ok(&mut vm, "after reboot");
    vm.poweroff_ok();
}
