//! Shared helpers of the QEMU integration tests.
//!
//! - One QEMU at a time: [`boot`] takes a process-wide lock that the returned [`Vm`] holds until
//!   it is dropped, so plain `cargo test` (parallel test threads) is safe. Cargo runs test binaries
//!   one after the other, so this covers the whole run.
//! - Failing tests explain themselves: helpers panic with the step that failed, and [`Vm`]'s
//!   `Drop` prints [`Qemu::report`] (command line, QEMU stderr, QMP transcript, console tail)
//!   while the thread is panicking; cargo shows it with the failure.
//! - A missing kernel image fails every test with "run `make kernel`"; nothing is skipped.
//!
//! The checks that several test files share (what `mem` and `cpus` must print for a machine,
//! `check: ok`) live here too. Guest output is read through the library's typed view
//! ([`hotmem_qemu::guest`]); [`Vm`] wraps its commands so that a failure panics with the step.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hotmem_qemu::guest::{self, Mem, MemLine, MemNode, Vmem, VmemLine};
use hotmem_qemu::{CommandOutput, LaunchOptions, Machine, Qemu, Record, VirtioMemInfo, MIB};

/// Boot to the first prompt (TCG is slow; 16 GiB guests and 8 vCPUs on 2 host cores).
pub const BOOT: Duration = Duration::from_secs(90);
/// One shell command.
pub const CMD: Duration = Duration::from_secs(30);
/// One QMP command.
pub const QMP: Duration = Duration::from_secs(10);
/// QEMU exiting after poweroff or panic.
pub const EXIT: Duration = Duration::from_secs(30);

static ONE_QEMU_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A booted guest; prints the harness report if the test panics while it is alive.
pub struct Vm {
    // Declared first so QEMU is killed before the lock is released.
    pub qemu: Qemu,
    _exclusive: MutexGuard<'static, ()>,
}

impl Deref for Vm {
    type Target = Qemu;
    fn deref(&self) -> &Qemu {
        &self.qemu
    }
}

impl DerefMut for Vm {
    fn deref_mut(&mut self) -> &mut Qemu {
        &mut self.qemu
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("\n{}", self.qemu.report());
        }
    }
}

/// Starts `machine` and waits for the first `hotmem> ` prompt.
pub fn boot(machine: &Machine) -> Vm {
    boot_with(machine, &LaunchOptions::default())
}

/// [`boot`] with launch options (a wrapper command, another image).
pub fn boot_with(machine: &Machine, options: &LaunchOptions) -> Vm {
    let exclusive = ONE_QEMU_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let qemu = Qemu::launch_with(machine, options)
        .unwrap_or_else(|e| panic!("launching [{machine}]: {e}"));
    let mut vm = Vm {
        qemu,
        _exclusive: exclusive,
    };
    let took = vm
        .qemu
        .wait_for_boot(BOOT)
        .unwrap_or_else(|e| panic!("booting [{machine}]: {e}"));
    eprintln!("[{machine}] prompt after {took:.2?}");
    vm
}

impl Vm {
    /// Runs a shell command; panics (with the report) if it fails.
    pub fn cmd(&mut self, cmd: &str) -> CommandOutput {
        self.qemu
            .console()
            .command(cmd, CMD)
            .unwrap_or_else(|e| panic!("shell command `{cmd}`: {e}"))
    }

    /// Runs a shell command whose output is `key=value` records.
    pub fn records(&mut self, cmd: &str) -> Vec<Record> {
        let out = self.cmd(cmd);
        out.records()
            .unwrap_or_else(|e| panic!("output of `{cmd}` is not records: {e}\n{}", out.text()))
    }

    /// `mem`, typed.
    pub fn mem(&mut self) -> Mem {
        guest::mem(self.qemu.console(), CMD).unwrap_or_else(|e| panic!("shell command `mem`: {e}"))
    }

    /// `vmem`, typed; the guest must already show its devices.
    pub fn vmem(&mut self) -> Vmem {
        guest::vmem(self.qemu.console(), CMD)
            .unwrap_or_else(|e| panic!("shell command `vmem`: {e}"))
    }

    /// The record after `prefix` on the only output line of `cmd` (`pin: pinned pages=...`).
    pub fn one_record(&mut self, cmd: &str, prefix: &str) -> Record {
        let line = guest::one_line(self.qemu.console(), cmd, CMD)
            .unwrap_or_else(|e| panic!("shell command `{cmd}`: {e}"));
        Record::parse_after(&line, prefix).unwrap_or_else(|e| panic!("`{cmd}`: {e}"))
    }

    /// Waits for the boot banner and a fresh prompt after a reset; `after` names the reset.
    pub fn wait_reboot(&mut self, after: &str) {
        guest::wait_reboot(self.qemu.console(), BOOT)
            .unwrap_or_else(|e| panic!("no reboot after {after}: {e}"));
    }

    /// `poweroff`; QEMU must exit with status 0 and no panic.
    pub fn poweroff_ok(&mut self) -> ExitStatus {
        let status = self
            .qemu
            .poweroff(EXIT)
            .unwrap_or_else(|e| panic!("poweroff: {e}"));
        assert!(status.success(), "QEMU exited with {status} after poweroff");
        if let Some(line) = self.qemu.console().panic_line() {
            panic!("panic during poweroff: {line}");
        }
        status
    }
}

/// The single virtio-mem device as QMP sees it.
pub fn qmp_dev(vm: &mut Vm) -> VirtioMemInfo {
    let devs = vm
        .qmp()
        .virtio_mem_devices(QMP)
        .unwrap_or_else(|e| panic!("query-memory-devices: {e}"));
    match devs.as_slice() {
        [d] => d.clone(),
        _ => panic!("QMP: want one virtio-mem device, got {devs:?}"),
    }
}

/// The single `vmem` line.
pub fn vmem_line(vm: &mut Vm) -> VmemLine {
    let vmem = vm.vmem();
    match vmem.devices.as_slice() {
        [r] => r.clone(),
        _ => panic!("vmem: want one line:\n{vmem}"),
    }
}

/// QMP `qom-set vm0 requested-size <bytes>`.
pub fn request(vm: &mut Vm, bytes: u64) {
    guest::resize(vm.qmp(), 0, bytes, QMP)
        .unwrap_or_else(|e| panic!("qom-set vm0 requested-size {bytes}: {e}"));
}

/// Checks a `mem` report against the machine QEMU was given and returns the total line.
///
/// - one line per node and zone (`Normal` or `Movable`), plus exactly one `node=all zone=all`;
/// - per line `free_kib <= managed_kib <= present_kib`;
/// - total present equals the machine's boot RAM; total managed is below present (the kernel
///   image, DTB and mem_map are not managed) but not by more than 16 MiB + present/64;
/// - per-node lines add up to the total; each node's present equals its NUMA size (a single
///   node 0 without NUMA).
pub fn check_mem(machine: &Machine, mem: &Mem) -> MemLine {
    let mut totals = Vec::new();
    let mut per_node: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut sum_present, mut sum_managed) = (0u64, 0u64);
    let mut seen = std::collections::BTreeSet::new();
    for r in mem.lines() {
        let (present, managed, free) = (r.present_kib, r.managed_kib, r.free_kib);
        assert!(
            managed <= present && free <= managed,
            "mem: want free <= managed <= present in `{r}`"
        );
        let MemNode::Node(node) = r.node else {
            assert_eq!(r.zone, "all", "mem: total line must be zone=all: `{r}`");
            totals.push(r.clone());
            continue;
        };
        assert!(
            r.zone == "Normal" || r.zone == "Movable",
            "mem: zone must be Normal or Movable: `{r}`"
        );
        assert!(seen.insert((node, r.zone.clone())), "mem: duplicate `{r}`");
        *per_node.entry(node).or_default() += present;
        sum_present += present;
        sum_managed += managed;
    }
    assert_eq!(totals.len(), 1, "mem: want exactly one node=all line");
    let total = totals.pop().unwrap();
    let (present, managed) = (total.present_kib, total.managed_kib);
    let ram_kib = machine.boot_ram_bytes() / 1024;
    assert_eq!(
        present, ram_kib,
        "mem: total present_kib != RAM given to QEMU"
    );
    assert!(
        managed < present,
        "mem: managed_kib must exclude the kernel, DTB and mem_map"
    );
    let bound_kib = 16 * MIB / 1024 + present / 64;
    assert!(
        managed > present - bound_kib,
        "mem: managed_kib {managed} is more than {bound_kib} KiB below present_kib {present}"
    );
    assert_eq!(
        sum_present, present,
        "mem: node lines' present_kib must add up to the total"
    );
    assert_eq!(
        sum_managed, managed,
        "mem: node lines' managed_kib must add up to the total"
    );
    let want_nodes: BTreeMap<u64, u64> = if machine.numa.is_empty() {
        BTreeMap::from([(0, ram_kib)])
    } else {
        (0u64..)
            .zip(&machine.numa)
            .map(|(i, n)| (i, n.size_bytes / 1024))
            .collect()
    };
    assert_eq!(per_node, want_nodes, "mem: present_kib per node (KiB)");
    total
}

/// Checks a `cpus` report: one `cpu=N mpidr=0x… online=1 ticks=N` line per CPU, `cpu` 0..smp in
/// order, distinct MPIDRs. Returns the ticks by CPU.
pub fn check_cpus(machine: &Machine, cpus: &[Record]) -> Vec<u64> {
    assert_eq!(
        cpus.len(),
        machine.smp as usize,
        "cpus: want one line per CPU (-smp {})",
        machine.smp
    );
    let mut mpidrs = std::collections::BTreeSet::new();
    cpus.iter()
        .enumerate()
        .map(|(i, r)| {
            let get = |k: &str| r.u64(k).unwrap_or_else(|e| panic!("cpus: {e}"));
            assert_eq!(get("cpu"), i as u64, "cpus: line {i} is `{r}`");
            assert!(
                r.str("mpidr").is_ok_and(|m| m.starts_with("0x")),
                "cpus: mpidr must be hex in `{r}`"
            );
            assert!(
                mpidrs.insert(get("mpidr")),
                "cpus: duplicate mpidr in `{r}`"
            );
            assert_eq!(get("online"), 1, "cpus: `{r}` is not online");
            get("ticks")
        })
        .collect()
}

/// Calls `attempt` until it returns `Ok`, every `every`, for at most `timeout`; panics with `what`
/// and the last `Err` (which should say what was seen) when the deadline passes. Returns the value
/// and how long it took.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let started = std::time::Instant::now();
    let deadline = hotmem_qemu::Deadline::after(timeout);
    loop {
        match attempt() {
            Ok(v) => return (v, started.elapsed()),
            Err(last) if deadline.expired() => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// [`poll`] over one reading: calls `read` until `done` holds for what it returned, and returns
/// that reading and how long it took; the panic at the deadline shows the last reading.
pub fn poll_until<T: fmt::Display>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut read: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> (T, Duration) {
    poll(what, timeout, every, || {
        let seen = read();
        if done(&seen) {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    })
}

/// `key` summed over the lines of `zone` (all nodes) of a `mem` report (panics with it).
pub fn zone_sum(mem: &Mem, zone: &str, key: fn(&MemLine) -> u64) -> u64 {
    mem.zone_sum(zone, key)
        .unwrap_or_else(|e| panic!("{e}:\n{mem}"))
}

/// The numeric field `key` of a record (panics with the parse error).
pub fn field(r: &Record, key: &str) -> u64 {
    r.u64(key).unwrap_or_else(|e| panic!("{e}"))
}

/// `check` prints exactly `check: ok`; `when` says at which step (for the failure message).
pub fn check_ok(vm: &mut Vm, when: &str) {
    guest::check(vm.qemu.console(), CMD).unwrap_or_else(|e| panic!("`check` {when}: {e}"));
}
