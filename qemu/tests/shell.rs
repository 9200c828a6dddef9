//! The console shell contract (echoed input, CRLF lines, a `hotmem> ` prompt after every
//! command, log lines apart), checked on a booted guest: `mem`, `cpus`, `fault`, bad input and
//! line editing. Each test boots its own machine; one QEMU runs at a time.

mod common;

use std::thread;
use std::time::Duration;

use common::{boot, check_cpus, check_mem, CMD, EXIT, QMP};
use hotmem_qemu::{Machine, VirtioMem, GIB, MIB, PANIC_MARKER};

/// `mem` on the default machine: the totals match the RAM QEMU was given, and the guest's view
/// agrees with QMP's `query-memory-size-summary`.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn mem_matches_qemu_ram() {
    let m = Machine::default();
    let mut vm = boot(&m);
    let mem = vm.mem();
    let total = check_mem(&m, &mem);
    let summary = vm
        .qmp()
        .memory_size_summary(QMP)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.base_bytes, m.boot_ram_bytes(), "QMP base-memory");
    assert_eq!(summary.plugged_bytes, 0, "QMP plugged-memory at boot");
    assert_eq!(
        total.present_kib,
        summary.base_bytes / 1024,
        "guest present_kib vs QMP base-memory"
    );
    vm.poweroff_ok();
}

/// `mem` with two NUMA nodes of different sizes: per-node present matches each node.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn mem_per_numa_node() {
    let m = Machine::default()
        .smp(2)
        .numa_nodes(&[384 * MIB, 640 * MIB])
        .without_virtio_mem()
        .with_virtio_mem(VirtioMem::new(GIB).node(1));
    let mut vm = boot(&m);
    let mem = vm.mem();
    check_mem(&m, &mem);
    vm.poweroff_ok();
}

/// `cpus` lists every CPU once, online, and every CPU's tick count grows.
///
/// Runtime: about 2 s on the 2-core TCG development host.
#[test]
fn cpus_all_online_and_ticking() {
    let m = Machine::default().smp(4);
    let mut vm = boot(&m);
    let before = check_cpus(&m, &vm.records("cpus"));
    thread::sleep(Duration::from_millis(1500));
    let after = check_cpus(&m, &vm.records("cpus"));
    for (cpu, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(a > b, "cpu {cpu}: ticks did not increase ({b} -> {a})");
    }
    vm.poweroff_ok();
}

/// `fault` prints a decoded exception dump, then `PANIC:`, and QEMU exits 0 by itself.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn fault_dumps_then_panics_and_powers_off() {
    let mut vm = boot(&Machine::default());
    let start = vm.console().position();
    vm.console().expect_panic(true);
    vm.console().send(b"fault\r").expect("send fault");
    vm.console()
        .wait_for(PANIC_MARKER, CMD)
        .unwrap_or_else(|e| panic!("waiting for the panic: {e}"));
    let status = vm
        .wait_exit(EXIT)
        .unwrap_or_else(|e| panic!("QEMU did not power off after the panic: {e}"));
    let text = vm.console().text_since(start);
    let panic_at = text.find(PANIC_MARKER).expect("PANIC: seen above");
    let dump = &text[..panic_at];
    for word in ["ESR", "FAR", "ELR"] {
        assert!(
            dump.contains(word),
            "exception dump lacks {word} before PANIC:"
        );
    }
    assert!(
        dump.to_ascii_lowercase().contains("data abort"),
        "exception dump does not name the class (Data Abort)"
    );
    let panic_line = vm.console().panic_line().expect("panic line");
    assert!(
        panic_line.starts_with(PANIC_MARKER),
        "the panic line must start with PANIC: `{panic_line}`"
    );
    assert!(status.success(), "QEMU exit status after panic: {status}");
}

/// Unknown commands and extra arguments get a message and a fresh prompt, never a panic.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn bad_input_gets_usage_not_panic() {
    let mut vm = boot(&Machine::default());
    for (input, want) in [
        ("nosuchcommand", &["unknown", "usage"][..]),
        ("mem extra args", &["usage"][..]),
    ] {
        let out = vm.cmd(input);
        let text = out.text().to_ascii_lowercase();
        assert!(
            want.iter().any(|w| text.contains(w)),
            "`{input}` should print one of {want:?}, printed: {:?}",
            out.lines
        );
    }
    // The shell still works after bad input.
    assert!(!vm.cmd("help").lines.is_empty(), "help prints nothing");
    vm.poweroff_ok();
}

/// Typing `memx`, backspace (DEL, 0x7f), Enter runs `mem`.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn backspace_edits_the_line() {
    let mut vm = boot(&Machine::default());
    // `command` matches the echo as a terminal renders it, so this only returns if the shell
    // echoed `mem` after editing.
    let edited = vm.cmd("memx\u{7f}");
    let plain = vm.cmd("mem");
    let without_free = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| {
                l.split_whitespace()
                    .filter(|t| !t.starts_with("free_kib="))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    assert!(!edited.lines.is_empty(), "edited command printed nothing");
    assert_eq!(
        without_free(&edited.lines),
        without_free(&plain.lines),
        "`memx<DEL>` must run `mem`"
    );
    vm.poweroff_ok();
}
