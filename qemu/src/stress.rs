//! The stress runner of `hotmem-qemu stress`: seeded random scenarios against one booted guest,
//! checked after every step against QMP, with a progress line, a failure directory, a summary
//! table and a plot of requested versus plugged size.
//!
//! The rooms:
//! - [`scenario`]: the seeded [`Rng`] and the [`Scenario`] of [`Step`]s (pure data);
//! - [`faults`]: the [`Fault`]s that ride along resize steps with `--inject` (pure data);
//! - [`config`]: the [`Topology`] and the [`StressConfig`] of a run;
//! - [`stall`]: when a stall is excused ([`judge`]): arithmetic over what `mem` and `pin`
//!   print (pure);
//! - [`oracle`]: when the guest's view and books agree with QMP (pure);
//! - [`report`]: the progress line, the [`Summary`] table and the failure directory;
//! - this module: the runner, [`run`], which plays the scenario on a guest through
//!   [`crate::guest`]'s actions and asks the oracle after every step; the plot is
//!   [`crate::plot`]'s.
//!
//! [`run`] boots the [`Topology`], reads the devices from QMP and the guest's commands from
//! `help` ([`Features`]), and plays the scenario until `--steps` or `--duration` runs out. A step
//! is one or two `qom-set`s, a `system_reset` (then the boot banner and a prompt), or a hog or pin
//! command. After each step it waits until every device's QMP size equals its requested size, or
//! the guest's `vmem` shows the devices that did not get there stalled, [`stall::judge`] finds
//! each stall unavoidable from `mem`'s numbers, and QMP stood still for a whole `vmem` interval;
//! a stall it does not excuse is waited out until the deadline. Then the guest must agree with
//! QMP ([`oracle`]: `vmem`, `guest_plugged_kib`, `sections`, `mem`'s Movable, `vmem state` spot
//! checks), the hog must count no errors, `check` must print `check: ok`, and the console must
//! show no `PANIC:` (every console wait fails at once on one). A run whose steps stalled more
//! than [`MAX_STALL_PERCENT`] of the time fails at its end. QMP is polled throughout; every
//! change (and at least one per second) becomes a plot sample, every step a mark on the plot's
//! time axis (its convergence time, or a stall or failure), and the bytes QMP saw plugged and
//! unplugged go into the summary. The spot checks' ranges come from their own stream of the
//! run's seed ([`SPOT_STREAM`]), so a seed replays them.
//!
//! With `--inject` (and `inject` in the guest's `help`), a resize step may carry a [`Fault`]:
//! the runner arms it before the `qom-set`, waits as above with the fault's own excuses
//! ([`oracle::excused_while_injecting`]: busy, device errors, pins) but without the checks,
//! reads how often it fired, disarms it (`inject off`), and then settles and checks the step
//! as any other: once the fault is gone, convergence is required.
//!
//! On failure, [`run`] saves the failure directory (see [`report`]), prints where and the console
//! tail, and returns the error; it writes the plot either way. Everything but the runner itself
//! is pure and unit tested.
//!
//! Size: this file is the runner alone (about 800 lines): the step loop, settling, the checks'
//! plumbing from QMP and the console into [`oracle`] and [`stall`], and the fault arming. Each
//! of those reads the same run state, so it stays in one room; what can be pure lives in the
//! modules above.

pub mod config;
pub mod faults;
pub mod oracle;
pub mod report;
pub mod scenario;
pub mod stall;

pub use config::{parse_duration, StressConfig, Topology};
pub use faults::{Fault, Faults};
pub use report::Summary;
pub use scenario::{
    seed_from_clock, DeviceSpec, Features, Kind, Rng, Scenario, ScenarioConfig, Step,
};
pub use stall::{judge, too_many_stalls, MAX_STALL_PERCENT};

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::guest::{self, Vmem, VmemLine};
use crate::instance::Qemu;
use crate::machine::{Machine, KIB, MIB};
use crate::plot::{svg, Mark, Outcome, Sample};
use crate::qmp::VirtioMemInfo;

use oracle::SpotDraw;
use stall::{Holding, Pins, Room, Stall};

use report::{clock, save_failure, Progress};
use scenario::short_size;

/// From the last action of a step to QMP size == requested-size (or an excused stall).
const CONVERGE: Duration = Duration::from_secs(60);
/// After a faulted step settled: how long its fault may still take to fire.
const FIRE_GRACE: Duration = Duration::from_secs(2);
/// From QMP converged to `vmem` agreeing with it.
const AGREE: Duration = Duration::from_secs(30);
/// One shell command.
const CMD: Duration = Duration::from_secs(30);
/// One QMP command.
const QMP: Duration = Duration::from_secs(10);
/// Poweroff at the end.
const EXIT: Duration = Duration::from_secs(30);
/// Between two QMP polls while waiting.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Between two `vmem` reads while a device has not converged.
const VMEM_EVERY: Duration = Duration::from_millis(500);
/// A plot sample at least this often while nothing changes.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Mixed into the run's seed for the spot checks' ranges.
pub const SPOT_STREAM: u64 = 0x5b07_c4ec_0a11_ab1e;
/// Sections: the granularity of `sections`.
const SECTION_BYTES: u64 = guest::sections::SECTION_BYTES;
/// Console lines in the `console-tail.txt` of a failure.
const TAIL_LINES: usize = 80;

/// Whether QMP and the guest reached the requested sizes, or the guest explained why not.
enum Settled {
    Converged(Duration),
    /// Excused stalls: `(device, reason)`.
    Stalled(Vec<(usize, String)>),
}

struct Runner<'a> {
    cfg: &'a StressConfig,
    vm: Qemu,
    devices: Vec<VirtioMemInfo>,
    ids: Vec<String>,
    features: Features,
    /// The fault stream, with `--inject` when the guest has `inject`.
    faults: Option<Faults>,
    requested: Vec<u64>,
    hog_mib: Option<u64>,
    pinned_mib: Option<u64>,
    /// What the last `pin` pinned (`None` without pins, or when it pinned nothing).
    pins: Option<Pins>,
    /// The guest has `vmem state` (listed in `help`).
    vmem_state: bool,
    /// Hot-plugged memory goes online into Movable (no `memhp_online=normal` bootarg).
    movable: bool,
    /// The spot checks' ranges ([`SPOT_STREAM`]).
    spot_rng: Rng,
    /// One per played step, for the plot.
    marks: Vec<Mark>,
    started: Instant,
    samples: Vec<Sample>,
    last_sample: Option<Instant>,
    last_plugged: Vec<u64>,
    summary: Summary,
    progress: Progress,
    history: Vec<String>,
}

/// Boots `cfg.topology`, plays the seeded scenario and checks every step (see the module docs).
/// Returns the summary; on a failure saves the failure directory, prints where, and returns the
/// error. Writes the plot either way.
pub fn run(cfg: &StressConfig) -> Result<Summary> {
    let machine = cfg.topology.machine();
    println!(
        "stress: topology {} [{machine}], seed {}, {}, {}",
        cfg.topology.name(),
        cfg.seed,
        cfg.steps
            .map_or("no step limit".into(), |n| format!("{n} steps")),
        cfg.duration
            .map_or("no time limit".into(), |d| format!("at most {}", clock(d)))
    );
    let mut vm = Qemu::launch_with(&machine, &cfg.options)?;
    let started = vm.started();
    if let Err(e) = vm.wait_for_boot(cfg.boot_timeout) {
        let dir = save_failure(cfg, &mut vm, 0, "boot", &e, &[], &[], &[])?;
        println!(
            "stress: FAILED at boot: {e}\nstress: details in {}",
            dir.display()
        );
        return Err(e);
    }
    let mut runner = Runner {
        cfg,
        vm,
        devices: Vec::new(),
        ids: (0..machine.virtio_mem.len())
            .map(Machine::virtio_mem_id)
            .collect(),
        features: Features::default(),
        faults: None,
        requested: vec![0; machine.virtio_mem.len()],
        hog_mib: None,
        pinned_mib: None,
        pins: None,
        vmem_state: false,
        movable: !machine.bootargs.contains("memhp_online=normal"),
        spot_rng: Rng::new(cfg.seed ^ SPOT_STREAM),
        marks: Vec::new(),
        started,
        samples: Vec::new(),
        last_sample: None,
        last_plugged: vec![0; machine.virtio_mem.len()],
        summary: Summary {
            topology: cfg.topology.name().into(),
            seed: cfg.seed,
            ..Summary::default()
        },
        progress: Progress::new(),
        history: Vec::new(),
    };
    let result = runner.play();
    if let Err((step, _)) = &result {
        runner.marks.push(Mark {
            at: runner.started.elapsed(),
            step: *step,
            outcome: Outcome::Failed,
        });
    }
    runner.summary.elapsed = runner.started.elapsed();
    runner.progress.finish();
    runner.write_plot();
    match result {
        Ok(()) => {
            print!("{}", runner.summary.table());
            println!("plot: {}", cfg.plot.display());
            Ok(runner.summary)
        }
        Err((step, e)) => {
            runner.summary.failures += 1;
            // A panic explains whatever wait noticed it (QEMU powers off after `PANIC:`).
            let e = match runner.vm.console().panic_line() {
                Some(line) if !matches!(e, Error::GuestPanic { .. }) => Error::GuestPanic {
                    what: format!("step {step} ({e})"),
                    line,
                },
                _ => e,
            };
            print!("{}", runner.summary.table());
            let plot = std::fs::read_to_string(&cfg.plot).unwrap_or_default();
            let history = runner.history.clone();
            let what = history.last().cloned().unwrap_or_default();
            let dir = save_failure(
                cfg,
                &mut runner.vm,
                step,
                &what,
                &e,
                &history,
                &runner.ids,
                plot.as_bytes(),
            )?;
            println!(
                "stress: FAILED at step {step} ({what}), seed {}: {e}\n\
                 stress: console tail:\n{}\n\
                 stress: seed, step, console, QMP transcript and command line saved in {}",
                cfg.seed,
                runner.vm.console().tail(20),
                dir.display()
            );
            Err(e)
        }
    }
}

impl Runner<'_> {
    /// The whole run; on failure the step number (1-based; 0 before the first) and the error.
    fn play(&mut self) -> std::result::Result<(), (usize, Error)> {
        self.prepare().map_err(|e| (0, e))?;
        let cfg = ScenarioConfig {
            devices: self
                .devices
                .iter()
                .map(|d| DeviceSpec {
                    max_bytes: d.max_bytes,
                    block_bytes: d.block_size_bytes,
                })
                .collect(),
            boot_ram_bytes: self.vm.machine().boot_ram_bytes(),
            features: self.features,
        };
        let mut scenario = Scenario::new(self.cfg.seed, cfg);
        let mut n = 0;
        loop {
            if self.cfg.steps.is_some_and(|max| n >= max)
                || self
                    .cfg
                    .duration
                    .is_some_and(|d| self.started.elapsed() >= d)
            {
                break;
            }
            n += 1;
            let step = scenario.next_step();
            let hog = self.hog_mib.is_some();
            let fault = self.faults.as_mut().and_then(|f| f.choose(&step, hog));
            let with = fault
                .as_ref()
                .map_or(String::new(), |f| format!(" + inject {f}"));
            self.history.push(format!(
                "{n:>5} {:>8.3}s {step}{with}",
                self.started.elapsed().as_secs_f64()
            ));
            self.do_step(n, &step, fault.as_ref()).map_err(|e| (n, e))?;
        }
        self.finish().map_err(|e| (n, e))
    }

    /// Reads the devices from QMP and the guest's commands from `help`.
    fn prepare(&mut self) -> Result<()> {
        let help = self.vm.console().command("help", CMD)?;
        self.features = Features::from_help(&help.lines);
        self.vmem_state = guest::has_vmem_state(&help.lines);
        println!(
            "stress: guest features: {}, vmem state {}",
            self.features,
            if self.vmem_state {
                "yes"
            } else {
                "no (not in help): no spot checks"
            }
        );
        if self.cfg.inject {
            if self.features.inject {
                self.faults = Some(Faults::new(self.cfg.seed));
            } else {
                println!("stress: --inject, but the guest has no `inject`: no faults");
            }
        }
        self.devices = self.vm.qmp().virtio_mem_in_order(&self.ids, QMP)?;
        self.settle(Instant::now(), false)?;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if self.hog_mib.is_some() {
            self.hog_errors_zero()?;
        }
        let steps: usize = self.summary.steps_by_kind.values().sum();
        if too_many_stalls(self.summary.stalls, steps) {
            return Err(Error::Protocol(format!(
                "{} of {steps} steps stalled: more than {MAX_STALL_PERCENT} %",
                self.summary.stalls
            )));
        }
        let status = self.vm.poweroff(EXIT)?;
        if let Some(line) = self.vm.console().panic_line() {
            return Err(Error::GuestPanic {
                what: "poweroff".into(),
                line,
            });
        }
        if !status.success() {
            return Err(Error::Protocol(format!(
                "QEMU exited with {status} after poweroff"
            )));
        }
        Ok(())
    }

    fn do_step(&mut self, n: usize, step: &Step, fault: Option<&Fault>) -> Result<()> {
        *self.summary.steps_by_kind.entry(step.kind()).or_default() += 1;
        self.summary.resizes += step.qom_sets();
        self.show(n, step, "");
        if let Some(f) = fault {
            guest::inject_arm(self.vm.console(), &f.command(), CMD)?;
        }
        let t0 = match *step {
            Step::Resize { device, bytes, .. } => {
                let t0 = Instant::now();
                self.qom_set(device, bytes)?;
                t0
            }
            Step::Overlap {
                device,
                first_bytes,
                then_bytes,
                gap_ms,
            } => {
                self.qom_set(device, first_bytes)?;
                if gap_ms > 0 {
                    thread::sleep(Duration::from_millis(gap_ms));
                }
                let t0 = Instant::now();
                self.qom_set(device, then_bytes)?;
                t0
            }
            Step::Reset => {
                let t0 = Instant::now();
                self.vm.qmp().system_reset(QMP)?;
                self.hog_mib = None;
                self.pinned_mib = None;
                self.pins = None;
                let deadline = Deadline::after(self.cfg.boot_timeout);
                guest::wait_reboot(self.vm.console(), deadline)?;
                t0
            }
            Step::HogStart { mib } => {
                let started = guest::hog_start(self.vm.console(), mib, CMD);
                self.hog_mib = Some(mib);
                started?;
                Instant::now()
            }
            Step::HogStop => {
                guest::hog_clean(self.vm.console(), CMD)?;
                // The last verify round must be clean too.
                guest::hog_stop(self.vm.console(), CMD)?;
                self.hog_mib = None;
                self.pinned_mib = None;
                self.pins = None;
                Instant::now()
            }
            Step::Pin { mib } => {
                let line = guest::one_line(self.vm.console(), &format!("pin {mib}"), CMD)?;
                self.pinned_mib = Some(mib);
                self.pins = stall::parse_pinned(&line).filter(|p| p.pages > 0);
                Instant::now()
            }
            Step::Unpin => {
                self.vm.console().command("unpin", CMD)?;
                self.pinned_mib = None;
                self.pins = None;
                Instant::now()
            }
        };
        let mut fired = None;
        if let Some(f) = fault {
            self.wait_settled(t0, false, true)?;
            let plan = self.wait_fired()?;
            guest::inject_off(self.vm.console(), CMD)?;
            self.summary.injected += 1;
            self.summary.faults_fired += plan.fired();
            fired = Some((f, plan.fired()));
        }
        // A step with a fault is not a convergence time.
        let timed = fault.is_none()
            && matches!(
                step,
                Step::Resize { .. } | Step::Overlap { .. } | Step::Reset
            );
        let outcome = self.settle(t0, timed)?;
        self.marks.push(Mark {
            at: self.started.elapsed(),
            step: n,
            outcome: match &outcome {
                Settled::Converged(t) if timed => Outcome::Converged(*t),
                Settled::Converged(_) => Outcome::Untimed,
                Settled::Stalled(_) => Outcome::Stalled,
            },
        });
        let note = match &outcome {
            Settled::Converged(t) => format!("ok {:.0} ms", t.as_secs_f64() * 1e3),
            Settled::Stalled(why) => {
                self.summary.stalls += 1;
                let why: Vec<String> = why
                    .iter()
                    .map(|(i, r)| format!("{} stalled: {r}", self.ids[*i]))
                    .collect();
                why.join(", ")
            }
        };
        let note = match fired {
            Some((f, k)) => format!("{note}; inject {f}: fired {k}x"),
            None => note,
        };
        if let Some(last) = self.history.last_mut() {
            let _ = write!(last, "  [{note}]");
        }
        self.show(n, step, &note);
        Ok(())
    }

    fn qom_set(&mut self, device: usize, bytes: u64) -> Result<()> {
        guest::resize(self.vm.qmp(), device, bytes, QMP)?;
        self.requested[device] = bytes;
        Ok(())
    }

    fn show(&mut self, n: usize, step: &Step, note: &str) {
        let of = self.cfg.steps.map_or("?".into(), |m| m.to_string());
        let sizes: Vec<String> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                format!(
                    "{id} {}/{}",
                    short_size(self.last_plugged[i]),
                    short_size(self.requested[i])
                )
            })
            .collect();
        let limit = self
            .cfg
            .duration
            .map_or(String::new(), |d| format!("/{}", clock(d)));
        if !self.progress.tty && note.is_empty() {
            // One plain line per step, once it has a result.
            return;
        }
        let line = format!(
            "step {n}/{of} {:<34} | {} | {}{limit} {note}",
            step.to_string(),
            sizes.join(" "),
            clock(self.started.elapsed()),
        );
        self.progress.show(line.trim_end());
    }

    /// QMP's devices in `ids` order; records a sample and the bytes moved.
    fn poll_qmp(&mut self) -> Result<Vec<VirtioMemInfo>> {
        let ordered = self.vm.qmp().virtio_mem_in_order(&self.ids, QMP)?;
        let plugged: Vec<u64> = ordered.iter().map(|d| d.plugged_bytes).collect();
        let requested: Vec<u64> = ordered.iter().map(|d| d.requested_bytes).collect();
        for (last, &now) in self.last_plugged.iter_mut().zip(&plugged) {
            if now > *last {
                self.summary.plugged_bytes += now - *last;
            } else {
                self.summary.unplugged_bytes += *last - now;
            }
            *last = now;
        }
        let changed = self
            .samples
            .last()
            .is_none_or(|s| s.plugged != plugged || s.requested != requested);
        let due = self.last_sample.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY);
        if changed || due {
            self.samples.push(Sample {
                at: self.started.elapsed(),
                requested,
                plugged,
            });
            self.last_sample = Some(Instant::now());
        }
        Ok(ordered)
    }

    /// `vmem`. Right after boot the guest may still print `vmem: no virtio-mem device` (its
    /// status is published by the first convergence pass, which can run after the prompt); that
    /// counts as an empty list, which never agrees with QMP, and is counted.
    fn vmem(&mut self) -> Result<Vmem> {
        match guest::vmem_if_ready(self.vm.console(), CMD)? {
            Some(vmem) => Ok(vmem),
            None => {
                self.summary.vmem_not_ready += 1;
                Ok(Vmem::default())
            }
        }
    }

    /// Waits until QMP size == requested on every device, or the guest explains the devices that
    /// did not get there; then checks that the guest agrees, `check: ok` and the hog.
    fn settle(&mut self, t0: Instant, timed: bool) -> Result<Settled> {
        let outcome = self.wait_settled(t0, timed, false)?;
        self.guest_agrees(&outcome)?;
        guest::check(self.vm.console(), CMD)?;
        if self.hog_mib.is_some() {
            self.hog_errors_zero()?;
        }
        if let Some(line) = self.vm.console().panic_line() {
            return Err(Error::GuestPanic {
                what: "the step's checks".into(),
                line,
            });
        }
        Ok(outcome)
    }

    /// The plan, once its fault fired or [`FIRE_GRACE`] passed: QMP may show a PLUG done
    /// before the guest has read the device's answer, which is when a replace fault fires.
    fn wait_fired(&mut self) -> Result<guest::InjectPlan> {
        let deadline = Deadline::after(FIRE_GRACE);
        loop {
            let plan = guest::inject_plan(self.vm.console(), CMD)?;
            if plan.fired() > 0 || deadline.expired() {
                return Ok(plan);
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// The wait of [`Runner::settle`]: QMP size == requested on every device, or every device
    /// that is not there stalled for an excused reason (with `injecting`, the armed fault's
    /// excuses count too) while QMP stood still for a whole `vmem` interval.
    fn wait_settled(&mut self, t0: Instant, timed: bool, injecting: bool) -> Result<Settled> {
        let deadline = Deadline::after(CONVERGE);
        let mut last_vmem: Option<Instant> = None;
        let mut last_vmem_text = String::new();
        let mut last_verdicts: Vec<String> = Vec::new();
        let mut stalled_at: Option<Vec<u64>> = None;
        let outcome = loop {
            let devs = self.poll_qmp()?;
            for (i, d) in devs.iter().enumerate() {
                if d.requested_bytes != self.requested[i] {
                    return Err(Error::Protocol(format!(
                        "QMP requested-size of {} is {}, the runner set {}",
                        self.ids[i], d.requested_bytes, self.requested[i]
                    )));
                }
            }
            let open: Vec<usize> = (0..devs.len())
                .filter(|&i| devs[i].plugged_bytes != devs[i].requested_bytes)
                .collect();
            if open.is_empty() {
                let took = t0.elapsed();
                if timed {
                    self.summary.converge.push(took);
                }
                break Settled::Converged(took);
            }
            if last_vmem.is_none_or(|t| t.elapsed() >= VMEM_EVERY) {
                last_vmem = Some(Instant::now());
                let vmem = self.vmem()?;
                last_vmem_text = vmem.to_string();
                let (why, verdicts) = self.judge_stalls(&vmem, &devs, &open, injecting)?;
                if !verdicts.is_empty() {
                    last_verdicts = verdicts;
                }
                if why.len() == open.len() {
                    // Stalled for good reasons: accept once QMP stood still for a whole
                    // VMEM_EVERY.
                    let plugged: Vec<u64> = devs.iter().map(|d| d.plugged_bytes).collect();
                    if stalled_at.as_ref() == Some(&plugged) {
                        break Settled::Stalled(why);
                    }
                    stalled_at = Some(plugged);
                } else {
                    stalled_at = None;
                }
            }
            if deadline.expired() {
                let view: Vec<String> = devs
                    .iter()
                    .map(|d| {
                        format!(
                            "{} size {} requested {}",
                            d.id.as_deref().unwrap_or("?"),
                            d.plugged_bytes,
                            d.requested_bytes
                        )
                    })
                    .collect();
                return Err(Error::Timeout {
                    what: format!(
                        "QMP size == requested-size ({}), or `vmem` explaining why not \
                         (hog {:?} MiB, pinned {:?} MiB); last vmem:\n{last_vmem_text}\n\
                         last stall verdicts:\n{}",
                        view.join(", "),
                        self.hog_mib,
                        self.pinned_mib,
                        last_verdicts.join("\n")
                    ),
                    waited: t0.elapsed(),
                });
            }
            thread::sleep(POLL_EVERY);
        };
        Ok(outcome)
    }

    /// Judges the devices of `open` (not at their requested size) that `vmem` shows not
    /// `ok`: with `injecting`, the armed fault's excuses ([`oracle::excused_while_injecting`]),
    /// else [`stall::judge`] over `mem` (and `sections` for pins), read once for all of them.
    /// Returns the excused devices with their reasons, and one verdict line per judged device.
    #[allow(clippy::type_complexity)]
    fn judge_stalls(
        &mut self,
        vmem: &Vmem,
        devs: &[VirtioMemInfo],
        open: &[usize],
        injecting: bool,
    ) -> Result<(Vec<(usize, String)>, Vec<String>)> {
        let (mut why, mut verdicts) = (Vec::new(), Vec::new());
        if vmem.devices.is_empty() {
            return Ok((why, verdicts));
        }
        let lines: Vec<(usize, VmemLine)> = open
            .iter()
            .map(|&i| Ok((i, oracle::vmem_line(vmem, &devs[i])?.clone())))
            .collect::<Result<_>>()?;
        if lines.iter().all(|(_, l)| l.state == "ok") {
            return Ok((why, verdicts));
        }
        let room = Room::from_mem(&guest::mem(self.vm.console(), CMD)?);
        let sections = match self.pins {
            Some(_) if lines.iter().any(|(_, l)| l.reason == "pinned") => {
                Some(guest::sections(self.vm.console(), CMD)?)
            }
            _ => None,
        };
        let holding = Holding {
            hog: self.hog_mib.is_some(),
            pins: self.pins,
            movable: self.movable,
        };
        for (i, line) in &lines {
            let d = &devs[*i];
            let (state, reason) = (line.state.as_str(), line.reason.as_str());
            if injecting && oracle::excused_while_injecting(state, reason) {
                why.push((*i, reason.to_string()));
                continue;
            }
            let above_pins_kib = match (&sections, self.pins) {
                (Some(s), Some(p)) => {
                    let from = ((p.highest / SECTION_BYTES + 1) * SECTION_BYTES).max(d.memaddr);
                    let end = d.memaddr + d.max_bytes;
                    if from < end {
                        s.in_range(from, end)?.present_bytes / KIB
                    } else {
                        0
                    }
                }
                _ => 0,
            };
            let verdict = stall::judge(
                &Stall {
                    state,
                    reason,
                    plugged_kib: d.plugged_bytes / KIB,
                    requested_kib: d.requested_bytes / KIB,
                    unit_kib: d.block_size_bytes.max(2 * MIB) / KIB,
                    above_pins_kib,
                },
                room.as_ref(),
                &holding,
            );
            verdicts.push(format!(
                "{} state={state} reason={reason}: {verdict}",
                self.ids[*i]
            ));
            if verdict.excused() {
                why.push((*i, reason.to_string()));
            }
        }
        Ok((why, verdicts))
    }

    /// Waits until the guest agrees with QMP ([`oracle`]: `vmem`, then its books and the spot
    /// checks), reading QMP before and after the guest. The spot checks' ranges are drawn once
    /// per step, so a retry asks the same ranges and a seed replays them.
    fn guest_agrees(&mut self, outcome: &Settled) -> Result<()> {
        let deadline = Deadline::after(AGREE);
        let stalled: Vec<usize> = match outcome {
            Settled::Converged(_) => Vec::new(),
            Settled::Stalled(why) => why.iter().map(|(i, _)| *i).collect(),
        };
        let draws: Vec<SpotDraw> = (0..self.ids.len())
            .map(|_| SpotDraw::draw(&mut self.spot_rng))
            .collect();
        loop {
            let before = self.poll_qmp()?;
            let vmem = self.vmem()?;
            let sections = guest::sections(self.vm.console(), CMD)?;
            let mem = guest::mem(self.vm.console(), CMD)?;
            let spots = self.spot_checks(&before, &vmem, &draws)?;
            let after = self.poll_qmp()?;
            let mut problem = oracle::disagreement(&self.ids, &before, &vmem, &after, &stalled)?;
            if problem.is_none() {
                problem =
                    oracle::accounting(&self.ids, &after, &vmem, &sections, &mem, self.movable)?;
            }
            let problem = problem.or(spots);
            match problem {
                None => return Ok(()),
                Some(p) if deadline.expired() => {
                    return Err(Error::Timeout {
                        what: format!(
                            "the guest to agree with QMP: {p}\nvmem:\n{vmem}\nmem:\n{mem}\n\
                             sections:\n{sections}"
                        ),
                        waited: AGREE,
                    })
                }
                Some(_) => thread::sleep(POLL_EVERY),
            }
        }
    }

    /// One `vmem state` per device over the range of its draw ([`oracle::spot_check`]), when
    /// the guest has the command; the first disagreement.
    fn spot_checks(
        &mut self,
        devs: &[VirtioMemInfo],
        vmem: &Vmem,
        draws: &[SpotDraw],
    ) -> Result<Option<String>> {
        if !self.vmem_state || vmem.devices.is_empty() {
            return Ok(None);
        }
        for (i, d) in devs.iter().enumerate() {
            let line = oracle::vmem_line(vmem, d)?;
            let Some(range) = draws[i].range(line) else {
                continue;
            };
            let answer = guest::vmem_state(self.vm.console(), &line.id, range.0, range.1, CMD)?;
            if let Some(p) = oracle::spot_check(&self.ids[i], d, line.usable_kib, range, &answer) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    fn hog_errors_zero(&mut self) -> Result<()> {
        guest::hog_clean(self.vm.console(), CMD).map(drop)
    }

    fn write_plot(&self) {
        let title = format!(
            "hotmem stress, topology {}, seed {}: requested (dashed) vs plugged (QMP), steps",
            self.cfg.topology.name(),
            self.cfg.seed
        );
        let text = svg(&title, &self.ids, &self.samples, &self.marks);
        let path = &self.cfg.plot;
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(path, text));
        if let Err(e) = written {
            eprintln!("stress: cannot write {}: {e}", path.display());
        }
    }
}
