//! The console protocol for scripts (README, "Console protocol") while the kernel logs heavily:
//! one prompt per command, after its output, never one between a command's echo and its output.
//!
//! The client is the library's [`hotmem_qemu::Console`], which is strict: a prompt between the
//! echo and the output, a second prompt, or an echo that is not the command fails the command
//! with a protocol error (and so the test). The log load is rapid QMP resizes at
//! `loglevel=debug` (every virtio-mem request and response is a log line, from the worker and
//! the device's interrupt), sent right before each command so that the log lines land while the
//! command's line is arriving, being echoed and run.
//!
//! One QEMU runs at a time (tests/common); the test boots its own machine.

mod common;

use std::time::Duration;

use common::{boot, check_ok, poll, qmp_dev, request, vmem_line, CMD};
use hotmem_qemu::{Machine, VirtioMem, GIB, MIB};

/// How many rounds; each runs every command of [`COMMANDS`] once, each right after a resize.
const ROUNDS: usize = 250;
/// The commands, and how each one's first output line starts (so a reply read for the wrong
/// command is caught too).
const COMMANDS: &[(&str, &str)] = &[
    ("check", "check: "),
    ("vmem", "id=vmem0 "),
    ("mem", "node="),
    ("hog status", "hog: "),
];

/// 1000 commands (`check`, `vmem`, `mem`, `hog status`), each right after a `qom-set` of a 2 MiB
/// block device between 0 and 1 GiB (a third of them 10 ms later, so the pass logs at the idle
/// prompt too), with `loglevel=debug`: every command's output is its own and is followed by
/// exactly one prompt, and the kernel logged while the commands ran (about 2400 log lines, most
/// of them between a command's echo and its prompt; the rest interrupt an idle prompt).
///
/// Runtime: about 10 s on the 2-core TCG development host.
#[test]
fn one_prompt_per_command_while_the_kernel_logs_heavily() {
    let m = Machine::default()
        .bootargs("loglevel=debug")
        .without_virtio_mem()
        .with_virtio_mem(VirtioMem::new(GIB).block_size(2 * MIB));
    let mut vm = boot(&m);
    let sizes = [
        512 * MIB,
        64 * MIB,
        GIB,
        0,
        256 * MIB,
        768 * MIB,
        2 * MIB,
        384 * MIB,
    ];
    let mut logs = 0;
    for round in 0..ROUNDS {
        for (i, (cmd, starts)) in COMMANDS.iter().enumerate() {
            request(&mut vm, sizes[(round * COMMANDS.len() + i) % sizes.len()]);
            if (round + i) % 3 == 0 {
                // Let the pass log at the idle prompt, before the line arrives.
                std::thread::sleep(Duration::from_millis(10));
            }
            let out = vm.cmd(cmd);
            logs += out.logs.len();
            let first = out.lines.first().map(String::as_str).unwrap_or_default();
            assert!(
                first.starts_with(starts),
                "round {round}: `{cmd}` printed {:?}",
                out.lines
            );
            if *cmd == "check" {
                assert_eq!(out.text(), "check: ok", "round {round}");
            }
        }
    }
    let transcript = vm.console().transcript();
    let all_logs = transcript.lines().filter(|l| l.starts_with('[')).count();
    eprintln!(
        "{} commands; {all_logs} log lines on the console, {logs} of them among the commands' \
         output",
        ROUNDS * COMMANDS.len()
    );
    assert!(
        logs >= ROUNDS,
        "the kernel must log while the commands run (saw {logs} log lines)"
    );
    // The device still converges and the model is sound after the storm.
    request(&mut vm, 0);
    poll(
        "vmem0 to converge at 0",
        4 * CMD,
        Duration::from_millis(200),
        || {
            let dev = qmp_dev(&mut vm);
            let line = vmem_line(&mut vm);
            if dev.plugged_bytes == 0 && line.plugged_kib == 0 && line.converged() {
                Ok(())
            } else {
                Err(format!("QMP {dev:?}, vmem `{line}`"))
            }
        },
    );
    check_ok(&mut vm, "after the resizes");
    vm.poweroff_ok();
}
