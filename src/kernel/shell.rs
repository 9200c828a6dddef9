//! Executes shell commands (parsing and line editing are in `hotmem::shell`) and prints
//! their records.
//!
//! Model: the glue modules do the work and return plain data (snapshots of the memory
//! model, the tasks, the CPUs and the virtio-mem devices; what the hog, `spin` and
//! `memtest` did); this module turns it into the console's lines, one `key=value` record
//! per line, in the order the commands always printed them. So every line the console
//! contract (`hotmem::shell`) covers is written here. Nothing is printed while a lock of
//! another module is held: snapshots are taken first.
//!
//! The shell is one task reading the console; it runs one command at a time to the end
//! (a command may sleep, e.g. `spin` and `hog stop` wait for their tasks).

use super::mem::{self, MemtestError};
use super::spin_test::{self, SpinFailure};
use super::{console, cpus, hog, inject, msi, task, vmem};
use crate::println;
use core::fmt::Display;
use hotmem::mm::{SectionInfo, ZoneStats, ZoneType};
use hotmem::shell::{self, Command, LineEditor, PROMPT};
use hotmem_arch::layout::{self, PAGE_SIZE};
use hotmem_arch::pgtable::MemType;
use hotmem_arch::{exception, lockstat, mmu, psci, tlb};

pub fn run() -> ! {
    let mut ed = LineEditor::default();
    loop {
        console::prompt(PROMPT);
        let line = console::read_line(&mut ed);
        match shell::parse(&line) {
            Ok(cmd) => execute(cmd),
            Err(e) => println!("{e}"),
        }
    }
}

fn execute(cmd: Command) {
    match cmd {
        Command::Empty => {}
        Command::Help => {
            for (c, what) in shell::HELP {
                println!("{c:<16} {what}");
            }
        }
        Command::Cpus => {
            // `tlbi`: broadcast TLB invalidations the CPU issued; `tlbi_range`: whether they
            // use range instructions (FEAT_TLBIRANGE, the same on every CPU).
            let range = tlb::has_range() as u8;
            for (i, c) in cpus::records().enumerate() {
                println!(
                    "cpu={i} mpidr=0x{:x} online={} ticks={} tlbi={} tlbi_range={range}",
                    c.mpidr,
                    c.online as u8,
                    c.ticks,
                    tlb::broadcasts(i)
                );
            }
        }
        Command::Irqs => {
            // One record per source; `vector` is the MSI-X table entry ("-" when wired).
            for (s, count) in msi::sources() {
                let vector = s
                    .vector
                    .map_or(alloc::string::String::from("-"), |v| alloc::format!("{v}"));
                println!(
                    "irq source={} kind={} intid={} count={count} vector={vector}",
                    s.name,
                    s.kind.name(),
                    s.intid
                );
            }
        }
        Command::Fault => {
            // Inside the linear map's range but above any RAM or device: never mapped.
            let va = hotmem_arch::layout::phys_to_virt(0x7fff_0000_0000);
            println!("fault: reading unmapped address 0x{va:x}");
            // SAFETY: deliberately unsound: the read faults, and the exception handler
            // prints the dump and panics; execution never continues past it.
            let v = unsafe { core::ptr::read_volatile(va as *const u64) };
            println!("fault: read 0x{v:x} (unexpected)");
        }
        Command::Peek { pa } => {
            // Device registers can have read side effects (a UART's data register pops a
            // byte): only RAM is read.
            let device = matches!(
                mmu::translate_linear(pa),
                Some((_, a)) if a.mem == MemType::Device
            );
            match linear_va(pa) {
                _ if device => println!("peek: refused addr=0x{pa:x} (device memory)"),
                Some(va) => match exception::probe_read_u64(va) {
                    Some(v) => println!("peek: 0x{pa:x} = 0x{v:016x}"),
                    None => println!("peek: fault addr=0x{pa:x}"),
                },
                None => println!("peek: fault addr=0x{pa:x}"),
            }
        }
        Command::Poweroff => {
            println!("poweroff: bye");
            psci::system_off();
        }
        Command::Reboot => {
            println!("reboot: resetting");
            psci::system_reset();
        }
        Command::Mem => cmd_mem(),
        Command::Sections => cmd_sections(),
        Command::Check => cmd_check(),
        Command::Vmem => cmd_vmem(),
        Command::VmemWait { dev, timeout_ms } => cmd_vmem_wait(dev, timeout_ms),
        Command::VmemState { dev, addr, size } => cmd_vmem_state(dev, addr, size),
        Command::Memtest { mib } => cmd_memtest(mib),
        Command::MemtestSample => cmd_memtest_sample(),
        Command::Ps => cmd_ps(),
        Command::HogStart { mib, tasks } => cmd_hog_start(mib, tasks),
        Command::HogStatus => cmd_hog_status(),
        Command::HogStop => cmd_hog_stop(),
        Command::Pin { mib } => cmd_pin(mib),
        Command::Unpin => cmd_unpin(),
        Command::Spin { tasks, ms } => cmd_spin(tasks as usize, ms),
        Command::Inject(c) => cmd_inject(c),
        Command::VmemStats => cmd_vmem_stats(),
        Command::VmemStatsReset => {
            hotmem::vmem::stats::reset();
            println!("vmem stats: reset");
        }
        Command::Locks => cmd_locks(),
        Command::LocksReset => {
            lockstat::reset_all();
            println!("locks: reset");
        }
    }
}

/// `locks`: one record per lock class, in the order of their first hold. The summaries are
/// taken first (lock-free reads of the counters), then printed.
fn cmd_locks() {
    let hz = hotmem_arch::timer::frequency_hz();
    let mut all: arrayvec::ArrayVec<lockstat::Summary, { lockstat::MAX_CLASSES }> =
        arrayvec::ArrayVec::new();
    all.extend(lockstat::classes().map(|c| c.summary()));
    for s in &all {
        println!(
            "lock={} holds={} max_us={} p99_us={}",
            s.name,
            s.holds,
            lockstat::ticks_to_us_ceil(s.max_ticks, hz),
            lockstat::ticks_to_us_ceil(s.p99_ticks, hz)
        );
    }
}

/// Linear-map address of `pa`, if the linear map can cover it.
fn linear_va(pa: u64) -> Option<u64> {
    (pa < 1 << layout::SUPPORTED_PA_BITS).then(|| layout::phys_to_virt(pa))
}

// ---------------------------------------------------------------------------------------
// The memory model: `mem`, `sections`, `check`, `memtest`

fn no_model(cmd: &str) {
    println!("{cmd}: the memory model is not initialised");
}

fn kib(pages: u64) -> u64 {
    pages * (PAGE_SIZE / 1024)
}

fn zone_name(z: Option<ZoneType>) -> &'static str {
    match z {
        Some(ZoneType::Normal) => "Normal",
        Some(ZoneType::Movable) => "Movable",
        None => "all",
    }
}

fn print_zone(node: &dyn Display, z: &ZoneStats, limits: Option<mem::Limits>) {
    let limits = limits.map(|l| (l.reserve_bytes / 1024, l.floor_bytes / 1024));
    match limits {
        None => println!(
            "node={} zone={} present_kib={} managed_kib={} free_kib={}",
            node,
            zone_name(z.zone),
            kib(z.present_pages),
            kib(z.managed_pages),
            kib(z.free_pages)
        ),
        Some((reserve_kib, floor_kib)) => println!(
            "node={} zone={} present_kib={} managed_kib={} free_kib={} reserve_kib={} floor_kib={}",
            node,
            zone_name(z.zone),
            kib(z.present_pages),
            kib(z.managed_pages),
            kib(z.free_pages),
            reserve_kib,
            floor_kib
        ),
    }
}

fn cmd_mem() {
    let Some((zones, total, limits)) = mem::zone_stats() else {
        return no_model("mem");
    };
    for z in &zones {
        print_zone(&z.node, z, None);
    }
    // The total line also carries the kernel reserve and the floor.
    print_zone(&"all", &total, Some(limits));
}

fn cmd_sections() {
    let mut next = 0u64;
    loop {
        let Some(batch) = mem::sections_from(next) else {
            return no_model("sections");
        };
        let Some(last) = batch.last() else { return };
        next = last.nr.0 + 1;
        print_sections(&batch);
    }
}

fn print_sections(secs: &[SectionInfo]) {
    for s in secs {
        let state = if s.boot { "boot" } else { "hotplug" };
        println!(
            "section={} start=0x{:x} end=0x{:x} node={} zone={} state={}-{} subsections={}/64 online={}/64 isolated={}/64",
            s.nr.0,
            s.start.0,
            s.end.0,
            s.node,
            match s.zone {
                Some(z) => zone_name(Some(z)),
                None => "none",
            },
            s.state,
            state,
            s.subsections_present,
            s.subsections_online,
            s.pageblocks_isolated
        );
    }
}

/// `check: ok`, or `check: FAIL <reason>` for a broken invariant of the model; heap
/// allocations attempted while holding the memory-model lock fail it too
/// (`heap_allocs_under_mm_lock=N` appended).
fn cmd_check() {
    let under_lock = super::heap::allocs_under_mm_lock();
    match (mem::check(), under_lock) {
        (Some(Ok(())), 0) => println!("check: ok"),
        (Some(Ok(())), n) => println!("check: FAIL heap_allocs_under_mm_lock={n}"),
        (Some(Err(reason)), 0) => println!("check: FAIL {reason}"),
        (Some(Err(reason)), n) => {
            println!("check: FAIL {reason} heap_allocs_under_mm_lock={n}")
        }
        (None, _) => no_model("check"),
    }
}

fn cmd_memtest(mib: u64) {
    match mem::memtest(mib) {
        Ok(()) => println!("memtest: ok mib={mib}"),
        Err(e) => print_memtest_failure(e),
    }
}

fn cmd_memtest_sample() {
    match mem::memtest_sample() {
        Ok(r) => println!("memtest: ok sections={} busy={}", r.sections, r.busy),
        Err(e) => print_memtest_failure(e),
    }
}

fn print_memtest_failure(e: MemtestError) {
    match e {
        MemtestError::NoModel => println!("memtest: FAIL the memory model is not initialised"),
        MemtestError::OutOfMemory { got_mib, mib } => {
            println!("memtest: FAIL out of memory after {got_mib} of {mib} MiB")
        }
        MemtestError::Mismatch {
            pa,
            expected,
            found,
        } => println!("memtest: FAIL addr=0x{pa:x} expected=0x{expected:x} got=0x{found:x}"),
    }
}

// ---------------------------------------------------------------------------------------
// Devices and tasks: `vmem`, `ps`, `spin`

fn cmd_vmem() {
    print_vmem(&vmem::records());
}

/// The `vmem` records, one line per device.
fn print_vmem(records: &[hotmem::vmem::Record]) {
    if records.is_empty() {
        println!("vmem: no virtio-mem device");
        return;
    }
    for r in records {
        print_vmem_record(r);
    }
}

/// The `vmem` line of a device (the keys after `reason=` were appended later; the order
/// never changes).
fn print_vmem_record(r: &hotmem::vmem::Record) {
    let c = &r.cfg;
    println!(
        "id=vmem{} addr=0x{:x} region_kib={} block_kib={} usable_kib={} plugged_kib={} requested_kib={} pending_kib={} node={} state={} reason={} guest_plugged_kib={} moved_kib={} left_kib={} pci={}",
        r.id,
        c.addr,
        c.region_size >> 10,
        c.block_size >> 10,
        c.usable_region_size >> 10,
        c.plugged_size >> 10,
        c.requested_size >> 10,
        r.pending() >> 10,
        c.node_id,
        r.state.name(),
        r.reason.name(),
        r.guest_plugged >> 10,
        r.moved >> 10,
        r.left >> 10,
        r.pci_text()
    );
}

/// `vmem stats`: one `vmem_stats phase=…` record per phase, then the TLB broadcasts of
/// every CPU since boot: `vmem_stats tlbi=N`.
fn cmd_vmem_stats() {
    for p in hotmem::vmem::stats::snapshot() {
        println!("{p}");
    }
    let tlbi: u64 = (0..cpus::records().count()).map(tlb::broadcasts).sum();
    println!("vmem_stats tlbi={tlbi}");
}

/// `vmem wait`: the records once settled, or the current ones and a timeout line.
fn cmd_vmem_wait(dev: Option<usize>, timeout_ms: u64) {
    if dev.is_some_and(|d| !vmem::records().iter().any(|r| r.id == d)) {
        println!("vmem wait: FAIL no_device");
        return;
    }
    let (records, settled) = vmem::wait(dev, timeout_ms);
    match dev.and_then(|d| records.iter().find(|r| r.id == d)) {
        Some(r) => print_vmem_record(r),
        None => print_vmem(&records),
    }
    if !settled {
        println!("vmem wait: timeout after {timeout_ms} ms");
    }
}

/// `vmem state`: the device's STATE over the range next to the guest's bitmap.
fn cmd_vmem_state(dev: usize, addr: u64, size: u64) {
    use hotmem::vmem::block_state_name;
    if !vmem::records().iter().any(|r| r.id == dev) {
        println!("vmem state: FAIL no_device");
        return;
    }
    let range = hotmem_arch::addr::PhysRange { base: addr, size };
    match vmem::query_state(dev, range) {
        Ok(r) => println!(
            "vmem state: id=vmem{dev} addr=0x{:x} size_kib={} device={} guest={}",
            r.range.base,
            r.range.size >> 10,
            block_state_name(r.device),
            block_state_name(r.guest)
        ),
        Err(e) => println!("vmem state: FAIL {}", e.name()),
    }
}

/// The `stack_kib=` value of `ps`: `USED/64`, `boot` for idle tasks, `-` once an exited
/// task's stack is freed.
struct StackKib {
    used: Option<u64>,
    idle: bool,
}

impl Display for StackKib {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.used {
            Some(b) => write!(f, "{}/{}", b / 1024, task::STACK_BYTES / 1024),
            None if self.idle => f.write_str("boot"),
            None => f.write_str("-"),
        }
    }
}

fn cmd_ps() {
    let Some(tasks) = task::tasks() else {
        println!("ps: FAIL out of memory");
        return;
    };
    for (t, used) in tasks {
        let stack = StackKib { used, idle: t.idle };
        println!(
            "task={} name={} cpu={} state={} switches={} stack_kib={stack}",
            t.id,
            t.name,
            t.cpu,
            t.state.name(),
            t.switches
        );
    }
}

fn cmd_spin(n: usize, ms: u64) {
    let report = spin_test::spin(n, ms);
    match report.failure {
        None => {}
        Some(SpinFailure::NoMemory { task }) => println!("spin: FAIL no memory for task {task}"),
        Some(SpinFailure::Map(e)) => println!("spin: FAIL map: {e:?}"),
        Some(SpinFailure::Spawn(e)) => println!("spin: FAIL spawn: {e:?}"),
    }
    for (i, t) in report.tasks.iter().enumerate() {
        println!(
            "spin: task={i} cpu={} cpus=0x{:x} iterations={} asid={} aspace={}",
            t.cpu,
            t.cpus,
            t.iterations,
            t.asid,
            if t.aspace_ok { "ok" } else { "FAIL" }
        );
    }
}

// ---------------------------------------------------------------------------------------
// The hog workload: `hog`, `pin`, `unpin`

fn cmd_hog_start(mib: u64, tasks: Option<u64>) {
    let Ok(started) = hog::start(mib, tasks) else {
        println!("hog: already running; 'hog stop' first");
        return;
    };
    match started.failure {
        None => {}
        Some(hog::StartFailure::NoMemory) => println!("hog: cannot start: out of memory"),
        Some(hog::StartFailure::AddressSpace(e)) => {
            println!("hog: cannot create an address space: {e:?}")
        }
        Some(hog::StartFailure::Spawn(e)) => println!("hog: cannot start a task: {e:?}"),
    }
    println!(
        "hog: started tasks={} pages={}",
        started.tasks, started.pages
    );
}

fn cmd_hog_status() {
    let s = hog::status();
    println!(
        "hog: tasks={} pages={} rounds={} errors={}",
        s.tasks, s.pages, s.rounds, s.errors
    );
}

fn cmd_hog_stop() {
    let Some(errors) = hog::stop() else {
        println!("hog: not running");
        return;
    };
    println!("hog: stopped errors={errors}");
    // Unplug that stalled on this memory can go on now.
    vmem::CONVERGE.schedule();
}

fn cmd_pin(mib: u64) {
    match hog::pin(mib) {
        Ok(p) => println!("pin: pinned pages={} highest=0x{:x}", p.pages, p.highest),
        Err(hog::PinFailure::NotRunning) => println!("pin: no hog running"),
        Err(hog::PinFailure::NoMemory) => println!("pin: FAIL out of memory"),
    }
}

fn cmd_unpin() {
    let n = hog::unpin();
    println!("unpin: released pages={n}");
    // Unplug that stalled on pins can go on now.
    vmem::CONVERGE.schedule();
}

// ---------------------------------------------------------------------------------------
// Fault injection: `inject`

fn cmd_inject(cmd: hotmem::inject::Command) {
    use hotmem::inject::{Applied, Command, RuleRecord, HELP};
    if cmd == Command::Help {
        for line in HELP {
            println!("{line}");
        }
        return;
    }
    match inject::apply(cmd) {
        Err(e) => println!("inject: {e}"),
        Ok(Applied::Armed(slot)) => {
            let plan = inject::snapshot();
            if let Some(r) = plan.rule(slot) {
                println!("inject: armed {}", RuleRecord(slot, r));
            }
        }
        Ok(Applied::Off) => println!("inject: off"),
        Ok(Applied::Seed(seed)) => println!("inject: seed={seed}"),
        Ok(Applied::Nothing) => {
            let plan = inject::snapshot();
            println!("{}", plan.header());
            for (slot, r) in plan.rules() {
                println!("{}", RuleRecord(slot, r));
            }
        }
    }
    // Faults that stopped may let a stalled device go on; new ones should be met at once.
    vmem::CONVERGE.schedule();
}
