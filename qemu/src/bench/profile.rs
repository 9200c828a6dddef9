//! The unplug breakdown: the kernel's `vmem stats` profile read around a resize that
//! migrates, and what the bench and the tests print from it.
//!
//! The kernel keeps, per phase of an unplug pass (isolate, migrate and the migration
//! engine's steps, offline, UNPLUG requests, linear-map unmap, section removal), how often
//! it ran, its time from the kernel's own clock and the pages it handled, plus the TLB
//! broadcasts of every CPU (`vmem_stats tlbi=N`). [`Profile::parse`] types those records;
//! [`Profile::summary`] is one line per phase with its share of the migrate phase's time
//! and of the whole pass, and the broadcasts per GiB migrated. The bench resets the
//! profile before a migrating resize and prints the breakdown after it ([`resize`]).

use super::Progress;
use crate::error::{Error, Result};
use crate::instance::Qemu;
use crate::record::Record;
use crate::{Console, Deadline, GIB};
use std::fmt::Write as _;

/// One `vmem_stats phase=...` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseLine {
    /// The phase name (`copy`, `flush`, ...).
    pub phase: String,
    /// How often it ran.
    pub calls: u64,
    /// Time in it (µs).
    pub us: u64,
    /// Pages it handled.
    pub pages: u64,
}

/// The whole `vmem stats` output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// The phases, in the kernel's order.
    pub phases: Vec<PhaseLine>,
    /// TLB broadcasts of every CPU since boot.
    pub tlbi: u64,
}

/// The phases that make up an unplug pass (the engine's steps are inside `migrate`).
const PASS: &[&str] = &[
    "isolate",
    "migrate",
    "offline",
    "request",
    "unmap_linear",
    "remove",
];

impl Profile {
    /// Types the lines of `vmem stats`: `vmem_stats` and one `phase=` record per phase,
    /// then `vmem_stats tlbi=N`.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Profile> {
        let mut p = Profile::default();
        let mut tlbi = None;
        for line in lines {
            let r = Record::parse_after(line.as_ref(), "vmem_stats")?;
            if let Some(phase) = r.get("phase") {
                p.phases.push(PhaseLine {
                    phase: phase.to_string(),
                    calls: r.u64("calls")?,
                    us: r.u64("us")?,
                    pages: r.u64("pages")?,
                });
            } else if r.get("tlbi").is_some() {
                tlbi = Some(r.u64("tlbi")?);
            }
        }
        p.tlbi = tlbi.ok_or_else(|| Error::Protocol("vmem stats: no tlbi= record".into()))?;
        if p.phase("migrate").is_none() || p.phase("copy").is_none() {
            return Err(Error::Protocol(format!(
                "vmem stats: no migrate/copy phase in {:?}",
                p.phases
            )));
        }
        Ok(p)
    }

    /// The phase named `name`.
    pub fn phase(&self, name: &str) -> Option<&PhaseLine> {
        self.phases.iter().find(|l| l.phase == name)
    }

    /// Pages the migration moved.
    pub fn migrated_pages(&self) -> u64 {
        self.phase("migrate").map_or(0, |l| l.pages)
    }

    /// Time of the whole pass (µs): the sum of the pass's phases.
    pub fn pass_us(&self) -> u64 {
        PASS.iter()
            .filter_map(|p| self.phase(p))
            .map(|l| l.us)
            .sum()
    }

    /// Migration speed in MiB/s over the migrate phase's own time.
    pub fn migrate_mib_per_s(&self) -> f64 {
        let Some(m) = self.phase("migrate") else {
            return 0.0;
        };
        (m.pages as f64 * 4096.0 / (1 << 20) as f64) / (m.us.max(1) as f64 / 1e6)
    }

    /// Guest time per migrated page (µs), over the migrate phase.
    pub fn us_per_page(&self) -> f64 {
        let m = self.migrated_pages();
        self.phase("migrate").map_or(0.0, |l| l.us as f64) / m.max(1) as f64
    }

    /// `tlbi` broadcasts (since `before`) per GiB migrated.
    pub fn tlbi_per_gib(&self, before: &Profile) -> f64 {
        let gib = self.migrated_pages() as f64 * 4096.0 / GIB as f64;
        self.tlbi.saturating_sub(before.tlbi) as f64 / gib.max(1e-9)
    }

    /// One line per phase with calls, time, pages and share of the pass, then the totals.
    pub fn summary(&self, before: &Profile) -> String {
        let pass = self.pass_us().max(1) as f64;
        let mut s = String::new();
        for l in &self.phases {
            let _ = writeln!(
                s,
                "  {:<13} calls={:<7} us={:<9} pages={:<8} {:5.1}% of the pass",
                l.phase,
                l.calls,
                l.us,
                l.pages,
                100.0 * l.us as f64 / pass
            );
        }
        let _ = write!(s, "  pass {:.3} s, ", pass / 1e6);
        if self.migrated_pages() == 0 {
            // Per-page and per-GiB figures have no meaning for a pass that moved nothing.
            let _ = write!(s, "nothing migrated");
        } else {
            let _ = write!(
                s,
                "migrated {} MiB at {:.0} MiB/s, {:.2} us/page, {:.0} TLB broadcasts per GiB \
                 migrated",
                (self.migrated_pages() * 4096) >> 20,
                self.migrate_mib_per_s(),
                self.us_per_page(),
                self.tlbi_per_gib(before)
            );
        }
        s
    }
}

/// `vmem stats`, typed.
pub fn read(console: &mut Console, deadline: impl Into<Deadline>) -> Result<Profile> {
    let out = console.command("vmem stats", deadline)?;
    Profile::parse(&out.lines)
}

/// `vmem stats reset`.
pub fn reset(console: &mut Console, deadline: impl Into<Deadline>) -> Result<()> {
    let out = console.command("vmem stats reset", deadline)?;
    if out.text().trim() != "vmem stats: reset" {
        return Err(Error::Protocol(format!(
            "vmem stats reset: {:?}",
            out.text()
        )));
    }
    Ok(())
}

/// Runs the resize `run` with the profile reset before it and, for a resize that migrates,
/// prints the breakdown after it (to stderr and into `progress`).
pub(super) fn resize(
    vm: &mut Qemu,
    migration: bool,
    progress: &mut Progress,
    run: impl FnOnce(&mut Qemu, &mut Progress) -> Result<()>,
) -> Result<()> {
    if !migration {
        return run(vm, progress);
    }
    reset(vm.console(), super::COMMAND_TIMEOUT)?;
    let before = read(vm.console(), super::COMMAND_TIMEOUT)?;
    run(vm, progress)?;
    let after = read(vm.console(), super::COMMAND_TIMEOUT)?;
    eprintln!("unplug breakdown (vmem stats):\n{}", after.summary(&before));
    progress.push(format!(
        "migrate {:.0} MiB/s, {:.0} tlbi/GiB",
        after.migrate_mib_per_s(),
        after.tlbi_per_gib(&before)
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sums_the_kernel_records() {
        let lines = [
            "vmem_stats phase=isolate calls=2 us=100 pages=1024",
            "vmem_stats phase=migrate calls=2 us=1000 pages=512",
            "vmem_stats phase=copy calls=16 us=400 pages=512",
            "vmem_stats phase=request calls=1 us=50 pages=1024",
            "vmem_stats tlbi=40",
        ];
        let p = Profile::parse(&lines).unwrap();
        assert_eq!(p.phases.len(), 4);
        assert_eq!(p.pass_us(), 1150);
        assert_eq!(p.migrated_pages(), 512);
        assert!((p.us_per_page() - 1000.0 / 512.0).abs() < 1e-9);
        let before = Profile {
            tlbi: 8,
            ..Profile::default()
        };
        // 32 broadcasts for 2 MiB: 16384 per GiB.
        assert!((p.tlbi_per_gib(&before) - 16384.0).abs() < 1e-6);
        assert!(p.summary(&before).contains("copy"));
    }

    #[test]
    fn a_pass_that_moved_nothing_has_no_per_page_figures() {
        let lines = [
            "vmem_stats phase=offline calls=1 us=200 pages=1024",
            "vmem_stats phase=migrate calls=1 us=10 pages=0",
            "vmem_stats phase=copy calls=0 us=0 pages=0",
            "vmem_stats tlbi=3",
        ];
        let p = Profile::parse(&lines).unwrap();
        let s = p.summary(&Profile::default());
        assert!(s.ends_with("nothing migrated"), "{s}");
        assert!(!s.contains("per GiB"), "{s}");
    }

    #[test]
    fn refuses_output_without_the_counters() {
        let lines = ["vmem_stats phase=copy calls=1 us=1 pages=1"];
        assert!(Profile::parse(&lines).is_err());
        let lines = ["vmem_stats tlbi=3"];
        assert!(Profile::parse(&lines).is_err());
    }
}
