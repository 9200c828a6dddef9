//! Tasks and the scheduler: `ps` lists the kernel's tasks, `spin`
//! shows preemption on one CPU, tasks spread over several CPUs, and per-task address spaces
//! (each spin task's counter page sits at the same virtual address in its own TTBR0 space).

mod common;

use common::{boot, check_ok};
use hotmem_qemu::{Machine, Record};

fn by_name<'a>(ps: &'a [Record], name: &str) -> Vec<&'a Record> {
    ps.iter().filter(|r| r.is("name", name)).collect()
}

fn check_ps(ps: &[Record], cpus: u64) {
    for r in ps {
        for key in ["task", "cpu", "switches"] {
            r.u64(key).unwrap_or_else(|e| panic!("ps: {e}"));
        }
        // Stack high-water mark: `USED/SIZE` KiB, inside the stack; idle tasks run on
        // their CPU's boot stack; an exited task's stack may be freed (`-`).
        let stack = r.str("stack_kib").unwrap_or_else(|e| panic!("ps: {e}"));
        if r.is("name", "idle") {
            assert_eq!(stack, "boot");
        } else if stack != "-" || !r.is("state", "exited") {
            let (used, size) = stack.split_once('/').expect("stack_kib=USED/SIZE");
            let (used, size): (u64, u64) = (used.parse().unwrap(), size.parse().unwrap());
            assert!(used > 0 && used < size, "ps: stack_kib={stack}");
        }
        let state = r.str("state").unwrap_or_else(|e| panic!("ps: {e}"));
        assert!(
            ["running", "ready", "sleeping", "exited"].contains(&state),
            "ps: state={state}"
        );
    }
    let shell = by_name(ps, "shell");
    assert_eq!(shell.len(), 1, "one shell task");
    assert!(shell[0].is("state", "running"), "the shell runs `ps`");
    assert_eq!(by_name(ps, "worker").len(), 1, "one worker task");
    let idle = by_name(ps, "idle");
    assert_eq!(idle.len() as u64, cpus, "one idle task per CPU");
    let mut idle_cpus: Vec<u64> = idle.iter().map(|r| r.u64("cpu").unwrap()).collect();
    idle_cpus.sort();
    assert_eq!(idle_cpus, (0..cpus).collect::<Vec<_>>(), "idle tasks' CPUs");
}

/// Runs `spin <n> <ms>` and checks every task made progress in its own address space;
/// returns the union of the CPUs the tasks ran on.
fn spin(vm: &mut common::Vm, n: usize, ms: u64) -> u64 {
    let text = vm.cmd(&format!("spin {n} {ms}")).text();
    let out: Vec<Record> = text
        .lines()
        .filter_map(|l| l.strip_prefix("spin: "))
        .map(|l| Record::parse(l).unwrap_or_else(|e| panic!("spin: {e}\n{text}")))
        .collect();
    assert_eq!(out.len(), n, "one line per spin task");
    let mut cpus = 0;
    let mut asids = Vec::new();
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.u64("task").unwrap(), i as u64);
        let iters = r.u64("iterations").unwrap();
        assert!(iters > 1000, "spin task {i} barely ran: {iters} iterations");
        assert!(r.is("aspace", "ok"), "task {i}: its page lost its count");
        let c = r.get("cpus").expect("cpus=");
        cpus |= u64::from_str_radix(c.trim_start_matches("0x"), 16).expect("hex cpus");
        asids.push(r.u64("asid").unwrap());
    }
    asids.sort();
    asids.dedup();
    assert_eq!(asids.len(), n, "each task has its own ASID");
    cpus
}

/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn ps_lists_shell_worker_and_idle_tasks() {
    let mut vm = boot(&Machine::default().smp(2));
    check_ps(&vm.records("ps"), 2);
    vm.poweroff_ok();
}

/// One CPU, four busy tasks until the same deadline: without preemption the first would
/// take the whole time. The shell still answers afterwards, and exited tasks show as such.
///
/// Runtime: under 1 s on the 2-core TCG development host.
#[test]
fn preemption_on_one_cpu() {
    let mut vm = boot(&Machine::default().smp(1));
    let cpus = spin(&mut vm, 4, 500);
    assert_eq!(cpus, 1, "only cpu 0 exists");
    let ps = vm.records("ps");
    check_ps(&ps, 1);
    let spins = by_name(&ps, "spin");
    assert_eq!(spins.len(), 4);
    assert!(spins.iter().all(|r| r.is("state", "exited")));
    assert!(
        spins.iter().all(|r| r.u64("switches").unwrap() >= 5),
        "each spin task was preempted and resumed: {spins:?}"
    );
    // Again: exited tasks are reaped and their slots and stacks reused.
    spin(&mut vm, 4, 200);
    check_ok(&mut vm, "after the spin tasks");
    vm.poweroff_ok();
}

/// Four CPUs: busy tasks spread over more than one CPU.
///
/// Runtime: about 1 s on the 2-core TCG development host.
#[test]
fn tasks_run_on_several_cpus() {
    let mut vm = boot(&Machine::default().smp(4));
    let cpus = spin(&mut vm, 8, 1000);
    assert!(
        cpus.count_ones() > 1,
        "spin tasks ran only on cpus 0x{cpus:x}"
    );
    check_ps(&vm.records("ps"), 4);
    check_ok(&mut vm, "after the spin tasks");
    vm.poweroff_ok();
}
