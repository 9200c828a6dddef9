//! Benchmarks of `hotmem-qemu bench` (issue 6): the scenarios, the measuring loop, the samples
//! per metric, their statistics, the terminal table and the JSON file.
//!
//! [`measure`] runs each [`Scenario`] of [`default_scenarios`] `runs` times, each on a fresh boot
//! of the machine, and records one sample per run into each [`Metric`]:
//! - `boot`: QEMU spawn to the first `hotmem> ` prompt (every boot);
//! - `mem_round_trip_ms`: one idle `mem` shell round trip (the resolution of the `online` times);
//! - per [`Resize`] step with label `L`: `L_qmp_s` (`qom-set` to QMP `query-memory-devices`
//!   reporting the requested size, polled every millisecond from a second thread, since
//!   `MEMORY_DEVICE_SIZE_CHANGE` events are rate-limited), `L_online_s` (`qom-set` to a `mem`
//!   reply showing all of it free in the Movable zone), `L_guest_s` (the kernel's own time from
//!   its `resized to` log line) and, for the 0 -> 4 GiB plug, `memmap_overhead_kib_per_gib`.
//!
//! The scenario with 1 GiB to migrate also records, per lock class of the kernel's IRQ-masking
//! locks ([`LOCK_CLASSES`]), the longest hold and the 99th percentile over the whole scenario
//! (`lock_<class>_max_us`, `lock_<class>_p99_us`, from the shell's `locks`): under TCG a vCPU
//! thread the host preempts counts as held, so these are figures to read, not to assert on.
//!
//! After every step the guest must agree with QMP (`vmem` converged, `mem` Movable free, `check:
//! ok`); any `PANIC:` or early exit fails the run at once with the instance's report. Issue 5's
//! unplug-with-hog metrics become more [`Step`] kinds and more entries of [`default_scenarios`].
//!
//! The arithmetic, formatting and parsing are unit tested without QEMU.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::instance::{LaunchOptions, Qemu};
use crate::machine::{Machine, GIB, KIB, MIB};
use crate::qmp::Qmp;
use crate::record::Record;

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of samples.
    pub runs: usize,
    /// Middle sample, or the mean of the two middle samples for an even count.
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// Statistics of `samples`; `None` when there are none or one is NaN.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            runs: n,
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// One measured quantity: a table row and an entry of the JSON `metrics` array.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Short name, e.g. `boot`.
    pub name: String,
    /// Unit of the samples, e.g. `s`.
    pub unit: String,
    /// What exactly is measured (goes into the JSON only).
    pub description: String,
    /// One value per run, in run order.
    pub samples: Vec<f64>,
    /// A number to compare with (e.g. Linux on the same QEMU and host), if there is one.
    pub reference: Option<Reference>,
}

/// A reference value for a [`Metric`], in the metric's unit, and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub value: f64,
    pub source: String,
}

impl Metric {
    /// An empty metric.
    pub fn new(name: &str, unit: &str, description: &str) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            description: description.into(),
            samples: Vec::new(),
            reference: None,
        }
    }

    /// Sets the reference value.
    pub fn with_reference(mut self, value: f64, source: &str) -> Metric {
        self.reference = Some(Reference {
            value,
            source: source.into(),
        });
        self
    }

    /// Records one run.
    pub fn push(&mut self, sample: f64) {
        self.samples.push(sample);
    }

    /// Statistics over the samples so far.
    pub fn stats(&self) -> Option<Stats> {
        Stats::of(&self.samples)
    }

    /// The JSON object for this metric.
    pub fn to_json(&self) -> Value {
        let stats = self.stats();
        json!({
            "name": self.name,
            "unit": self.unit,
            "description": self.description,
            "runs": self.samples.len(),
            "samples": self.samples,
            "median": stats.map(|s| s.median),
            "min": stats.map(|s| s.min),
            "max": stats.map(|s| s.max),
            "reference": self.reference.as_ref().map(|r| json!({
                "value": r.value,
                "source": r.source,
            })),
        })
    }
}

/// A benchmark run: its metrics and where they come from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Short machine label ([`crate::Machine`]'s `Display`).
    pub machine: String,
    /// The QEMU command line, shell-quoted.
    pub command_line: String,
    /// `git rev-parse HEAD`, if that worked.
    pub git_commit: Option<String>,
    /// Whether `git status --porcelain` showed local changes (`None` if git did not answer).
    pub git_dirty: Option<bool>,
    /// Seconds since the Unix epoch when the report was made.
    pub timestamp_unix: u64,
    pub metrics: Vec<Metric>,
}

impl Report {
    /// The whole report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "machine": self.machine,
            "qemu_command_line": self.command_line,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "timestamp_unix": self.timestamp_unix,
            "metrics": self.metrics.iter().map(Metric::to_json).collect::<Vec<_>>(),
        })
    }

    /// The terminal table: metric, runs, median, min, max (four decimals, unit in the header
    /// column of each row), and a `reference` column when any metric has a reference value.
    pub fn table(&self) -> String {
        let name_width = self
            .metrics
            .iter()
            .map(|m| m.name.len() + m.unit.len() + 3)
            .chain(["metric".len()])
            .max()
            .unwrap_or(6);
        let with_reference = self.metrics.iter().any(|m| m.reference.is_some());
        let mut t = String::new();
        let mut header = format!(
            "{:<name_width$}  {:>4}  {:>10}  {:>10}  {:>10}",
            "metric", "runs", "median", "min", "max"
        );
        if with_reference {
            header.push_str(&format!("  {:>10}", "reference"));
        }
        let _ = writeln!(t, "{}", header.trim_end());
        for m in &self.metrics {
            let label = format!("{} ({})", m.name, m.unit);
            let mut row = match m.stats() {
                Some(s) => format!(
                    "{label:<name_width$}  {:>4}  {:>10.4}  {:>10.4}  {:>10.4}",
                    s.runs, s.median, s.min, s.max
                ),
                None => format!(
                    "{label:<name_width$}  {:>4}  {:>10}  {:>10}  {:>10}",
                    m.samples.len(),
                    "-",
                    "-",
                    "-"
                ),
            };
            if with_reference {
                match &m.reference {
                    Some(r) => row.push_str(&format!("  {:>10.4}", r.value)),
                    None => row.push_str(&format!("  {:>10}", "-")),
                }
            }
            let _ = writeln!(t, "{row}");
        }
        t
    }

    /// Writes the JSON (pretty, with a trailing newline) to `path`, creating its directory.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let mut text = serde_json::to_string_pretty(&self.to_json())
            .map_err(|e| Error::Protocol(format!("encoding the bench JSON: {e}")))?;
        text.push('\n');
        std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

/// Default output file: `<workspace>/target/bench/bench.json`.
pub fn default_out() -> PathBuf {
    crate::instance::workspace_root()
        .join("target")
        .join("bench")
        .join("bench.json")
}

/// `git rev-parse HEAD` in `dir`, or `None` if git is missing or `dir` is not a repository.
pub fn git_commit(dir: &Path) -> Option<String> {
    let out = git(dir, &["rev-parse", "HEAD"])?;
    let commit = out.trim();
    (!commit.is_empty()).then(|| commit.to_string())
}

/// Whether the work tree in `dir` has local changes, or `None` if git did not answer.
pub fn git_dirty(dir: &Path) -> Option<bool> {
    git(dir, &["status", "--porcelain"]).map(|out| !out.trim().is_empty())
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

// ---------------------------------------------------------------------------------------------
// Parsing what the guest prints.

/// The kernel's log line after a completed resize, e.g.
/// `[INFO] vmem0: resized to 4096 MiB (requested 4096 MiB): plugged 4096 MiB, unplugged 0 MiB,
/// 1 requests, 170000 us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeLog {
    /// Guest device index (`vmemN`, PCI order).
    pub device: u32,
    /// Plugged size after the resize.
    pub size_mib: u64,
    pub requested_mib: u64,
    pub plugged_mib: u64,
    pub unplugged_mib: u64,
    /// Used memory moved out of unplugged blocks (0 when the line predates the field).
    pub migrated_mib: u64,
    /// Device requests sent (PLUG, UNPLUG, STATE, ...).
    pub requests: u64,
    /// Time the guest took, from the first step that saw the new request to convergence.
    pub us: u64,
}

/// Parses one resize log line (anything before `vmemN:` is ignored, so the `[INFO] ` prefix and
/// a prompt the log interrupted do not matter).
pub fn parse_resize_log(line: &str) -> Option<ResizeLog> {
    let at = line.find(": resized to ")?;
    let head = &line[..at];
    let device = head[head.rfind("vmem")? + 4..].parse().ok()?;
    let rest = &line[at + ": resized to ".len()..];
    let (size_mib, rest) = number_then(rest, " MiB (requested ")?;
    let (requested_mib, rest) = number_then(rest, " MiB): plugged ")?;
    let (plugged_mib, rest) = number_then(rest, " MiB, unplugged ")?;
    let (unplugged_mib, rest) = number_then(rest, " MiB, ")?;
    let (migrated_mib, rest) = match rest.strip_prefix("migrated ") {
        Some(r) => number_then(r, " MiB, ")?,
        None => (0, rest),
    };
    let (requests, rest) = number_then(rest, " requests, ")?;
    let (us, rest) = number_then(rest, " us")?;
    rest.trim().is_empty().then_some(ResizeLog {
        device,
        size_mib,
        requested_mib,
        plugged_mib,
        unplugged_mib,
        migrated_mib,
        requests,
        us,
    })
}

/// A decimal number at the start of `text` followed by `sep`; the number and what follows `sep`.
fn number_then<'a>(text: &'a str, sep: &str) -> Option<(u64, &'a str)> {
    let (n, rest) = text.split_once(sep)?;
    Some((n.parse().ok()?, rest))
}

/// The first resize log line in `text` for guest device `device` that reached `size_mib` with
/// exactly that much requested.
pub fn find_resize_log(text: &str, device: u32, size_mib: u64) -> Option<ResizeLog> {
    text.lines()
        .filter_map(|l| parse_resize_log(l.trim_end_matches('\r')))
        .find(|r| r.device == device && r.size_mib == size_mib && r.requested_mib == size_mib)
}

/// Sum of `field` over the per-node records of `zone` in `mem` output (the `node=all` total is
/// left out). Fails when no node has that zone, so a changed output format is noticed.
pub fn zone_sum(mem: &[Record], zone: &str, field: &str) -> Result<u64> {
    let mut found = false;
    let mut sum = 0;
    for r in mem
        .iter()
        .filter(|r| r.is("zone", zone) && !r.is("node", "all"))
    {
        found = true;
        sum += r.u64(field)?;
    }
    if !found {
        return Err(Error::Protocol(format!(
            "`mem` printed no per-node zone={zone} line"
        )));
    }
    Ok(sum)
}

// ---------------------------------------------------------------------------------------------
// Scenarios and the measuring loop.

/// QEMU id of the (first) virtio-mem device, the one `qom-set` resizes.
pub const VMEM_QEMU_ID: &str = "vm0";
/// The guest's index of that device (`vmem0`).
const VMEM_GUEST_INDEX: u32 = 0;
/// Deadline for one resize step (request, convergence, log line, checks).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for one idle shell command or QMP query.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for `poweroff` and QEMU's exit after each scenario.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between QMP `query-memory-devices` polls.
const QMP_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// Pause between scans of the console transcript for the resize log line.
const LOG_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// `mem` round trips timed on the idle guest at the start of each scenario.
const IDLE_ROUND_TRIPS: usize = 5;

/// Linux 6.12 as a guest on the same QEMU and host (issue 4).
const LINUX_SOURCE: &str = "Linux 6.12 guest, same QEMU and host (issue 4)";

/// Metric names that do not belong to a step.
pub const BOOT_METRIC: &str = "boot";
pub const MEM_ROUND_TRIP_METRIC: &str = "mem_round_trip_ms";
pub const MEMMAP_OVERHEAD_METRIC: &str = "memmap_overhead_kib_per_gib";

/// One `qom-set vm0 requested-size` and everything measured until the guest converged.
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    /// Metric name prefix (`plug_0_4g` gives `plug_0_4g_qmp_s`, ...); `None` for a setup step
    /// that is checked but not recorded.
    pub label: Option<&'static str>,
    /// Plugged size before the step (checked).
    pub from_bytes: u64,
    /// Requested size.
    pub to_bytes: u64,
    /// Also measure `<label>_online_s`: poll `mem` until the Movable zones' free memory equals
    /// `to_bytes` (meaningful for plugs onto an empty device).
    pub online: bool,
    /// Also record [`MEMMAP_OVERHEAD_METRIC`] from this step.
    pub overhead: bool,
    /// Linux's median for `<label>_qmp_s` and `<label>_online_s`, seconds.
    pub linux_s: Option<f64>,
    /// Also record `<label>_migrated_mib` and `<label>_migrate_mib_per_s` (from the kernel's
    /// resize log line: used memory moved out of the unplugged blocks, per guest second).
    pub migration: bool,
}

impl Resize {
    fn metrics(&self) -> Vec<Metric> {
        let Some(label) = self.label else {
            return Vec::new();
        };
        let what = format!(
            "`qom-set {VMEM_QEMU_ID} requested-size {}` (plugged {} before)",
            crate::format_size(self.to_bytes),
            crate::format_size(self.from_bytes)
        );
        let linux = |m: Metric| match self.linux_s {
            Some(v) => m.with_reference(v, LINUX_SOURCE),
            None => m,
        };
        let mut out = vec![linux(Metric::new(
            &format!("{label}_qmp_s"),
            "s",
            &format!(
                "from sending {what} until QMP query-memory-devices reports size == requested \
                 (polled every {} ms from a second thread)",
                QMP_POLL_INTERVAL.as_millis()
            ),
        ))];
        if self.online {
            out.push(linux(Metric::new(
                &format!("{label}_online_s"),
                "s",
                &format!(
                    "from sending {what} until a `mem` reply shows the Movable zones' free_kib \
                     (sum over nodes) == requested: `mem` is sent back to back, so this is an \
                     upper bound: a reply arrives up to one `mem` round trip after the state it \
                     shows (see {MEM_ROUND_TRIP_METRIC}; not subtracted)"
                ),
            )));
        }
        out.push(Metric::new(
            &format!("{label}_guest_s"),
            "s",
            &format!(
                "the kernel's own time for {what}: the `us` of its `vmem0: resized to ...` log \
                 line (first convergence step that saw the request to convergence)"
            ),
        ));
        if self.migration {
            out.push(Metric::new(
                &format!("{label}_migrated_mib"),
                "MiB",
                &format!("used memory the kernel moved out of unplugged blocks during {what}"),
            ));
            out.push(Metric::new(
                &format!("{label}_migrate_mib_per_s"),
                "MiB/s",
                &format!("{label}_migrated_mib divided by {label}_guest_s"),
            ));
        }
        if self.overhead {
            out.push(
                Metric::new(
                    MEMMAP_OVERHEAD_METRIC,
                    "KiB/GiB",
                    &format!(
                        "Normal zone managed_kib (sum over nodes) before minus after {what} \
                         converged, per GiB plugged: existing memory spent on bookkeeping \
                         (mem_map, section tables, page tables)"
                    ),
                )
                .with_reference(
                    17.0 * 1024.0,
                    "Linux 6.12 guest: about 17 MiB per GiB (issue 4)",
                ),
            );
        }
        out
    }
}

/// One step of a scenario. Issue 5 adds hog and pin steps (start a hog of N MiB, check its
/// errors, stop it) so that scenarios such as "plug 4 GiB, hog 1 GiB, unplug to 1 GiB" become
/// more entries of [`default_scenarios`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Resize(Resize),
    /// `hog <MiB>`, then wait until it mapped everything and verified it once.
    Hog(u64),
    /// `hog stop`; its errors must be 0.
    HogStop,
    /// `locks reset`: lock holds count from here.
    LocksReset,
    /// `locks`: records `lock_<class>_max_us` and `lock_<class>_p99_us` for every class of
    /// [`LOCK_CLASSES`] (0 for a class not held since the reset).
    Locks,
}

/// The kernel's lock classes (`lock=` of the shell's `locks`) that [`Step::Locks`] records.
pub const LOCK_CLASSES: &[&str] = &[
    "mm",
    "mm_check",
    "rmap",
    "spaces",
    "heap",
    "sched",
    "waitq",
    "aspace",
    "kernel_pt",
    "asids",
    "console",
    "console_rx",
    "vmem_devices",
    "vmem_status",
    "hog",
    "pins",
    "other",
];

/// One lock class's line of `locks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolds {
    pub class: String,
    pub holds: u64,
    pub max_us: u64,
    pub p99_us: u64,
}

/// The records of `locks`, one per class.
pub fn parse_locks(records: &[Record]) -> Result<Vec<LockHolds>> {
    records
        .iter()
        .map(|r| {
            Ok(LockHolds {
                class: r.str("lock")?.to_string(),
                holds: r.u64("holds")?,
                max_us: r.u64("max_us")?,
                p99_us: r.u64("p99_us")?,
            })
        })
        .collect()
}

impl Step {
    fn metrics(&self) -> Vec<Metric> {
        match self {
            Step::Resize(r) => r.metrics(),
            Step::Locks => LOCK_CLASSES
                .iter()
                .flat_map(|c| {
                    let what = format!(
                        "`{c}` lock class (shell `locks`) over the scenario: from `locks reset` \
                         after boot to `locks` at its end; a vCPU thread the host preempts while \
                         holding counts as held, so this is a figure, not a bound"
                    );
                    [
                        Metric::new(
                            &format!("lock_{c}_max_us"),
                            "us",
                            &format!("longest hold (IRQs masked) of the {what}"),
                        ),
                        Metric::new(
                            &format!("lock_{c}_p99_us"),
                            "us",
                            &format!(
                                "99th percentile of the holds (the end of its log2 bucket, at \
                                 most the longest) of the {what}"
                            ),
                        ),
                    ]
                })
                .collect(),
            Step::Hog(_) | Step::HogStop | Step::LocksReset => Vec::new(),
        }
    }

    /// The most memory the step needs the device to be able to plug.
    fn max_bytes(&self) -> u64 {
        match self {
            Step::Resize(r) => r.from_bytes.max(r.to_bytes),
            Step::Hog(_) | Step::HogStop | Step::LocksReset | Step::Locks => 0,
        }
    }
}

/// Steps run in order on one fresh boot.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    /// Boot RAM instead of the bench machine's.
    pub ram_bytes: Option<u64>,
    pub steps: Vec<Step>,
}

impl Scenario {
    /// The metrics its steps record, in step order.
    pub fn metrics(&self) -> Vec<Metric> {
        self.steps.iter().flat_map(Step::metrics).collect()
    }
}

/// The scenarios of `bench`, each on a fresh boot: 0 -> 4 GiB -> 0 (idle), 0 -> 1 GiB -> 0
/// (idle), 4 -> 1 GiB with 1 GiB of hog data, 4 GiB -> 0 with 1 GiB of hog data and 2 GiB of
/// boot RAM (all of it migrates; the lock holds of this whole scenario are recorded).
pub fn default_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "plug_4g_unplug_idle",
            ram_bytes: None,
            steps: vec![
                Step::Resize(Resize {
                    label: Some("plug_0_4g"),
                    from_bytes: 0,
                    to_bytes: 4 * GIB,
                    online: true,
                    overhead: true,
                    linux_s: Some(0.21),
                    migration: false,
                }),
                Step::Resize(Resize {
                    label: Some("unplug_4g_0_idle"),
                    from_bytes: 4 * GIB,
                    to_bytes: 0,
                    online: false,
                    overhead: false,
                    linux_s: Some(3.3),
                    migration: false,
                }),
            ],
        },
        Scenario {
            name: "plug_1g",
            ram_bytes: None,
            steps: vec![
                Step::Resize(Resize {
                    label: Some("plug_0_1g"),
                    from_bytes: 0,
                    to_bytes: GIB,
                    online: true,
                    overhead: false,
                    linux_s: Some(0.09),
                    migration: false,
                }),
                Step::Resize(Resize {
                    label: Some("unplug_1g_0_idle"),
                    from_bytes: GIB,
                    to_bytes: 0,
                    online: false,
                    overhead: false,
                    linux_s: Some(1.07),
                    migration: false,
                }),
            ],
        },
        Scenario {
            name: "unplug_4g_1g_hog1g",
            ram_bytes: None,
            steps: vec![
                setup_resize(0, 4 * GIB),
                Step::Hog(1024),
                Step::Resize(Resize {
                    label: Some("unplug_4g_1g_hog1g"),
                    from_bytes: 4 * GIB,
                    to_bytes: GIB,
                    online: false,
                    overhead: false,
                    linux_s: Some(2.4),
                    migration: true,
                }),
                Step::HogStop,
            ],
        },
        Scenario {
            name: "unplug_4g_0_hog1g_ram2g",
            ram_bytes: Some(2 * GIB),
            steps: vec![
                Step::LocksReset,
                setup_resize(0, 4 * GIB),
                Step::Hog(1024),
                Step::Resize(Resize {
                    label: Some("unplug_4g_0_hog1g_ram2g"),
                    from_bytes: 4 * GIB,
                    to_bytes: 0,
                    online: false,
                    overhead: false,
                    linux_s: None,
                    migration: true,
                }),
                Step::HogStop,
                Step::Locks,
            ],
        },
    ]
}

/// A checked, unrecorded resize that sets a scenario up.
fn setup_resize(from_bytes: u64, to_bytes: u64) -> Step {
    Step::Resize(Resize {
        label: None,
        from_bytes,
        to_bytes,
        online: false,
        overhead: false,
        linux_s: None,
        migration: false,
    })
}

/// What [`measure`] runs.
pub struct BenchConfig<'a> {
    pub machine: &'a Machine,
    pub options: &'a LaunchOptions,
    pub runs: usize,
    pub boot_timeout: Duration,
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
    for sc in &cfg.scenarios {
        for m in sc.metrics() {
            if !metrics.iter().any(|have| have.name == m.name) {
                metrics.push(m);
            }
        }
    }
    let mut command_line = String::new();
    for run in 1..=cfg.runs {
        for sc in &cfg.scenarios {
            let machine = match sc.ram_bytes {
                Some(ram) => cfg.machine.clone().ram(ram),
                None => cfg.machine.clone(),
            };
            let mut vm = Qemu::launch_with(&machine, cfg.options)?;
            if command_line.is_empty() {
                command_line = vm.command_line();
                eprintln!("# {command_line}");
            }
            let mut progress = Vec::new();
            let result = run_scenario(&mut vm, cfg, sc, &mut metrics, &mut progress);
            eprintln!(
                "# run {run}/{} {}: {}",
                cfg.runs,
                sc.name,
                progress.join(", ")
            );
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
    Ok(Measured {
        metrics,
        command_line,
    })
}

/// Name of the boot-time mem_map cost metric.
pub const MM_INIT_METRIC: &str = "mm_init_us_per_gib";
/// RAM of the machine [`measure_mm_init`] boots.
const MM_INIT_RAM: u64 = 4 * GIB;

/// The `us` of the kernel's boot line `mm: … init N us`.
pub fn parse_mm_init_us(text: &str) -> Option<u64> {
    text.lines()
        .filter(|l| l.contains("mm: ") && l.contains(" init "))
        .find_map(|l| {
            let rest = &l[l.find(" init ")? + 6..];
            rest.strip_suffix(" us")?.trim().parse().ok()
        })
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
    let mut m = Metric::new(
        MM_INIT_METRIC,
        "us/GiB",
        "the kernel's `mm: ... init N us` at boot (Mm::boot: early allocator, mem_maps, buddy) \
         on a machine with 4 GiB of RAM, divided by 4",
    );
    for _ in 0..runs {
        let mut vm = Qemu::launch_with(&machine, options)?;
        vm.wait_for_boot(boot_timeout)?;
        let text = vm.console().transcript();
        let Some(us) = parse_mm_init_us(&text) else {
            eprintln!("\n{}", vm.report());
            return Err(Error::Machine("no `mm: ... init N us` line at boot".into()));
        };
        m.push(us as f64 / (MM_INIT_RAM / GIB) as f64);
        vm.poweroff(POWEROFF_TIMEOUT)?;
    }
    Ok(m)
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
    progress: &mut Vec<String>,
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
            Step::Resize(r) => resize(vm, r, hog, metrics, progress)?,
            Step::Hog(mib) => {
                start_hog(vm, *mib)?;
                hog = true;
                progress.push(format!("hog {mib} MiB"));
            }
            Step::HogStop => {
                let out = vm.console().command("hog stop", STEP_TIMEOUT)?;
                if hog_field(&out.lines, "errors") != Some(0) {
                    return Err(Error::Protocol(format!("hog stop: {:?}", out.text())));
                }
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
                let holds = parse_locks(&out.records()?)?;
                for c in LOCK_CLASSES {
                    let (max, p99) = holds
                        .iter()
                        .find(|h| h.class == *c)
                        .map_or((0, 0), |h| (h.max_us, h.p99_us));
                    record(metrics, &format!("lock_{c}_max_us"), max as f64);
                    record(metrics, &format!("lock_{c}_p99_us"), p99 as f64);
                }
                let worst = holds.iter().max_by_key(|h| h.max_us);
                if let Some(w) = worst {
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
    hog: bool,
    metrics: &mut [Metric],
    progress: &mut Vec<String>,
) -> Result<()> {
    let deadline = Deadline::after(STEP_TIMEOUT);
    let to_kib = r.to_bytes / KIB;
    let to_mib = r.to_bytes / MIB;
    let size = crate::format_size(r.to_bytes);

    let before = vm.console().command("mem", COMMAND_TIMEOUT)?.records()?;
    let managed_before = zone_sum(&before, "Normal", "managed_kib")?;
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
    qmp.set_requested_size(VMEM_QEMU_ID, r.to_bytes, COMMAND_TIMEOUT)?;
    let (qmp_result, guest_result) = thread::scope(|s| {
        let poller = s.spawn(|| poll_qmp(qmp, r.to_bytes, t0, deadline, &stop));
        let guest = (|| {
            let mut online = None;
            if r.online {
                let mut polls = 0u32;
                loop {
                    let mem = console.command("mem", deadline)?.records()?;
                    polls += 1;
                    let free = zone_sum(&mem, "Movable", "free_kib")?;
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
            let log = wait_resize_log(console, log_from, to_mib, deadline)?;
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

    let after = vm.console().command("mem", COMMAND_TIMEOUT)?.records()?;
    let managed_after = zone_sum(&after, "Normal", "managed_kib")?;
    // With a hog running the Movable zone holds its data: compare what is present.
    let field = if hog { "present_kib" } else { "free_kib" };
    let movable_after = zone_sum(&after, "Movable", field)?;
    if movable_after != to_kib {
        return Err(Error::Protocol(format!(
            "after resizing to {size}: Movable {field} is {movable_after}, expected {to_kib}"
        )));
    }
    if hog {
        let st = vm.console().command("hog status", COMMAND_TIMEOUT)?;
        if hog_field(&st.lines, "errors") != Some(0) {
            return Err(Error::Protocol(format!(
                "after resizing to {size}: {:?}",
                st.text()
            )));
        }
    }
    check_vmem(vm, r.to_bytes)?;
    let check = vm.console().command("check", COMMAND_TIMEOUT)?;
    if check.text().trim() != "check: ok" {
        return Err(Error::Protocol(format!(
            "after resizing to {size}: `check` printed {:?}",
            check.text()
        )));
    }

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
    let overhead = (r.to_bytes > r.from_bytes).then(|| {
        let gib = (r.to_bytes - r.from_bytes) as f64 / GIB as f64;
        (managed_before as f64 - managed_after as f64) / gib
    });
    match overhead {
        Some(o) => {
            let _ = write!(note, ", overhead {o:.0} KiB/GiB");
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
        if r.overhead {
            if let Some(o) = overhead {
                record(metrics, MEMMAP_OVERHEAD_METRIC, o);
            }
        }
    }
    Ok(())
}

/// Field `key` of the first `hog: …` line among `lines` (see
/// [`crate::stress::parse_hog_status`]).
fn hog_field(lines: &[String], key: &str) -> Option<u64> {
    lines
        .iter()
        .find_map(|l| crate::stress::parse_hog_status(l))
        .and_then(|r| r.u64(key).ok())
}

/// `hog <MiB>`, then waits until every page is mapped and verified once (rounds >= 1).
fn start_hog(vm: &mut Qemu, mib: u64) -> Result<()> {
    let out = vm
        .console()
        .command(&format!("hog {mib}"), COMMAND_TIMEOUT)?;
    if !out.text().contains("hog: started") {
        return Err(Error::Protocol(format!("hog {mib}: {:?}", out.text())));
    }
    let want = mib * MIB / 4096;
    let deadline = Deadline::after(STEP_TIMEOUT);
    loop {
        let out = vm.console().command("hog status", COMMAND_TIMEOUT)?;
        let (pages, rounds) = (
            hog_field(&out.lines, "pages"),
            hog_field(&out.lines, "rounds"),
        );
        if pages == Some(want) && rounds.unwrap_or(0) >= 1 {
            return Ok(());
        }
        let st = out.text();
        if deadline.expired() {
            return Err(Error::Timeout {
                what: format!("hog {mib} to map and verify once: {st:?}"),
                waited: STEP_TIMEOUT,
            });
        }
        thread::sleep(Duration::from_millis(200));
    }
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

/// Waits for the resize log line to `size_mib` in the transcript from byte `from` (the line may
/// already have been consumed by a `mem` poll, so this scans the transcript, not the cursor).
/// Fails at once on a `PANIC:` line or when QEMU exited.
fn wait_resize_log(
    console: &mut Console,
    from: usize,
    size_mib: u64,
    deadline: Deadline,
) -> Result<ResizeLog> {
    let what = format!("the `vmem{VMEM_GUEST_INDEX}: resized to {size_mib} MiB` log line");
    let started = Instant::now();
    loop {
        if let Some(log) = find_resize_log(&console.text_since(from), VMEM_GUEST_INDEX, size_mib) {
            return Ok(log);
        }
        if let Some(line) = console.panic_line() {
            return Err(Error::GuestPanic { what, line });
        }
        if console.closed() {
            return Err(Error::QemuExited {
                what,
                status: None,
                stderr: String::new(),
            });
        }
        if deadline.expired() {
            return Err(Error::Timeout {
                what,
                waited: started.elapsed(),
            });
        }
        thread::sleep(LOG_POLL_INTERVAL);
    }
}

/// `vmem` must show the device converged at `bytes`: plugged and requested equal, nothing
/// pending, state ok.
fn check_vmem(vm: &mut Qemu, bytes: u64) -> Result<()> {
    let records = vm.console().command("vmem", COMMAND_TIMEOUT)?.records()?;
    let dev = records
        .iter()
        .find(|r| r.is("id", &format!("vmem{VMEM_GUEST_INDEX}")))
        .ok_or_else(|| Error::Protocol(format!("`vmem` shows no vmem{VMEM_GUEST_INDEX}")))?;
    let kib = bytes / KIB;
    let ok = dev.u64("plugged_kib")? == kib
        && dev.u64("requested_kib")? == kib
        && dev.u64("pending_kib")? == 0
        && dev.is("state", "ok");
    if !ok {
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
    fn stats_odd_count() {
        let s = Stats::of(&[3.0, 1.0, 2.0, 5.0, 4.0]).unwrap();
        assert_eq!(
            s,
            Stats {
                runs: 5,
                median: 3.0,
                min: 1.0,
                max: 5.0
            }
        );
    }

    #[test]
    fn stats_even_count_averages_the_middle_pair() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.runs, 4);
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn stats_single_and_empty() {
        let s = Stats::of(&[0.75]).unwrap();
        assert_eq!((s.runs, s.median, s.min, s.max), (1, 0.75, 0.75, 0.75));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn stats_do_not_reorder_samples() {
        let mut m = Metric::new("boot", "s", "spawn to prompt");
        for v in [2.0, 1.0, 3.0] {
            m.push(v);
        }
        assert_eq!(m.stats().unwrap().median, 2.0);
        assert_eq!(m.samples, vec![2.0, 1.0, 3.0]);
    }

    fn sample_report() -> Report {
        let mut boot = Metric::new("boot", "s", "spawn to prompt");
        boot.samples = vec![1.25, 1.0, 1.5];
        Report {
            machine: "max gic3 el1 smp2 512M+vmem4G".into(),
            command_line: "qemu-system-aarch64 -M virt".into(),
            git_commit: Some("abc".into()),
            git_dirty: Some(false),
            timestamp_unix: 1,
            metrics: vec![boot, Metric::new("unplug", "s", "not measured")],
        }
    }

    #[test]
    fn json_has_samples_and_stats() {
        let j = sample_report().to_json();
        assert_eq!(j["git_commit"], "abc");
        assert_eq!(j["qemu_command_line"], "qemu-system-aarch64 -M virt");
        let boot = &j["metrics"][0];
        assert_eq!(boot["name"], "boot");
        assert_eq!(boot["runs"], 3);
        assert_eq!(boot["samples"], json!([1.25, 1.0, 1.5]));
        assert_eq!(boot["median"], 1.25);
        assert_eq!(boot["min"], 1.0);
        assert_eq!(boot["max"], 1.5);
        assert_eq!(j["metrics"][1]["median"], Value::Null);
    }

    #[test]
    fn table_rows() {
        let t = sample_report().table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("metric"), "{t}");
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            ["boot", "(s)", "3", "1.2500", "1.0000", "1.5000"],
            "{t}"
        );
        assert!(lines[2].contains(" - "), "{t}");
    }

    #[test]
    fn write_json_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("bench.json");
        sample_report().write_json(&path).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, sample_report().to_json());
    }

    #[test]
    fn reference_in_json_and_table() {
        let mut r = sample_report();
        let mut plug = Metric::new("plug_0_4g_qmp_s", "s", "qom-set to QMP size")
            .with_reference(0.21, "Linux");
        plug.samples = vec![0.0061];
        r.metrics.push(plug);
        let j = r.to_json();
        assert_eq!(j["metrics"][0]["reference"], Value::Null);
        assert_eq!(j["metrics"][2]["reference"]["value"], 0.21);
        assert_eq!(j["metrics"][2]["reference"]["source"], "Linux");
        let t = r.table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("reference"), "{t}");
        let boot: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(boot.last(), Some(&"-"), "{t}");
        let plug: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            plug,
            [
                "plug_0_4g_qmp_s",
                "(s)",
                "1",
                "0.0061",
                "0.0061",
                "0.0061",
                "0.2100"
            ],
            "{t}"
        );
    }

    const RESIZE_LINE: &str = "[INFO] vmem0: resized to 4096 MiB (requested 4096 MiB): plugged \
                               4096 MiB, unplugged 0 MiB, 1 requests, 170000 us";

    #[test]
    fn mm_init_line_parses() {
        let t = "[INFO] mm: 4 sections present\r\n[INFO] mm: 4096 MiB present, 4000 MiB managed, mem_map 32 bytes/page, init 1234 us\r\n";
        assert_eq!(parse_mm_init_us(&t.replace('\r', "")), Some(1234));
        assert_eq!(parse_mm_init_us("[INFO] mm: nothing"), None);
    }

    #[test]
    fn resize_log_parses() {
        assert_eq!(
            parse_resize_log(RESIZE_LINE),
            Some(ResizeLog {
                device: 0,
                size_mib: 4096,
                requested_mib: 4096,
                plugged_mib: 4096,
                unplugged_mib: 0,
                migrated_mib: 0,
                requests: 1,
                us: 170_000,
            })
        );
        let r = parse_resize_log(
            "[INFO] vmem0: resized to 1024 MiB (requested 1024 MiB): plugged 0 MiB, \
             unplugged 3072 MiB, migrated 512 MiB, 9 requests, 900000 us",
        )
        .unwrap();
        assert_eq!(
            (r.unplugged_mib, r.migrated_mib, r.requests),
            (3072, 512, 9)
        );
        // A log that interrupted the prompt, another device, an unplug.
        let r = parse_resize_log(
            "hotmem> [INFO] vmem12: resized to 0 MiB (requested 0 MiB): plugged 0 MiB, \
             unplugged 1024 MiB, 3 requests, 34 us",
        )
        .unwrap();
        assert_eq!(
            (r.device, r.size_mib, r.unplugged_mib, r.requests, r.us),
            (12, 0, 1024, 3, 34)
        );
    }

    #[test]
    fn resize_log_rejects_other_lines() {
        for line in [
            "[INFO] vmem0: unplugged 4 MiB left plugged from before",
            "[INFO] vmem0: resized to 4096 MiB (requested 4096 MiB)",
            "[INFO] vmem0: resized to x MiB (requested 4096 MiB): plugged 4096 MiB, unplugged 0 \
             MiB, 1 requests, 170000 us",
            "[INFO] vmem0: resized to 4096 MiB (requested 4096 MiB): plugged 4096 MiB, unplugged \
             0 MiB, 1 requests, 170000 us and more",
            "[INFO] dev: resized to 4096 MiB (requested 4096 MiB): plugged 4096 MiB, unplugged 0 \
             MiB, 1 requests, 170000 us",
        ] {
            assert_eq!(parse_resize_log(line), None, "{line}");
        }
    }

    #[test]
    fn find_resize_log_matches_device_and_size() {
        let text = format!(
            "mem\r\n[INFO] vmem1: resized to 4096 MiB (requested 4096 MiB): plugged 4096 MiB, \
             unplugged 0 MiB, 1 requests, 5 us\r\n[INFO] vmem0: resized to 1024 MiB (requested \
             1024 MiB): plugged 1024 MiB, unplugged 0 MiB, 1 requests, 6 us\r\nhotmem> \
             {RESIZE_LINE}\r\nhotmem> "
        );
        assert_eq!(find_resize_log(&text, 0, 4096).unwrap().us, 170_000);
        assert_eq!(find_resize_log(&text, 1, 4096).unwrap().us, 5);
        assert_eq!(find_resize_log(&text, 0, 1024).unwrap().us, 6);
        assert_eq!(find_resize_log(&text, 0, 2048), None);
    }

    #[test]
    fn zone_sums_over_nodes_without_the_total() {
        let mem = crate::parse_records(&[
            "node=0 zone=Normal present_kib=262144 managed_kib=257000 free_kib=250000",
            "node=0 zone=Movable present_kib=2097152 managed_kib=2097152 free_kib=2097152",
            "node=1 zone=Normal present_kib=262144 managed_kib=258000 free_kib=251000",
            "node=1 zone=Movable present_kib=2097152 managed_kib=2097152 free_kib=2097000",
            "node=all zone=all present_kib=4718592 managed_kib=4709304 free_kib=4695152",
        ])
        .unwrap();
        assert_eq!(zone_sum(&mem, "Movable", "free_kib").unwrap(), 4_194_152);
        assert_eq!(zone_sum(&mem, "Normal", "managed_kib").unwrap(), 515_000);
        assert!(zone_sum(&mem, "DMA", "free_kib").is_err());
        assert!(zone_sum(&mem, "Normal", "bogus_kib").is_err());
    }

    #[test]
    fn locks_lines_parse() {
        let recs = crate::record::parse_records(&[
            "lock=mm holds=120 max_us=950 p99_us=64",
            "lock=rmap holds=3 max_us=12 p99_us=12",
        ])
        .unwrap();
        let h = parse_locks(&recs).unwrap();
        assert_eq!(
            h[0],
            LockHolds {
                class: "mm".into(),
                holds: 120,
                max_us: 950,
                p99_us: 64
            }
        );
        assert_eq!(h[1].class, "rmap");
        let bad = crate::record::parse_records(&["lock=mm holds=1"]).unwrap();
        assert!(parse_locks(&bad).is_err());
    }

    #[test]
    fn default_scenarios_declare_the_issue_metrics() {
        let names: Vec<String> = default_scenarios()
            .iter()
            .flat_map(Scenario::metrics)
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "plug_0_4g_qmp_s",
                "plug_0_4g_online_s",
                "plug_0_4g_guest_s",
                MEMMAP_OVERHEAD_METRIC,
                "unplug_4g_0_idle_qmp_s",
                "unplug_4g_0_idle_guest_s",
                "plug_0_1g_qmp_s",
                "plug_0_1g_online_s",
                "plug_0_1g_guest_s",
                "unplug_1g_0_idle_qmp_s",
                "unplug_1g_0_idle_guest_s",
                "unplug_4g_1g_hog1g_qmp_s",
                "unplug_4g_1g_hog1g_guest_s",
                "unplug_4g_1g_hog1g_migrated_mib",
                "unplug_4g_1g_hog1g_migrate_mib_per_s",
                "unplug_4g_0_hog1g_ram2g_qmp_s",
                "unplug_4g_0_hog1g_ram2g_guest_s",
                "unplug_4g_0_hog1g_ram2g_migrated_mib",
                "unplug_4g_0_hog1g_ram2g_migrate_mib_per_s",
            ]
            .into_iter()
            .map(String::from)
            .chain(
                LOCK_CLASSES
                    .iter()
                    .flat_map(|c| [format!("lock_{c}_max_us"), format!("lock_{c}_p99_us")])
            )
            .collect::<Vec<_>>()
        );
        let all: Vec<Metric> = default_scenarios()
            .iter()
            .flat_map(Scenario::metrics)
            .collect();
        let reference = |name: &str| {
            all.iter()
                .find(|m| m.name == name)
                .and_then(|m| m.reference.as_ref())
                .map(|r| r.value)
        };
        assert_eq!(reference("plug_0_4g_online_s"), Some(0.21));
        assert_eq!(reference("plug_0_1g_qmp_s"), Some(0.09));
        assert_eq!(reference(MEMMAP_OVERHEAD_METRIC), Some(17.0 * 1024.0));
        assert_eq!(reference("unplug_4g_0_idle_qmp_s"), Some(3.3));
        assert_eq!(reference("unplug_1g_0_idle_qmp_s"), Some(1.07));
        assert_eq!(reference("unplug_4g_1g_hog1g_qmp_s"), Some(2.4));
        // Linux was not measured with data to migrate on 4 GiB -> 0: no reference.
        assert_eq!(reference("unplug_4g_0_hog1g_ram2g_qmp_s"), None);
    }
}
