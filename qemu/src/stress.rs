//! The stress runner of `hotmem-qemu stress` (issue 6): seeded random scenarios against one
//! booted guest, checked after every step against QMP, with a progress line, a failure directory,
//! a summary table and a plot of requested versus plugged size.
//!
//! - [`Rng`]: SplitMix64, seeded from `--seed`; the same seed gives the same numbers everywhere.
//! - [`Scenario`]: an endless, deterministic sequence of [`Step`]s for a [`ScenarioConfig`] (the
//!   devices, the boot RAM and the guest [`Features`]). It mirrors what the host asked for
//!   (requested sizes, a running hog, pins), so "grow" always grows and `pin` only comes with a
//!   hog. Steps: resize one device (grow, shrink, zero, maximum), two `qom-set`s back to back
//!   (a new size while the previous one still converges), `system_reset` with memory plugged,
//!   and, when the guest's `help` lists them (issue 5), `hog`/`hog stop` and `pin`/`unpin`.
//! - [`run`]: boots the [`Topology`], plays the scenario until `--steps` or `--duration` runs
//!   out, and after each step waits until every device's QMP size equals its requested size, or
//!   the guest's `vmem` shows the device stalled for a reason that the scenario explains
//!   ([`excused`]: `pinned` needs a pin; `unmovable`, `no_memory`, `floor` need a hog, a pin or
//!   memory that is really short). Then `vmem` must agree with QMP (plugged, requested, address,
//!   node, region, block), the hog must count no errors, `check` must print `check: ok`, and the
//!   console must show no `PANIC:` (every console wait fails at once on one).
//! - On failure, [`run`] saves the seed, the step, the scenario so far, the console (tail and
//!   full), the QMP transcript, QEMU's command line and stderr and the plot under
//!   `<out>/<seed>-<step>/`, prints where, and returns the error.
//! - [`Summary`] is the table printed at the end; [`crate::plot::svg`] draws the samples.
//!
//! Everything except [`run`] is pure and unit tested.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::guest::{self, Vmem, VmemLine};
use crate::instance::{LaunchOptions, Qemu};
use crate::machine::{format_size, Machine, VirtioMem, GIB, KIB, MIB};
use crate::plot::{svg, Sample};
use crate::qmp::VirtioMemInfo;
use crate::stats::Stats;

/// From the last action of a step to QMP size == requested-size (or an excused stall).
const CONVERGE: Duration = Duration::from_secs(60);
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
/// Below this much free memory in zone Normal, `no_memory` and `floor` need no hog to excuse them.
const SHORT_FREE_KIB: u64 = 128 * 1024;
/// Console lines in the `console-tail.txt` of a failure.
const TAIL_LINES: usize = 80;

// ---------------------------------------------------------------------------------------------
// PRNG

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and every seed (0 included) is fine. The
/// field is the generator's whole state, so `Rng(seed)` is the same as `Rng::new(seed)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng(pub u64);

impl Rng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-high; the bias is below 2^-32 for our `n`). `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "Rng::between({lo}, {hi})");
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A seed from the clock, for runs without `--seed` (printed, so the run can be repeated).
pub fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Keep seeds short enough to type.
    Rng::new(nanos).next_u64() % 1_000_000
}

// ---------------------------------------------------------------------------------------------
// Topologies

/// The machines `stress` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `make run`'s machine: 512M RAM, one 4G device, 2 CPUs.
    Default,
    /// Two NUMA nodes of 512M, a 2G device on each, 2 CPUs (one per node).
    TwoNode,
}

impl Topology {
    pub fn parse(text: &str) -> Result<Topology> {
        match text {
            "default" => Ok(Topology::Default),
            "two-node" => Ok(Topology::TwoNode),
            other => Err(Error::Machine(format!(
                "--topology {other}: want default or two-node"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Topology::Default => "default",
            Topology::TwoNode => "two-node",
        }
    }

    pub fn machine(self) -> Machine {
        match self {
            Topology::Default => Machine::default(),
            Topology::TwoNode => Machine::default()
                .smp(2)
                .numa_nodes(&[512 * MIB, 512 * MIB])
                .without_virtio_mem()
                .with_virtio_mem(VirtioMem::new(2 * GIB).node(0))
                .with_virtio_mem(VirtioMem::new(2 * GIB).node(1)),
        }
    }

    /// Where the plot of a run goes by default: `target/bench/stress.svg` for the default
    /// topology, `target/bench/stress-<name>.svg` for the others.
    pub fn default_plot(self) -> PathBuf {
        let dir = crate::workspace_root().join("target").join("bench");
        match self {
            Topology::Default => dir.join("stress.svg"),
            other => dir.join(format!("stress-{}.svg", other.name())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// Guest commands beyond the plug path, found in `help` at run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `hog <MiB>`, `hog status`, `hog stop`.
    pub hog: bool,
    /// `pin <MiB>`, `unpin` (only used together with a hog).
    pub pin: bool,
}

impl Features {
    /// Reads the command names from `help` output (one `name args  description` per line).
    pub fn from_help<S: AsRef<str>>(lines: &[S]) -> Features {
        let has = |cmd: &str| {
            lines
                .iter()
                .any(|l| l.as_ref().split_whitespace().next() == Some(cmd))
        };
        Features {
            hog: has("hog"),
            pin: has("hog") && has("pin") && has("unpin"),
        }
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b| if b { "yes" } else { "no (not in help)" };
        write!(f, "hog {}, pin {}", on(self.hog), on(self.pin))
    }
}

/// One virtio-mem device as the scenario sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Region size: the most it can plug.
    pub max_bytes: u64,
    /// Every requested size is a multiple of this.
    pub block_bytes: u64,
}

/// What a scenario is generated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioConfig {
    pub devices: Vec<DeviceSpec>,
    pub boot_ram_bytes: u64,
    pub features: Features,
}

/// Step kinds, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Grow,
    Shrink,
    Zero,
    Max,
    Overlap,
    Reset,
    HogStart,
    HogStop,
    Pin,
    Unpin,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Grow,
        Kind::Shrink,
        Kind::Zero,
        Kind::Max,
        Kind::Overlap,
        Kind::Reset,
        Kind::HogStart,
        Kind::HogStop,
        Kind::Pin,
        Kind::Unpin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Grow => "grow",
            Kind::Shrink => "shrink",
            Kind::Zero => "zero",
            Kind::Max => "max",
            Kind::Overlap => "overlap",
            Kind::Reset => "reset",
            Kind::HogStart => "hog",
            Kind::HogStop => "hog stop",
            Kind::Pin => "pin",
            Kind::Unpin => "unpin",
        }
    }
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `qom-set vm<device> requested-size <bytes>`; `kind` is Grow, Shrink, Zero or Max.
    Resize {
        kind: Kind,
        device: usize,
        bytes: u64,
    },
    /// Two `qom-set`s `gap_ms` apart: the second lands while the first still converges.
    Overlap {
        device: usize,
        first_bytes: u64,
        then_bytes: u64,
        gap_ms: u64,
    },
    /// QMP `system_reset` with memory plugged; wait for the prompt again.
    Reset,
    HogStart {
        mib: u64,
    },
    HogStop,
    Pin {
        mib: u64,
    },
    Unpin,
}

impl Step {
    pub fn kind(&self) -> Kind {
        match self {
            Step::Resize { kind, .. } => *kind,
            Step::Overlap { .. } => Kind::Overlap,
            Step::Reset => Kind::Reset,
            Step::HogStart { .. } => Kind::HogStart,
            Step::HogStop => Kind::HogStop,
            Step::Pin { .. } => Kind::Pin,
            Step::Unpin => Kind::Unpin,
        }
    }

    /// `qom-set`s this step sends.
    pub fn qom_sets(&self) -> usize {
        match self {
            Step::Resize { .. } => 1,
            Step::Overlap { .. } => 2,
            _ => 0,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Resize {
                kind,
                device,
                bytes,
            } => write!(f, "{} vm{device} -> {}", kind.name(), short_size(*bytes)),
            Step::Overlap {
                device,
                first_bytes,
                then_bytes,
                gap_ms,
            } => write!(
                f,
                "overlap vm{device} -> {} then +{gap_ms}ms -> {}",
                short_size(*first_bytes),
                short_size(*then_bytes)
            ),
            Step::Reset => f.write_str("system_reset"),
            Step::HogStart { mib } => write!(f, "hog {mib}"),
            Step::HogStop => f.write_str("hog stop"),
            Step::Pin { mib } => write!(f, "pin {mib}"),
            Step::Unpin => f.write_str("unpin"),
        }
    }
}

/// A deterministic, endless sequence of steps. See the module docs.
#[derive(Debug, Clone)]
pub struct Scenario {
    rng: Rng,
    cfg: ScenarioConfig,
    requested: Vec<u64>,
    hog_mib: Option<u64>,
    pinned: bool,
}

impl Scenario {
    /// Starts from nothing requested, no hog, no pins (a freshly booted machine).
    pub fn new(seed: u64, cfg: ScenarioConfig) -> Scenario {
        assert!(!cfg.devices.is_empty(), "a scenario needs a device");
        let requested = vec![0; cfg.devices.len()];
        Scenario {
            rng: Rng::new(seed),
            cfg,
            requested,
            hog_mib: None,
            pinned: false,
        }
    }

    /// The first `n` steps for `seed`.
    pub fn steps(seed: u64, cfg: ScenarioConfig, n: usize) -> Vec<Step> {
        let mut s = Scenario::new(seed, cfg);
        (0..n).map(|_| s.next_step()).collect()
    }

    /// The requested sizes after the steps so far.
    pub fn requested(&self) -> &[u64] {
        &self.requested
    }

    pub fn next_step(&mut self) -> Step {
        let step = self.choose();
        self.apply(&step);
        step
    }

    fn choose(&mut self) -> Step {
        let f = self.cfg.features;
        let roll = self.rng.below(100);
        match roll {
            0..=44 => self.resize(),
            45..=59 => self.overlap(),
            60..=64 if self.requested.iter().any(|&b| b > 0) => Step::Reset,
            65..=79 if f.hog => match (self.hog_mib, self.pinned) {
                (None, _) => self.hog_start(),
                (Some(_), false) => Step::HogStop,
                (Some(_), true) => Step::Unpin,
            },
            80..=91 if f.pin && self.hog_mib.is_some() => {
                if self.pinned {
                    Step::Unpin
                } else {
                    self.pin()
                }
            }
            _ => self.resize(),
        }
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Resize { device, bytes, .. } => self.requested[device] = bytes,
            Step::Overlap {
                device, then_bytes, ..
            } => self.requested[device] = then_bytes,
            // QEMU keeps requested-size over a reset; the guest forgets its tasks.
            Step::Reset => {
                self.hog_mib = None;
                self.pinned = false;
            }
            Step::HogStart { mib } => self.hog_mib = Some(mib),
            Step::HogStop => self.hog_mib = None,
            Step::Pin { .. } => self.pinned = true,
            Step::Unpin => self.pinned = false,
        }
    }

    /// A size in whole blocks of `device`, uniform in `lo..=hi` bytes (rounded inwards).
    fn size_between(&mut self, device: usize, lo: u64, hi: u64) -> u64 {
        let block = self.cfg.devices[device].block_bytes;
        let (lo_blocks, hi_blocks) = (lo.div_ceil(block), hi / block);
        self.rng.between(lo_blocks, hi_blocks.max(lo_blocks)) * block
    }

    fn resize(&mut self) -> Step {
        let device = self.rng.below(self.cfg.devices.len() as u64) as usize;
        let spec = self.cfg.devices[device];
        let cur = self.requested[device];
        let mut kinds = Vec::new();
        if cur < spec.max_bytes {
            kinds.extend([Kind::Grow; 7]);
            kinds.extend([Kind::Max; 3]);
        }
        if cur > 0 {
            kinds.extend([Kind::Shrink; 7]);
            kinds.extend([Kind::Zero; 3]);
        }
        let kind = kinds[self.rng.below(kinds.len() as u64) as usize];
        let block = spec.block_bytes;
        let bytes = match kind {
            Kind::Grow => self.size_between(device, cur + block, spec.max_bytes),
            Kind::Shrink => self.size_between(device, 0, cur - block),
            Kind::Zero => 0,
            _ => spec.max_bytes,
        };
        Step::Resize {
            kind,
            device,
            bytes,
        }
    }

    fn overlap(&mut self) -> Step {
        let device = self.rng.below(self.cfg.devices.len() as u64) as usize;
        let max = self.cfg.devices[device].max_bytes;
        let first_bytes = self.size_between(device, 0, max);
        let mut then_bytes = self.size_between(device, 0, max);
        if then_bytes == first_bytes {
            then_bytes = if first_bytes == 0 { max } else { 0 };
        }
        let gap_ms = [0, 0, 1, 5, 20][self.rng.below(5) as usize];
        Step::Overlap {
            device,
            first_bytes,
            then_bytes,
            gap_ms,
        }
    }

    fn hog_start(&mut self) -> Step {
        // 32 MiB up to half of boot RAM, in 16 MiB steps.
        let top = (self.cfg.boot_ram_bytes / MIB / 2 / 16).max(2);
        Step::HogStart {
            mib: 16 * self.rng.between(2, top),
        }
    }

    fn pin(&mut self) -> Step {
        let hog = self.hog_mib.unwrap_or(2);
        Step::Pin {
            mib: self.rng.between(1, (hog / 2).clamp(1, 64)),
        }
    }
}

/// Whether a device that did not reach its requested size is explained by what the scenario
/// does: `state` must not be `ok`, and `reason` must be one the guest may give right now. Pins
/// and unmovable pages can only hold up a shrink (`shrinking`: plugged above requested); a short
/// memory (`no_memory`, `floor`) can hold up either direction (plugging needs a mem_map).
pub fn excused(
    state: &str,
    reason: &str,
    shrinking: bool,
    hog: bool,
    pinned: bool,
    memory_short: bool,
) -> bool {
    state != "ok"
        && match reason {
            "pinned" => shrinking && pinned,
            "unmovable" => shrinking && (hog || pinned),
            "no_memory" | "floor" => hog || pinned || memory_short,
            _ => false,
        }
}

// ---------------------------------------------------------------------------------------------
// Summary

/// What a run did; [`Summary::table`] is printed at the end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub topology: String,
    pub seed: u64,
    pub steps_by_kind: BTreeMap<Kind, usize>,
    /// `qom-set`s sent.
    pub resizes: usize,
    /// Sum of QMP size increases / decreases seen while polling.
    pub plugged_bytes: u64,
    pub unplugged_bytes: u64,
    /// Steps that ended with a device stalled for an excused reason.
    pub stalls: usize,
    pub failures: usize,
    /// `vmem` answers "no virtio-mem device" (after a boot, before the guest published status).
    pub vmem_not_ready: usize,
    pub elapsed: Duration,
    /// From the last action of a resize or reset step to QMP size == requested on all devices.
    pub converge: Vec<Duration>,
}

impl Summary {
    pub fn steps(&self) -> usize {
        self.steps_by_kind.values().sum()
    }

    /// Median and maximum of [`Summary::converge`], in seconds.
    pub fn converge_stats(&self) -> Option<Stats> {
        let secs: Vec<f64> = self.converge.iter().map(Duration::as_secs_f64).collect();
        Stats::of(&secs)
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "stress summary: topology {} seed {}",
            self.topology, self.seed
        );
        let _ = writeln!(t, "  {:<30} {:>10}", "step kind", "steps");
        for kind in Kind::ALL {
            if let Some(n) = self.steps_by_kind.get(&kind) {
                let _ = writeln!(t, "  {:<30} {n:>10}", kind.name());
            }
        }
        let _ = writeln!(t, "  {:<30} {:>10}", "all steps", self.steps());
        let rows = [
            ("resizes (qom-set)", self.resizes.to_string()),
            ("plugged", gib(self.plugged_bytes)),
            ("unplugged", gib(self.unplugged_bytes)),
            ("stalled, excused", self.stalls.to_string()),
            ("failures", self.failures.to_string()),
            ("vmem not ready after boot", self.vmem_not_ready.to_string()),
            ("elapsed", clock(self.elapsed)),
        ];
        for (name, value) in rows {
            let _ = writeln!(t, "  {name:<30} {value:>10}");
        }
        match self.converge_stats() {
            Some(s) => {
                let _ = writeln!(
                    t,
                    "  {:<30} {:>10}",
                    format!("converge median/max (n={})", s.runs),
                    format!("{:.0}/{:.0} ms", s.median * 1e3, s.max * 1e3)
                );
            }
            None => {
                let _ = writeln!(t, "  {:<30} {:>10}", "converge median/max", "-");
            }
        }
        t
    }
}

/// `12.50 GiB`.
fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB as f64)
}

/// `1:02:03` or `2:03` (minutes:seconds).
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Parses `15m`, `90s`, `1h`, `2m30s` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || Error::Machine(format!("bad duration {text:?}: want e.g. 15m, 90s, 1h"));
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total += n * unit;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

// ---------------------------------------------------------------------------------------------
// The runner

/// What [`run`] does.
#[derive(Debug, Clone)]
pub struct StressConfig {
    pub topology: Topology,
    pub options: LaunchOptions,
    pub seed: u64,
    /// Stop after this many steps (no limit when `None`).
    pub steps: Option<usize>,
    /// Start no step after this much time (no limit when `None`).
    pub duration: Option<Duration>,
    /// Failure directories go under here (`<out>/<seed>-<step>/`).
    pub out_dir: PathBuf,
    /// The SVG plot.
    pub plot: PathBuf,
    pub boot_timeout: Duration,
}

/// A terminal line updated in place, or a plain line per update when stdout is not a terminal.
struct Progress {
    tty: bool,
    width: usize,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::stdout().is_terminal(),
            width: 0,
        }
    }

    fn show(&mut self, line: &str) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            let pad = self.width.saturating_sub(line.chars().count());
            let _ = write!(out, "\r{line}{:pad$}", "");
            self.width = line.chars().count();
        } else {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    /// Ends the in-place line, so that what follows starts on a fresh one.
    fn finish(&mut self) {
        if self.tty && self.width > 0 {
            println!();
            self.width = 0;
        }
    }
}

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
    requested: Vec<u64>,
    hog_mib: Option<u64>,
    pinned_mib: Option<u64>,
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
        requested: vec![0; machine.virtio_mem.len()],
        hog_mib: None,
        pinned_mib: None,
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

/// Writes `<out>/<seed>-<step>/` and returns its path.
#[allow(clippy::too_many_arguments)]
fn save_failure(
    cfg: &StressConfig,
    vm: &mut Qemu,
    step: usize,
    what: &str,
    error: &Error,
    history: &[String],
    ids: &[String],
    plot: &[u8],
) -> Result<PathBuf> {
    let dir = cfg.out_dir.join(format!("{}-{step}", cfg.seed));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut steps = String::new();
    for line in history {
        let _ = writeln!(steps, "{line}");
    }
    let repro = format!(
        "cargo run -p hotmem-qemu --release -- stress --topology {} --seed {} --steps {step}",
        cfg.topology.name(),
        cfg.seed
    );
    let failure = format!(
        "seed: {}\ntopology: {}\ndevices: {}\nfailed step: {step} ({what})\nerror: {error}\n\
         reproduce: {repro}\n\nsteps:\n{steps}",
        cfg.seed,
        cfg.topology.name(),
        ids.join(" ")
    );
    // Where every vCPU is (registers, PC first) and what the interrupt controller holds
    // (enabled, pending, active lines): for a guest that stopped answering.
    let mut hmp = |command: &str| {
        vm.qmp()
            .hmp(command, QMP)
            .unwrap_or_else(|e| format!("({command} failed: {e})\n"))
    };
    let vcpus = hmp("info registers -a");
    let pic = hmp("info pic");
    let files: [(&str, Vec<u8>); 10] = [
        ("vcpus.txt", vcpus.into_bytes()),
        ("pic.txt", pic.into_bytes()),
        ("failure.txt", failure.into_bytes()),
        ("seed", format!("{}\n", cfg.seed).into_bytes()),
        (
            "console-tail.txt",
            vm.console().tail(TAIL_LINES).into_bytes(),
        ),
        ("console.txt", vm.console().transcript().into_bytes()),
        ("qmp.txt", vm.qmp().transcript().into_bytes()),
        (
            "command-line.txt",
            format!("{}\n", vm.command_line()).into_bytes(),
        ),
        ("qemu-stderr.txt", vm.stderr().into_bytes()),
        ("stress.svg", plot.to_vec()),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    Ok(dir)
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
            self.history.push(format!(
                "{n:>5} {:>8.3}s {step}",
                self.started.elapsed().as_secs_f64()
            ));
            self.do_step(n, &step).map_err(|e| (n, e))?;
        }
        self.finish().map_err(|e| (n, e))
    }

    /// Reads the devices from QMP and the guest's commands from `help`.
    fn prepare(&mut self) -> Result<()> {
        let help = self.vm.console().command("help", CMD)?;
        self.features = Features::from_help(&help.lines);
        println!("stress: guest features: {}", self.features);
        let devs = self.vm.qmp().virtio_mem_devices(QMP)?;
        let mut ordered = Vec::new();
        for id in &self.ids {
            let d = devs
                .iter()
                .find(|d| d.id.as_deref() == Some(id.as_str()))
                .ok_or_else(|| {
                    Error::Protocol(format!("QMP shows no virtio-mem {id}: {devs:?}"))
                })?;
            ordered.push(d.clone());
        }
        self.devices = ordered;
        self.settle(Instant::now(), false)?;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if self.hog_mib.is_some() {
            self.hog_errors_zero()?;
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

    fn do_step(&mut self, n: usize, step: &Step) -> Result<()> {
        *self.summary.steps_by_kind.entry(step.kind()).or_default() += 1;
        self.summary.resizes += step.qom_sets();
        self.show(n, step, "");
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
                Instant::now()
            }
            Step::Pin { mib } => {
                self.vm.console().command(&format!("pin {mib}"), CMD)?;
                self.pinned_mib = Some(mib);
                Instant::now()
            }
            Step::Unpin => {
                self.vm.console().command("unpin", CMD)?;
                self.pinned_mib = None;
                Instant::now()
            }
        };
        let timed = matches!(
            step,
            Step::Resize { .. } | Step::Overlap { .. } | Step::Reset
        );
        let outcome = self.settle(t0, timed)?;
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
        let devs = self.vm.qmp().virtio_mem_devices(QMP)?;
        let mut ordered = Vec::with_capacity(self.ids.len());
        for id in &self.ids {
            let d = devs
                .iter()
                .find(|d| d.id.as_deref() == Some(id.as_str()))
                .ok_or_else(|| Error::Protocol(format!("QMP shows no virtio-mem {id}")))?;
            ordered.push(d.clone());
        }
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

    /// The `vmem` line of QMP device `d` (matched by address).
    fn vmem_line<'r>(vmem: &'r Vmem, d: &VirtioMemInfo) -> Result<&'r VmemLine> {
        vmem.by_addr(d.memaddr).ok_or_else(|| {
            Error::Protocol(format!(
                "`vmem` has no line with addr={:#x}:\n{vmem}",
                d.memaddr
            ))
        })
    }

    /// Whether free memory in zone Normal is short (an excuse for `no_memory` and `floor`).
    fn memory_short(&mut self) -> Result<bool> {
        let mem = guest::mem(self.vm.console(), CMD)?;
        let free = mem.zone_sum("Normal", |z| z.free_kib)?;
        Ok(free < SHORT_FREE_KIB)
    }

    /// Waits until QMP size == requested on every device, or the guest explains the devices that
    /// did not get there; then checks that the guest agrees, `check: ok` and the hog.
    fn settle(&mut self, t0: Instant, timed: bool) -> Result<Settled> {
        let deadline = Deadline::after(CONVERGE);
        let mut last_vmem: Option<Instant> = None;
        let mut last_vmem_text = String::new();
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
                let mut why = Vec::new();
                for &i in open.iter().filter(|_| !vmem.devices.is_empty()) {
                    let line = Self::vmem_line(&vmem, &devs[i])?;
                    let (state, reason) = (line.state.as_str(), line.reason.as_str());
                    let needs_mem = matches!(reason, "no_memory" | "floor");
                    let short = needs_mem && self.hog_mib.is_none() && self.memory_short()?;
                    if excused(
                        state,
                        reason,
                        devs[i].plugged_bytes > devs[i].requested_bytes,
                        self.hog_mib.is_some(),
                        self.pinned_mib.is_some(),
                        short,
                    ) {
                        why.push((i, reason.to_string()));
                    }
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
                         (hog {:?} MiB, pinned {:?} MiB); last vmem:\n{last_vmem_text}",
                        view.join(", "),
                        self.hog_mib,
                        self.pinned_mib
                    ),
                    waited: t0.elapsed(),
                });
            }
            thread::sleep(POLL_EVERY);
        };
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

    /// `vmem` agrees with QMP on every device: address, node, region, block, requested and
    /// plugged; converged devices show `pending_kib=0 state=ok`. QMP is read before and after
    /// `vmem` and the pair only counts when it did not move in between.
    fn guest_agrees(&mut self, outcome: &Settled) -> Result<()> {
        let deadline = Deadline::after(AGREE);
        loop {
            let before = self.poll_qmp()?;
            let vmem = self.vmem()?;
            let after = self.poll_qmp()?;
            let problem = (|| -> Result<Option<String>> {
                if before != after {
                    return Ok(Some("QMP moved while `vmem` ran".into()));
                }
                if vmem.devices.len() != after.len() {
                    return Ok(Some(format!(
                        "`vmem` shows {} devices, QMP {}",
                        vmem.devices.len(),
                        after.len()
                    )));
                }
                for (i, d) in after.iter().enumerate() {
                    let line = Self::vmem_line(&vmem, d)?;
                    let node = u64::try_from(d.node).unwrap_or(u64::MAX);
                    let want = [
                        ("region_kib", line.region_kib, d.max_bytes / KIB),
                        ("block_kib", line.block_kib, d.block_size_bytes / KIB),
                        ("node", line.node, node),
                        ("plugged_kib", line.plugged_kib, d.plugged_bytes / KIB),
                        ("requested_kib", line.requested_kib, d.requested_bytes / KIB),
                    ];
                    for (key, seen, value) in want {
                        if seen != value {
                            return Ok(Some(format!(
                                "{}: vmem {key}={seen} but QMP says {value}: `{line}`",
                                self.ids[i]
                            )));
                        }
                    }
                    let stalled =
                        matches!(outcome, Settled::Stalled(w) if w.iter().any(|(j, _)| *j == i));
                    if !stalled && !line.converged() {
                        return Ok(Some(format!(
                            "{}: converged in QMP, but `{line}`",
                            self.ids[i]
                        )));
                    }
                }
                Ok(None)
            })()?;
            match problem {
                None => return Ok(()),
                Some(p) if deadline.expired() => {
                    return Err(Error::Timeout {
                        what: format!("`vmem` to agree with QMP: {p}\nvmem:\n{vmem}"),
                        waited: AGREE,
                    })
                }
                Some(_) => thread::sleep(POLL_EVERY),
            }
        }
    }

    fn hog_errors_zero(&mut self) -> Result<()> {
        guest::hog_clean(self.vm.console(), CMD).map(drop)
    }

    fn write_plot(&self) {
        let title = format!(
            "hotmem stress, topology {}, seed {}: requested (dashed) vs plugged (QMP)",
            self.cfg.topology.name(),
            self.cfg.seed
        );
        let text = svg(&title, &self.ids, &self.samples);
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

fn short_size(bytes: u64) -> String {
    if bytes == 0 {
        "0".into()
    } else {
        format_size(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(features: Features) -> ScenarioConfig {
        ScenarioConfig {
            devices: vec![
                DeviceSpec {
                    max_bytes: 2 * GIB,
                    block_bytes: 2 * MIB,
                },
                DeviceSpec {
                    max_bytes: 2 * GIB,
                    block_bytes: 2 * MIB,
                },
            ],
            boot_ram_bytes: GIB,
            features,
        }
    }

    const ALL: Features = Features {
        hog: true,
        pin: true,
    };

    #[test]
    fn splitmix64_reference_values() {
        // The reference sequence for seed 0.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..1000).map(|_| r.between(3, 9)).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..1000).map(|_| r.between(3, 9)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|&v| (3..=9).contains(&v)));
        for v in 3..=9 {
            assert!(a.contains(&v), "{v} never drawn");
        }
        let mut c = Rng::new(43);
        assert_ne!(a, (0..1000).map(|_| c.between(3, 9)).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_steps() {
        let a = Scenario::steps(7, cfg(ALL), 500);
        assert_eq!(a, Scenario::steps(7, cfg(ALL), 500));
        assert_ne!(a, Scenario::steps(8, cfg(ALL), 500));
        // A longer run starts with the shorter one.
        assert_eq!(&Scenario::steps(7, cfg(ALL), 600)[..500], &a[..]);
    }

    #[test]
    fn steps_are_valid_and_cover_every_kind() {
        for features in [Features::default(), ALL] {
            let c = cfg(features);
            let mut s = Scenario::new(1, c.clone());
            let (mut hog, mut pinned) = (false, false);
            let mut kinds = std::collections::BTreeSet::new();
            for _ in 0..3000 {
                let before = s.requested().to_vec();
                let step = s.next_step();
                kinds.insert(step.kind());
                let ok_size = |d: usize, b: u64| {
                    b <= c.devices[d].max_bytes && b % c.devices[d].block_bytes == 0
                };
                match step {
                    Step::Resize {
                        kind,
                        device,
                        bytes,
                    } => {
                        assert!(ok_size(device, bytes), "{step}");
                        let cur = before[device];
                        match kind {
                            Kind::Grow => assert!(bytes > cur, "{step} from {cur}"),
                            Kind::Shrink => assert!(bytes < cur, "{step} from {cur}"),
                            Kind::Zero => assert!(bytes == 0 && cur > 0, "{step}"),
                            Kind::Max => {
                                assert!(bytes == c.devices[device].max_bytes && cur < bytes)
                            }
                            other => panic!("resize of kind {other:?}"),
                        }
                    }
                    Step::Overlap {
                        device,
                        first_bytes,
                        then_bytes,
                        ..
                    } => {
                        assert!(ok_size(device, first_bytes) && ok_size(device, then_bytes));
                        assert_ne!(first_bytes, then_bytes);
                    }
                    Step::Reset => assert!(before.iter().any(|&b| b > 0), "reset with nothing"),
                    Step::HogStart { mib } => {
                        assert!(features.hog && !hog && (32..=512).contains(&mib), "{step}");
                        hog = true;
                    }
                    Step::HogStop => {
                        assert!(hog && !pinned);
                        hog = false;
                    }
                    Step::Pin { mib } => {
                        assert!(features.pin && hog && !pinned && mib >= 1, "{step}");
                        pinned = true;
                    }
                    Step::Unpin => {
                        assert!(pinned);
                        pinned = false;
                    }
                }
                if step == Step::Reset {
                    hog = false;
                    pinned = false;
                }
            }
            let want: Vec<Kind> = if features.hog {
                Kind::ALL.to_vec()
            } else {
                Kind::ALL[..6].to_vec()
            };
            assert_eq!(kinds.into_iter().collect::<Vec<_>>(), want, "{features}");
        }
    }

    #[test]
    fn features_from_help() {
        let old = [
            "help             list commands",
            "vmem             virtio-mem devices",
        ];
        assert_eq!(Features::from_help(&old), Features::default());
        let new = [
            "hog <MiB>|status|stop  movable memory workload",
            "pin <MiB>        pin hog pages",
            "unpin            drop the pins",
        ];
        assert_eq!(Features::from_help(&new), ALL);
        assert_eq!(
            Features::from_help(&new[..1]),
            Features {
                hog: true,
                pin: false
            }
        );
    }

    #[test]
    fn excuses() {
        // (state, reason, shrinking, hog, pinned, memory_short)
        assert!(!excused("ok", "pinned", true, true, true, true));
        assert!(excused("stalled", "pinned", true, true, true, false));
        assert!(
            !excused("stalled", "pinned", false, true, true, false),
            "grow"
        );
        assert!(!excused("stalled", "pinned", true, true, false, true));
        assert!(excused("stalled", "unmovable", true, true, false, false));
        assert!(
            !excused("stalled", "unmovable", false, true, true, true),
            "grow"
        );
        assert!(!excused("stalled", "unmovable", true, false, false, true));
        assert!(excused("stalled", "no_memory", false, true, false, false));
        assert!(excused("stalled", "floor", true, false, false, true));
        assert!(!excused("stalled", "floor", true, false, false, false));
        assert!(!excused("busy", "device_busy", true, true, true, true));
        assert!(!excused("broken", "none", true, true, true, true));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        for bad in ["", "m", "15x", "1m2"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
    }

    #[test]
    fn step_display() {
        let s = Step::Overlap {
            device: 1,
            first_bytes: GIB,
            then_bytes: 0,
            gap_ms: 5,
        };
        assert_eq!(s.to_string(), "overlap vm1 -> 1G then +5ms -> 0");
        let g = Step::Resize {
            kind: Kind::Grow,
            device: 0,
            bytes: 1536 * MIB,
        };
        assert_eq!(g.to_string(), "grow vm0 -> 1536M");
    }

    #[test]
    fn summary_table() {
        let mut s = Summary {
            topology: "default".into(),
            seed: 9,
            resizes: 5,
            plugged_bytes: 3 * GIB + GIB / 2,
            unplugged_bytes: GIB,
            stalls: 1,
            elapsed: Duration::from_secs(125),
            converge: [30, 10, 20].map(Duration::from_millis).to_vec(),
            ..Summary::default()
        };
        s.steps_by_kind.insert(Kind::Grow, 3);
        s.steps_by_kind.insert(Kind::Overlap, 1);
        assert_eq!(s.steps(), 4);
        let t = s.table();
        let row = |name: &str| {
            t.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no {name} row in\n{t}"))
                .split_whitespace()
                .skip(name.split_whitespace().count())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(
            t.starts_with("stress summary: topology default seed 9"),
            "{t}"
        );
        assert_eq!(row("grow"), "3");
        assert_eq!(row("overlap"), "1");
        assert_eq!(row("all steps"), "4");
        assert!(!t.contains("shrink"), "{t}");
        assert_eq!(row("resizes (qom-set)"), "5");
        assert_eq!(row("plugged"), "3.50 GiB");
        assert_eq!(row("unplugged"), "1.00 GiB");
        assert_eq!(row("stalled, excused"), "1");
        assert_eq!(row("failures"), "0");
        assert_eq!(row("vmem not ready after boot"), "0");
        assert_eq!(row("elapsed"), "2:05");
        assert_eq!(row("converge median/max (n=3)"), "20/30 ms");
        assert!(Summary::default().table().contains("converge median/max"));
    }

    #[test]
    fn topologies() {
        assert_eq!(
            Topology::parse("default").unwrap().machine(),
            Machine::default()
        );
        let two = Topology::parse("two-node").unwrap().machine();
        assert_eq!(two.numa.len(), 2);
        assert_eq!(two.boot_ram_bytes(), GIB);
        let nodes: Vec<Option<u32>> = two.virtio_mem.iter().map(|d| d.node).collect();
        assert_eq!(nodes, [Some(0), Some(1)]);
        assert!(Topology::parse("three").is_err());
        assert!(Topology::Default
            .default_plot()
            .ends_with("target/bench/stress.svg"));
    }
}
