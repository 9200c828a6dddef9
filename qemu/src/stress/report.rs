//! What a stress run shows and leaves behind: the progress line, the summary table and the
//! failure directory.
//!
//! - `Progress`: one terminal line updated in place per step, or a plain line per finished
//!   step when stdout is not a terminal (CI logs).
//! - [`Summary`]: steps per kind, `qom-set`s, bytes plugged and unplugged, excused stalls,
//!   failures, `vmem` not ready after a boot, elapsed time, the median/maximum convergence
//!   time, and with `--inject` the steps that carried a fault and how often faults fired; [`Summary::table`] is printed at the end of every run.
//! - `save_failure`: `<out>/<seed>-<step>/` with everything needed to understand and replay a
//!   failed step: `failure.txt` (seed, topology, devices, the failed step, the error, the command
//!   that replays it and the steps so far), `seed`, `console-tail.txt`, `console.txt`, `qmp.txt`,
//!   `command-line.txt`, `qemu-stderr.txt`, `stress.svg`, and QEMU's own view of a guest that
//!   stopped answering: `vcpus.txt` (`info registers -a`) and `pic.txt` (`info pic`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::instance::Qemu;
use crate::machine::GIB;
use crate::stats::Stats;

use super::config::StressConfig;
use super::scenario::Kind;
use super::{QMP, TAIL_LINES};

/// What a run did; [`Summary::table`] is printed at the end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// [`super::Topology::name`].
    pub topology: String,
    /// The run's seed.
    pub seed: u64,
    /// Steps played, per kind.
    pub steps_by_kind: BTreeMap<Kind, usize>,
    /// `qom-set`s sent.
    pub resizes: usize,
    /// Sum of QMP size increases / decreases seen while polling.
    pub plugged_bytes: u64,
    /// See [`Summary::plugged_bytes`].
    pub unplugged_bytes: u64,
    /// Steps that ended with a device stalled for an excused reason.
    pub stalls: usize,
    /// Failed steps (a run stops at the first).
    pub failures: usize,
    /// `vmem` answers "no virtio-mem device" (after a boot, before the guest published status).
    pub vmem_not_ready: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// From the last action of a resize or reset step to QMP size == requested on all devices
    /// (steps that carried a fault left out).
    pub converge: Vec<Duration>,
    /// Steps that carried a fault (`--inject`).
    pub injected: usize,
    /// Times those faults fired in the guest.
    pub faults_fired: u64,
}

impl Summary {
    /// All steps played.
    pub fn steps(&self) -> usize {
        self.steps_by_kind.values().sum()
    }

    /// Median and maximum of [`Summary::converge`], in seconds.
    pub fn converge_stats(&self) -> Option<Stats> {
        let secs: Vec<f64> = self.converge.iter().map(Duration::as_secs_f64).collect();
        Stats::of(&secs)
    }

    /// The table printed at the end of a run: steps per kind, then the totals.
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
        if self.injected > 0 {
            let _ = writeln!(
                t,
                "  {:<30} {:>10}",
                "faults: steps/fired",
                format!("{}/{}", self.injected, self.faults_fired)
            );
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
pub(super) fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// A terminal line updated in place, or a plain line per update when stdout is not a terminal.
pub(super) struct Progress {
    pub(super) tty: bool,
    width: usize,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress {
            tty: std::io::stdout().is_terminal(),
            width: 0,
        }
    }

    pub(super) fn show(&mut self, line: &str) {
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
    pub(super) fn finish(&mut self) {
        if self.tty && self.width > 0 {
            println!();
            self.width = 0;
        }
    }
}

/// Writes `<out>/<seed>-<step>/` and returns its path.
#[allow(clippy::too_many_arguments)]
pub(super) fn save_failure(
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn clocks() {
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
    }
}
