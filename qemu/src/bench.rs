//! The benchmark of `hotmem-qemu bench`: hotmem and a Linux guest on the same machine, in one run.
//!
//! The rooms: [`scenario`] (what is measured on hotmem), [`report`] (the metrics, the table and
//! the JSON file), [`fetch`] (Debian's arm64 kernel and busybox with a private apt), [`initramfs`]
//! (the Linux guest's newc archive and `/init`), [`linux`] (the Linux guest's scenarios over its
//! console and QMP), and this module: the run and hotmem's measuring loop. Statistics are
//! [`crate::stats`]', guest output and actions [`crate::guest`]'s.
//!
//! [`run`] prints its time budget ([`RunConfig::budget`]), fetches the Linux guest first (when
//! that fails it prints one line saying why and goes on with hotmem's column alone), then runs
//! the [`PARTS`] of the chosen [`Guests`] in order, each adding samples to the one list of
//! metrics: hotmem's samples are a metric's own, Linux's are its [`Reference`], so the table and
//! the JSON set the two side by side with their ratio. A Linux failure after the fetch costs the
//! Linux column, not hotmem's. A part is a function over the run's state, registered by one
//! entry in [`PARTS`].
//!
//! [`measure`] runs each [`Scenario`] of [`default_scenarios`] `runs` times, each on a fresh boot
//! of the machine, and records one sample per run into each [`Metric`]:
//! - `boot`: QEMU spawn to the first `hotmem> ` prompt (every boot);
//! - `mem_round_trip_ms`: one idle `mem` shell round trip (the resolution of the `online` times);
//! - per [`Resize`] step with label `L`: `L_qmp_s` (`qom-set` to QMP `query-memory-devices`
//!   reporting the requested size, polled every millisecond from a second thread, since
//!   `MEMORY_DEVICE_SIZE_CHANGE` events are rate-limited), `L_online_s` (`qom-set` to a `mem`
//!   reply showing all of it free in the Movable zone), `L_guest_s` (the kernel's own time from
//!   its `resized to` log line), with data to migrate `L_migrated_mib` and
//!   `L_migrate_mib_per_s`, and, for the 0 -> 4 GiB plug, `memmap_overhead_kib_per_gib`
//!   (Normal managed before minus after, per GiB) and, on the boot with `memmap_on_memory=on`,
//!   `memmap_on_overhead_kib_per_gib` (Normal free before minus after, per GiB: with the
//!   descriptors in the plugged memory managed Normal does not move).
//!
//! The scenario with 1 GiB to migrate also records, per lock class of the kernel's IRQ-masking
//! locks ([`LOCK_CLASSES`]), the longest hold and the 99th percentile over the whole scenario
//! (`lock_<class>_max_us`, `lock_<class>_p99_us`, from the shell's `locks`): under TCG a vCPU
//! thread the host preempts counts as held, so these are figures to read, not to assert on.
//!
//! [`measure_mm_init`] adds the boot-time cost of the memory model per GiB of RAM. After every
//! step the guest must agree with QMP (`vmem` converged, `mem` Movable free, or present with a
//! hog running or with memmap on memory, the hog without errors, `check: ok`); any `PANIC:` or early exit fails the run
//! at once with the instance's report. While it runs, every result of a scenario run is printed
//! as it comes (a plain `# run R/N <scenario> [T s]: ...` line on stderr), and all of them
//! again when the run ends. The arithmetic, formatting and parsing are unit tested
//! without QEMU.

pub mod fetch;
pub mod initramfs;
pub mod linux;
pub mod profile;
pub mod report;
pub mod scenario;

pub use report::{default_out, git_commit, git_dirty, Metric, Reference, Report};
pub use scenario::{
    default_scenarios, overhead_kib_per_gib, Overhead, Resize, Scenario, Step, BOOT_METRIC,
    LOCK_CLASSES, MEMMAP_ON_BOOTARG, MEMMAP_ON_OVERHEAD_METRIC, MEMMAP_OVERHEAD_METRIC,
    MEM_ROUND_TRIP_METRIC, VMEM_QEMU_ID,
};

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::guest;
use crate::instance::{LaunchOptions, Qemu};
use crate::machine::{Machine, GIB, KIB, MIB};
use crate::qmp::Qmp;
use crate::stats::Stats;

use scenario::QMP_POLL_INTERVAL;

/// Index of the resized device among the machine's devices (QEMU id [`VMEM_QEMU_ID`]).
const VMEM_INDEX: usize = 0;
/// The guest's index of that device (`vmem0`).
const VMEM_GUEST_INDEX: u32 = 0;
/// Deadline for one resize step (request, convergence, log line, checks).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for one idle shell command or QMP query.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for `poweroff` and QEMU's exit after each scenario.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
/// `mem` round trips timed on the idle guest at the start of each scenario.
const IDLE_ROUND_TRIPS: usize = 5;

/// What [`measure`] runs.
pub struct BenchConfig<'a> {
    /// The machine each scenario boots (a scenario may change its RAM).
    pub machine: &'a Machine,
    /// Image and QEMU binary.
    pub options: &'a LaunchOptions,
    /// Fresh boots per scenario.
    pub runs: usize,
    /// Deadline for each boot's first prompt.
    pub boot_timeout: Duration,
    /// What to run, in order.
    pub scenarios: Vec<Scenario>,
}

/// What [`measure`] returns.
pub struct Measured {
    /// `boot`, `mem_round_trip_s`, then each scenario's metrics (first occurrence order).
    pub metrics: Vec<Metric>,
    /// The QEMU command line of the first boot.
    pub command_line: String,
}

/// Runs every scenario `runs` times (run 1 of each scenario, then run 2, ...), each on a fresh
/// boot, and collects the samples. Progress goes to stderr; a failure prints the instance's
/// report (console tail, QMP transcript) to stderr and returns the error.
pub fn measure(cfg: &BenchConfig) -> Result<Measured> {
    let mut metrics = declared_metrics(&cfg.scenarios);
    let command_line = measure_into(cfg, &mut metrics)?;
    Ok(Measured {
        metrics,
        command_line,
    })
}

/// The metrics `scenarios` record, without samples: `boot`, `mem_round_trip_ms`, then each
/// scenario's (first occurrence order).
pub fn declared_metrics(scenarios: &[Scenario]) -> Vec<Metric> {
    let mut metrics = vec![
        Metric::new(
            BOOT_METRIC,
            "s",
            "QEMU spawn to the first `hotmem> ` prompt; one sample per boot (every scenario of \
             every run boots afresh)",
        ),
        Metric::new(
            MEM_ROUND_TRIP_METRIC,
            "ms",
            &format!(
                "one `mem` shell round trip (send to prompt) on the idle guest after boot: the \
                 median of {IDLE_ROUND_TRIPS}, one sample per boot"
            ),
        ),
    ];
    for sc in scenarios {
        for m in sc.metrics() {
            if !metrics.iter().any(|have| have.name == m.name) {
                metrics.push(m);
            }
        }
    }
    metrics
}

/// [`measure`] into metrics declared by [`declared_metrics`]; returns the first QEMU command
/// line.
fn measure_into(cfg: &BenchConfig, metrics: &mut [Metric]) -> Result<String> {
    let mut command_line = String::new();
    for run in 1..=cfg.runs {
        for sc in &cfg.scenarios {
            let machine = scenario_machine(cfg.machine, sc);
            let mut vm = Qemu::launch_with(&machine, cfg.options)?;
            if command_line.is_empty() {
                command_line = vm.command_line();
                eprintln!("# {command_line}");
            }
            let mut progress = Progress::new(format!("run {run}/{} {}", cfg.runs, sc.name));
            eprintln!("# {}: booting", progress.prefix);
            let result = run_scenario(&mut vm, cfg, sc, metrics, &mut progress);
            eprintln!("# {}: {}", progress.prefix, progress.items.join(", "));
            if let Err(e) = result {
                eprintln!("# run {run}/{} {} failed: {e}", cfg.runs, sc.name);
                eprintln!("\n{}", vm.report());
                return Err(e);
            }
        }
    }
    let rtt = metrics
        .iter()
        .find(|m| m.name == MEM_ROUND_TRIP_METRIC)
        .and_then(Metric::stats);
    if let Some(rtt) = rtt {
        for m in metrics.iter_mut().filter(|m| m.name.ends_with("_online_s")) {
            let _ = write!(
                m.description,
                "; median idle `mem` round trip in this bench: {:.2} ms",
                rtt.median
            );
        }
    }
    Ok(command_line)
}

/// The machine `sc` boots: the bench's, with the scenario's RAM and boot argument.
fn scenario_machine(base: &Machine, sc: &Scenario) -> Machine {
    let mut m = match sc.ram_bytes {
        Some(ram) => base.clone().ram(ram),
        None => base.clone(),
    };
    if sc.memmap_on_memory {
        let args = match m.bootargs.as_str() {
            "" => MEMMAP_ON_BOOTARG.to_string(),
            have => format!("{have} {MEMMAP_ON_BOOTARG}"),
        };
        m = m.bootargs(&args);
    }
    m
}

/// Which guests a bench run measures (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guests {
    /// hotmem and Linux (the default).
    Both,
    /// hotmem alone.
    Hotmem,
    /// Linux alone (hotmem's column stays empty).
    Linux,
}

impl Guests {
    fn includes(self, guest: Guest) -> bool {
        matches!(
            (self, guest),
            (Guests::Both, _) | (Guests::Hotmem, Guest::Hotmem) | (Guests::Linux, Guest::Linux)
        )
    }
}

/// The guest a [`Part`] boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guest {
    Hotmem,
    Linux,
}

/// What `hotmem-qemu bench` runs.
pub struct RunConfig<'a> {
    /// The machine both guests boot (a scenario may change its RAM).
    pub machine: &'a Machine,
    /// hotmem's image and the QEMU binary.
    pub options: &'a LaunchOptions,
    /// Fresh hotmem boots per scenario.
    pub runs: usize,
    /// Fresh Linux boots per scenario.
    pub linux_runs: usize,
    /// Deadline for each hotmem boot's first prompt.
    pub boot_timeout: Duration,
    /// Which guests.
    pub guests: Guests,
}

/// Stated time per hotmem run (one boot of each scenario plus the mm_init boot), from measured
/// runs on the 2-core TCG host with headroom.
const BUDGET_PER_RUN: Duration = Duration::from_secs(120);
/// Stated time per Linux run (one boot of each Linux scenario; the data scenario writes and
/// sums 1 GiB), likewise.
const BUDGET_PER_LINUX_RUN: Duration = Duration::from_secs(240);
/// Stated time for fetching the Linux guest when it is not cached yet.
const BUDGET_FETCH: Duration = Duration::from_secs(120);

impl RunConfig<'_> {
    /// The time the run is stated to take: what `bench` prints at its start.
    pub fn budget(&self) -> Duration {
        let mut b = Duration::ZERO;
        if self.guests.includes(Guest::Hotmem) {
            b += BUDGET_PER_RUN * self.runs as u32;
        }
        if self.guests.includes(Guest::Linux) {
            b += BUDGET_FETCH + BUDGET_PER_LINUX_RUN * self.linux_runs as u32;
        }
        b
    }
}

/// What [`run`] returns: the metrics (Linux's samples as their references) and the first QEMU
/// command line of each guest.
pub struct RunResult {
    /// In table order.
    pub metrics: Vec<Metric>,
    /// hotmem's first QEMU command line (empty when it did not run).
    pub command_line: String,
}

/// The state the parts of a run fill in.
struct RunState {
    metrics: Vec<Metric>,
    command_line: String,
    linux: Option<fetch::LinuxFiles>,
}

/// One part of a bench run: a measurement on one guest that adds samples to the metrics.
struct Part {
    name: &'static str,
    guest: Guest,
    run: fn(&RunConfig, &mut RunState) -> Result<()>,
}

/// The parts of a run, in order; a new part is one line here.
const PARTS: &[Part] = &[
    Part {
        name: "scenarios",
        guest: Guest::Hotmem,
        run: part_scenarios,
    },
    Part {
        name: "mm_init",
        guest: Guest::Hotmem,
        run: part_mm_init,
    },
    Part {
        name: "linux",
        guest: Guest::Linux,
        run: part_linux,
    },
];

/// `hotmem-qemu bench`: prints the budget, fetches the Linux guest (or says in one line why it
/// cannot, and goes on with hotmem alone), runs the [`PARTS`] for the chosen guests and returns
/// the metrics. Prints how long it took against the budget.
pub fn run(cfg: &RunConfig) -> Result<RunResult> {
    let budget = cfg.budget();
    let started = Instant::now();
    println!(
        "bench: budget {} min ({} hotmem runs, {} Linux runs)",
        budget.as_secs().div_ceil(60),
        if cfg.guests.includes(Guest::Hotmem) {
            cfg.runs
        } else {
            0
        },
        if cfg.guests.includes(Guest::Linux) {
            cfg.linux_runs
        } else {
            0
        },
    );
    let mut state = RunState {
        metrics: declared_metrics(&default_scenarios()),
        command_line: String::new(),
        linux: None,
    };
    if cfg.guests.includes(Guest::Linux) {
        let dir = crate::instance::workspace_root()
            .join("target")
            .join("linux");
        let mirror = fetch::mirror();
        eprintln!("# linux: apt via {mirror} into {}", dir.display());
        match fetch::Plan::decide(fetch::fetch(&dir, &mirror), &mirror) {
            fetch::Plan::Measure(files) => {
                eprintln!("# linux: {} ({})", files.package, files.kernel.display());
                state.linux = Some(files);
            }
            fetch::Plan::OursAlone(line) => println!("{line}"),
        }
    }
    if cfg.guests.includes(Guest::Hotmem) {
        state.metrics.push(mm_init_metric());
    }
    for part in PARTS.iter().filter(|p| cfg.guests.includes(p.guest)) {
        eprintln!("# part {}", part.name);
        (part.run)(cfg, &mut state)?;
    }
    let took = started.elapsed();
    println!(
        "bench: took {:.1} min of the {} min budget{}",
        took.as_secs_f64() / 60.0,
        budget.as_secs().div_ceil(60),
        if took > budget { " (over budget)" } else { "" }
    );
    Ok(RunResult {
        metrics: state.metrics,
        command_line: state.command_line,
    })
}

fn part_scenarios(cfg: &RunConfig, st: &mut RunState) -> Result<()> {
    st.command_line = measure_into(
        &BenchConfig {
            machine: cfg.machine,
            options: cfg.options,
            runs: cfg.runs,
            boot_timeout: cfg.boot_timeout,
            scenarios: default_scenarios(),
        },
        &mut st.metrics,
    )?;
    Ok(())
}

fn part_mm_init(cfg: &RunConfig, st: &mut RunState) -> Result<()> {
    let m = measure_mm_init(cfg.options, cfg.runs, cfg.boot_timeout)?;
    match st.metrics.iter_mut().find(|have| have.name == m.name) {
        Some(have) => *have = m,
        None => st.metrics.push(m),
    }
    Ok(())
}

/// The Linux guest's scenarios; a failure there costs the Linux column only (one line says
/// why, the guest's report goes to stderr), not hotmem's.
fn part_linux(cfg: &RunConfig, st: &mut RunState) -> Result<()> {
    let Some(files) = st.linux.clone() else {
        return Ok(());
    };
    let work_dir = crate::instance::workspace_root()
        .join("target")
        .join("linux");
    let measured = linux::measure(
        &linux::LinuxConfig {
            files: &files,
            work_dir: &work_dir,
            machine: cfg.machine,
            options: cfg.options,
            runs: cfg.linux_runs,
        },
        &mut st.metrics,
    );
    if let Err(e) = measured {
        println!("bench: Linux guest failed ({e}); printing hotmem's column alone");
        for m in &mut st.metrics {
            m.reference = None;
        }
    }
    Ok(())
}

/// Name of the boot-time mem_map cost metric.
pub const MM_INIT_METRIC: &str = "mm_init_us_per_gib";
/// RAM of the machine [`measure_mm_init`] boots.
const MM_INIT_RAM: u64 = 4 * GIB;

/// The declaration of [`MM_INIT_METRIC`].
fn mm_init_metric() -> Metric {
    Metric::new(
        MM_INIT_METRIC,
        "us/GiB",
        "the kernel's `mm: ... init N us` at boot (Mm::boot: early allocator, mem_maps, buddy) \
         on a machine with 4 GiB of RAM, divided by 4",
    )
}

/// Boot-time cost of building the memory model (mem_maps, buddy) per GiB of RAM: boots a
/// machine with 4 GiB of RAM and no virtio-mem `runs` times and reads the kernel's own
/// `mm: … init N us` line.
pub fn measure_mm_init(
    options: &LaunchOptions,
    runs: usize,
    boot_timeout: Duration,
) -> Result<Metric> {
    let machine = Machine::default().without_virtio_mem().ram(MM_INIT_RAM);
    let mut m = mm_init_metric();
    for _ in 0..runs {
        let mut vm = Qemu::launch_with(&machine, options)?;
        vm.wait_for_boot(boot_timeout)?;
        let text = vm.console().transcript();
        let Some(us) = guest::parse_mm_init_us(&text) else {
            eprintln!("\n{}", vm.report());
            return Err(Error::Machine("no `mm: ... init N us` line at boot".into()));
        };
        m.push(us as f64 / (MM_INIT_RAM / GIB) as f64);
        vm.poweroff(POWEROFF_TIMEOUT)?;
    }
    Ok(m)
}

/// What one scenario run did so far: each item is printed (to stderr, a plain `# ...` line,
/// terminal or not) as it is recorded, so a long bench shows where it is; the items are
/// printed together again when the run ends.
struct Progress {
    prefix: String,
    items: Vec<String>,
    started: Instant,
}

impl Progress {
    fn new(prefix: String) -> Progress {
        Progress {
            prefix,
            items: Vec::new(),
            started: Instant::now(),
        }
    }

    fn push(&mut self, item: String) {
        eprintln!(
            "# {} [{:.1} s]: {item}",
            self.prefix,
            self.started.elapsed().as_secs_f64()
        );
        self.items.push(item);
    }
}

fn record(metrics: &mut [Metric], name: &str, value: f64) {
    match metrics.iter_mut().find(|m| m.name == name) {
        Some(m) => m.push(value),
        // Metrics come from the same scenario list, so this is a bug here.
        None => panic!("bench metric {name} was not declared"),
    }
}

fn run_scenario(
    vm: &mut Qemu,
    cfg: &BenchConfig,
    sc: &Scenario,
    metrics: &mut [Metric],
    progress: &mut Progress,
) -> Result<()> {
    let boot = vm.wait_for_boot(cfg.boot_timeout)?.as_secs_f64();
    record(metrics, BOOT_METRIC, boot);
    progress.push(format!("boot {boot:.3}"));

    let dev = vm.qmp().virtio_mem(VMEM_QEMU_ID, COMMAND_TIMEOUT)?;
    let need = sc.steps.iter().map(Step::max_bytes).max().unwrap_or(0);
    if dev.max_bytes < need {
        return Err(Error::Machine(format!(
            "bench scenario {} needs a virtio-mem device {VMEM_QEMU_ID} of at least {}, this one \
             has {}",
            sc.name,
            crate::format_size(need),
            crate::format_size(dev.max_bytes)
        )));
    }

    let mut trips = Vec::with_capacity(IDLE_ROUND_TRIPS);
    for _ in 0..IDLE_ROUND_TRIPS {
        let t = Instant::now();
        vm.console().command("mem", COMMAND_TIMEOUT)?;
        trips.push(t.elapsed().as_secs_f64());
    }
    let rtt_ms = Stats::of(&trips).map_or(f64::NAN, |s| s.median * 1e3);
    record(metrics, MEM_ROUND_TRIP_METRIC, rtt_ms);
    progress.push(format!("mem rtt {rtt_ms:.2} ms"));

    let mut hog = false;
    for step in &sc.steps {
        match step {
            Step::Resize(r) => profile::resize(vm, r.migration, progress, |vm, p| {
                // Movable free is below the plugged size by the descriptors with memmap on
                // memory, and by the hog's data with a hog: compare what is present then.
                let by_present = hog || sc.memmap_on_memory;
                resize(vm, r, by_present, hog, metrics, p)
            })?,
            Step::Hog(mib) => {
                start_hog(vm, *mib)?;
                hog = true;
                progress.push(format!("hog {mib} MiB"));
            }
            Step::HogStop => {
                guest::hog_stop(vm.console(), STEP_TIMEOUT)?;
                hog = false;
            }
            Step::LocksReset => {
                let out = vm.console().command("locks reset", COMMAND_TIMEOUT)?;
                if out.text().trim() != "locks: reset" {
                    return Err(Error::Protocol(format!("locks reset: {:?}", out.text())));
                }
            }
            Step::Locks => {
                let out = vm.console().command("locks", COMMAND_TIMEOUT)?;
                let holds = guest::parse_locks(&out.records()?)?;
                for c in LOCK_CLASSES {
                    let (max, p99) = holds
                        .iter()
                        .find(|h| h.class == *c)
                        .map_or((0, 0), |h| (h.max_us, h.p99_us));
                    record(metrics, &format!("lock_{c}_max_us"), max as f64);
                    record(metrics, &format!("lock_{c}_p99_us"), p99 as f64);
                }
                if let Some(w) = holds.iter().max_by_key(|h| h.max_us) {
                    progress.push(format!(
                        "longest lock hold: {} {} us (p99 {} us)",
                        w.class, w.max_us, w.p99_us
                    ));
                }
            }
        }
    }
    vm.poweroff(POWEROFF_TIMEOUT)?;
    Ok(())
}

/// One resize: `qom-set`, then in parallel a thread polling QMP and this thread polling `mem`
/// (if `online`) and the console for the resize log; then checks that everything agrees.
fn resize(
    vm: &mut Qemu,
    r: &Resize,
    by_present: bool,
    hog: bool,
    metrics: &mut [Metric],
    progress: &mut Progress,
) -> Result<()> {
    let deadline = Deadline::after(STEP_TIMEOUT);
    let to_kib = r.to_bytes / KIB;
    let to_mib = r.to_bytes / MIB;
    let size = crate::format_size(r.to_bytes);

    let before = guest::mem(vm.console(), COMMAND_TIMEOUT)?;
    let managed_before = before.zone_sum("Normal", |z| z.managed_kib)?;
    let free_before = before.zone_sum("Normal", |z| z.free_kib)?;
    check_vmem(vm, r.from_bytes)?;
    let plugged = vm
        .qmp()
        .virtio_mem(VMEM_QEMU_ID, COMMAND_TIMEOUT)?
        .plugged_bytes;
    if plugged != r.from_bytes {
        return Err(Error::Protocol(format!(
            "before resizing to {size}: QMP reports {} plugged, expected {}",
            crate::format_size(plugged),
            crate::format_size(r.from_bytes)
        )));
    }

    let (console, qmp) = vm.console_and_qmp();
    let log_from = console.position();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    guest::resize(qmp, VMEM_INDEX, r.to_bytes, COMMAND_TIMEOUT)?;
    let (qmp_result, guest_result) = thread::scope(|s| {
        let poller = s.spawn(|| poll_qmp(qmp, r.to_bytes, t0, deadline, &stop));
        let guest = (|| {
            let mut online = None;
            if r.online {
                let mut polls = 0u32;
                loop {
                    let mem = guest::mem(console, deadline)?;
                    polls += 1;
                    let free = mem.zone_sum("Movable", |z| z.free_kib)?;
                    if free == to_kib {
                        online = Some((t0.elapsed(), polls));
                        break;
                    }
                    if deadline.expired() {
                        return Err(Error::Timeout {
                            what: format!("Movable free_kib == {to_kib} (last {free})"),
                            waited: t0.elapsed(),
                        });
                    }
                }
            }
            let log =
                guest::wait_resize_log(console, log_from, VMEM_GUEST_INDEX, to_mib, deadline)?;
            Ok((online, log))
        })();
        if guest.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let polled = poller
            .join()
            .unwrap_or_else(|_| Err(Error::Protocol("the QMP poller panicked".into())));
        (polled, guest)
    });
    // A guest failure (panic, exit) explains a QMP timeout, not the other way round.
    let (online, log) = guest_result?;
    let (qmp_time, qmp_polls) = qmp_result?;

    let after = guest::mem(vm.console(), COMMAND_TIMEOUT)?;
    let managed_after = after.zone_sum("Normal", |z| z.managed_kib)?;
    let free_after = after.zone_sum("Normal", |z| z.free_kib)?;
    let (field, movable_after) = if by_present {
        ("present_kib", after.zone_sum("Movable", |z| z.present_kib)?)
    } else {
        ("free_kib", after.zone_sum("Movable", |z| z.free_kib)?)
    };
    if movable_after != to_kib {
        return Err(Error::Protocol(format!(
            "after resizing to {size}: Movable {field} is {movable_after}, expected {to_kib}"
        )));
    }
    let after_resize = |e: Error| match e {
        Error::Protocol(m) => Error::Protocol(format!("after resizing to {size}: {m}")),
        other => other,
    };
    if hog {
        guest::hog_clean(vm.console(), COMMAND_TIMEOUT).map_err(after_resize)?;
    }
    check_vmem(vm, r.to_bytes)?;
    guest::check(vm.console(), COMMAND_TIMEOUT).map_err(after_resize)?;

    let guest_s = log.us as f64 / 1e6;
    let mut note = format!(
        "{} -> {size}: qmp {:.3} s ({qmp_polls} polls)",
        crate::format_size(r.from_bytes),
        qmp_time.as_secs_f64()
    );
    if let Some((t, polls)) = online {
        let _ = write!(note, ", online {:.3} s ({polls} mem)", t.as_secs_f64());
    }
    let _ = write!(note, ", guest {guest_s:.3} s ({} requests)", log.requests);
    if log.migrated_mib > 0 {
        let _ = write!(note, ", migrated {} MiB", log.migrated_mib);
    }
    let overhead = overhead_kib_per_gib(managed_before, managed_after, r.from_bytes, r.to_bytes);
    let overhead_free = overhead_kib_per_gib(free_before, free_after, r.from_bytes, r.to_bytes);
    match overhead.zip(overhead_free) {
        Some((o, f)) => {
            let _ = write!(
                note,
                ", overhead {o:.0} KiB/GiB (Normal managed), {f:.0} KiB/GiB (Normal free)"
            );
        }
        None => {
            let back = managed_after as i64 - managed_before as i64;
            let _ = write!(note, ", Normal managed {back:+} KiB");
        }
    }
    progress.push(note);

    if let Some(label) = r.label {
        record(metrics, &format!("{label}_qmp_s"), qmp_time.as_secs_f64());
        if let Some((t, _)) = online {
            record(metrics, &format!("{label}_online_s"), t.as_secs_f64());
        }
        record(metrics, &format!("{label}_guest_s"), guest_s);
        if r.migration {
            record(
                metrics,
                &format!("{label}_migrated_mib"),
                log.migrated_mib as f64,
            );
            record(
                metrics,
                &format!("{label}_migrate_mib_per_s"),
                log.migrated_mib as f64 / guest_s.max(1e-9),
            );
        }
        let measured = match r.overhead {
            Some(Overhead::Managed) => overhead,
            Some(Overhead::Free) => overhead_free,
            None => None,
        };
        if let (Some(which), Some(o)) = (r.overhead, measured) {
            record(metrics, which.metric(), o);
        }
    }
    Ok(())
}

/// `hog <MiB>`, then waits until every page is mapped and verified once (rounds >= 1).
fn start_hog(vm: &mut Qemu, mib: u64) -> Result<()> {
    guest::hog_start(vm.console(), mib, COMMAND_TIMEOUT)?;
    let want = mib * MIB / 4096;
    guest::wait_hog(
        vm.console(),
        &format!("hog {mib} to map and verify once"),
        STEP_TIMEOUT,
        Duration::from_millis(200),
        |st| st.pages == want && st.rounds >= 1,
    )?;
    Ok(())
}

/// Polls `query-memory-devices` until the device's size is `target`; returns the time since `t0`
/// and the number of polls. Gives up when `stop` is set (the other side failed).
fn poll_qmp(
    qmp: &mut Qmp,
    target: u64,
    t0: Instant,
    deadline: Deadline,
    stop: &AtomicBool,
) -> Result<(Duration, u32)> {
    let mut polls = 0u32;
    loop {
        let dev = qmp.virtio_mem(VMEM_QEMU_ID, deadline)?;
        polls += 1;
        if dev.plugged_bytes == target {
            return Ok((t0.elapsed(), polls));
        }
        if deadline.expired() || stop.load(Ordering::Relaxed) {
            return Err(Error::Timeout {
                what: format!(
                    "QMP size {} of {VMEM_QEMU_ID} (last {})",
                    crate::format_size(target),
                    crate::format_size(dev.plugged_bytes)
                ),
                waited: t0.elapsed(),
            });
        }
        thread::sleep(QMP_POLL_INTERVAL);
    }
}

/// `vmem` must show the device converged at `bytes`: plugged and requested equal, nothing
/// pending, state ok.
fn check_vmem(vm: &mut Qemu, bytes: u64) -> Result<()> {
    let vmem = guest::vmem(vm.console(), COMMAND_TIMEOUT)?;
    let id = format!("vmem{VMEM_GUEST_INDEX}");
    let dev = vmem
        .by_id(&id)
        .ok_or_else(|| Error::Protocol(format!("`vmem` shows no {id}")))?;
    let kib = bytes / KIB;
    if !(dev.plugged_kib == kib && dev.requested_kib == kib && dev.converged()) {
        return Err(Error::Protocol(format!(
            "`vmem` should show {} plugged and converged: {dev}",
            crate::format_size(bytes)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_the_chosen_guests() {
        let machine = Machine::default();
        let options = LaunchOptions::default();
        let cfg = |guests| RunConfig {
            machine: &machine,
            options: &options,
            runs: 5,
            linux_runs: 3,
            boot_timeout: Duration::from_secs(60),
            guests,
        };
        let ours = BUDGET_PER_RUN * 5;
        let linux = BUDGET_FETCH + BUDGET_PER_LINUX_RUN * 3;
        assert_eq!(cfg(Guests::Hotmem).budget(), ours);
        assert_eq!(cfg(Guests::Linux).budget(), linux);
        assert_eq!(cfg(Guests::Both).budget(), ours + linux);
        assert_eq!(cfg(Guests::Both).budget(), Duration::from_secs(24 * 60));
    }

    #[test]
    fn parts_follow_the_guest_choice() {
        let names = |g: Guests| -> Vec<&str> {
            PARTS
                .iter()
                .filter(|p| g.includes(p.guest))
                .map(|p| p.name)
                .collect()
        };
        assert_eq!(names(Guests::Both), ["scenarios", "mm_init", "linux"]);
        assert_eq!(names(Guests::Hotmem), ["scenarios", "mm_init"]);
        assert_eq!(names(Guests::Linux), ["linux"]);
    }

    #[test]
    fn scenario_machine_adds_ram_and_the_memmap_bootarg() {
        let scenarios = default_scenarios();
        let on = scenarios.iter().find(|s| s.memmap_on_memory).unwrap();
        let off = scenarios.iter().find(|s| !s.memmap_on_memory).unwrap();
        let base = Machine::default();
        assert_eq!(scenario_machine(&base, on).bootargs, MEMMAP_ON_BOOTARG);
        assert_eq!(scenario_machine(&base, off).bootargs, "");
        let with = Machine::default().bootargs("unplug_floor_mib=8");
        assert_eq!(
            scenario_machine(&with, on).bootargs,
            format!("unplug_floor_mib=8 {MEMMAP_ON_BOOTARG}")
        );
        assert_eq!(scenario_machine(&with, off).bootargs, "unplug_floor_mib=8");
        let big = scenarios.iter().find(|s| s.ram_bytes.is_some()).unwrap();
        assert_eq!(
            scenario_machine(&base, big).ram_bytes,
            big.ram_bytes.unwrap()
        );
    }

    #[test]
    fn both_overhead_rows_compare_with_linux_s_one_figure() {
        // As `linux::measure` records it: the same Linux sample under both names.
        let mut rows: Vec<Metric> = declared_metrics(&default_scenarios())
            .into_iter()
            .filter(|m| m.name == MEMMAP_OVERHEAD_METRIC || m.name == MEMMAP_ON_OVERHEAD_METRIC)
            .collect();
        assert_eq!(rows.len(), 2);
        rows[0].push(8192.0);
        rows[1].push(10.0);
        for m in &mut rows {
            m.push_reference(17_000.0, "Linux");
        }
        let ratio = |name: &str| rows.iter().find(|m| m.name == name).unwrap().ratio();
        assert_eq!(ratio(MEMMAP_ON_OVERHEAD_METRIC), Some(1700.0));
        assert!((ratio(MEMMAP_OVERHEAD_METRIC).unwrap() - 17_000.0 / 8192.0).abs() < 1e-9);
    }
}
