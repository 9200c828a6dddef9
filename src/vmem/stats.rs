//! The hotplug profile: where an unplug pass (and a plug) spends its time, as counters per
//! phase that the `vmem stats` command prints and `vmem stats reset` zeroes.
//!
//! # Model
//! One set of counters for the whole kernel (every device adds to it), one entry per
//! [`Phase`]: how often the phase ran (`calls`), the time spent in it (`ns`, from the
//! kernel's monotonic clock) and the pages it handled (`pages`, 0 where a phase has no pages).
//! The phases of an unplug pass, in their order:
//! - `isolate`, `offline`: the memory model's calls over the victims (bounded holds);
//! - `migrate`: the whole migration of a victim range; its parts, from the engine's own
//!   profile ([`crate::mm::migrate::MigrateProfile`]): `scan` (finding used pages), `alloc`
//!   (pin check and destination allocation: the first rmap hold), `unmap` (present entries
//!   to migration entries), `flush` (the batch's TLB broadcasts), `freeze`, `copy`, `remap`
//!   (new entries), `rmap` (reverse map, references, freeing the old page);
//! - `request`: UNPLUG requests to the device (calls = requests, pages = pages they covered);
//! - `unmap_linear`: unmapping the linear map of unplugged memory (TLB broadcasts included);
//! - `remove`: removing the sections' memory.
//!
//! The phases of a plug, after them (the record is append-only):
//! - `can_add`: asking the model whether free Normal memory holds a run's metadata (calls
//!   = questions, the bisection's included);
//! - `plug_request`: PLUG requests to the device (pages = pages they covered);
//! - `map_linear`: mapping the plugged memory in the linear map;
//! - `add`: adding and onlining it in the model (sections, descriptors, free lists).
//!
//! The broadcasts a phase issues are not counted here: the arch layer counts every TLB
//! broadcast per CPU (`cpus` shows them), and `vmem stats` prints their sum beside the pages
//! migrated so a reader divides one by the other.
//!
//! # Clock
//! The policy and the engine are host-testable, so they do not read a timer: the kernel
//! installs its clock once with [`set_clock`]; until then (and in host tests that set none)
//! every time reads 0 and only the counts move.
//!
//! # Locks
//! None: relaxed atomics, each counter on its own. A `vmem stats` racing an unplug may see a
//! phase's calls without its time of the same call; the numbers are a profile, not books.

use crate::mm::migrate::Step;
use core::sync::atomic::{AtomicU64, Ordering};

/// A phase of an unplug pass (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Isolating the victims' pageblocks.
    Isolate,
    /// Moving the used pages out of the victims (the whole engine run).
    Migrate,
    /// One step of the migration engine.
    Engine(Step),
    /// Offlining the victims once free.
    Offline,
    /// UNPLUG requests to the device.
    Request,
    /// Unmapping the linear map of the unplugged memory.
    UnmapLinear,
    /// Removing the sections' memory.
    Remove,
    /// Asking whether a run's metadata fits (plug).
    CanAdd,
    /// PLUG requests to the device.
    PlugRequest,
    /// Mapping plugged memory in the linear map.
    MapLinear,
    /// Adding and onlining plugged memory in the model.
    Add,
}

impl Phase {
    /// Every phase, in the order `vmem stats` prints them.
    pub const ALL: [Phase; 18] = {
        let mut all = [Phase::Isolate; 18];
        all[1] = Phase::Migrate;
        let mut i = 0;
        while i < Step::ALL.len() {
            all[2 + i] = Phase::Engine(Step::ALL[i]);
            i += 1;
        }
        all[10] = Phase::Offline;
        all[11] = Phase::Request;
        all[12] = Phase::UnmapLinear;
        all[13] = Phase::Remove;
        all[14] = Phase::CanAdd;
        all[15] = Phase::PlugRequest;
        all[16] = Phase::MapLinear;
        all[17] = Phase::Add;
        all
    };

    /// The name `vmem stats` prints (`phase=`).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Isolate => "isolate",
            Phase::Migrate => "migrate",
            Phase::Engine(s) => s.name(),
            Phase::Offline => "offline",
            Phase::Request => "request",
            Phase::UnmapLinear => "unmap_linear",
            Phase::Remove => "remove",
            Phase::CanAdd => "can_add",
            Phase::PlugRequest => "plug_request",
            Phase::MapLinear => "map_linear",
            Phase::Add => "add",
        }
    }

    fn index(self) -> usize {
        match self {
            Phase::Isolate => 0,
            Phase::Migrate => 1,
            Phase::Engine(s) => 2 + s as usize,
            Phase::Offline => 10,
            Phase::Request => 11,
            Phase::UnmapLinear => 12,
            Phase::Remove => 13,
            Phase::CanAdd => 14,
            Phase::PlugRequest => 15,
            Phase::MapLinear => 16,
            Phase::Add => 17,
        }
    }
}

const NR_PHASES: usize = Phase::ALL.len();

struct Counter {
    calls: AtomicU64,
    ns: AtomicU64,
    pages: AtomicU64,
}

static COUNTERS: [Counter; NR_PHASES] = [const {
    Counter {
        calls: AtomicU64::new(0),
        ns: AtomicU64::new(0),
        pages: AtomicU64::new(0),
    }
}; NR_PHASES];

static CLOCK: spin::Once<fn() -> u64> = spin::Once::new();

/// Installs the clock (monotonic ns) the profile reads; the first call wins.
pub fn set_clock(now_ns: fn() -> u64) {
    CLOCK.call_once(|| now_ns);
}

/// The profile's clock in ns (0 without one).
pub fn now_ns() -> u64 {
    CLOCK.get().map_or(0, |f| f())
}

/// Adds `calls` runs of `phase` that took `ns` and handled `pages`.
pub fn add(phase: Phase, calls: u64, ns: u64, pages: u64) {
    let c = &COUNTERS[phase.index()];
    c.calls.fetch_add(calls, Ordering::Relaxed);
    c.ns.fetch_add(ns, Ordering::Relaxed);
    c.pages.fetch_add(pages, Ordering::Relaxed);
}

/// Runs `f` as one call of `phase` over `pages` pages, timed.
pub fn time<T>(phase: Phase, pages: u64, f: impl FnOnce() -> T) -> T {
    let t0 = now_ns();
    let r = f();
    add(phase, 1, now_ns().saturating_sub(t0), pages);
    r
}

/// What one phase counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseStats {
    /// The phase.
    pub phase: Phase,
    /// How often it ran.
    pub calls: u64,
    /// Time spent in it (ns).
    pub ns: u64,
    /// Pages it handled.
    pub pages: u64,
}

impl core::fmt::Display for PhaseStats {
    /// The `vmem stats` record: `vmem_stats phase=copy calls=N us=N pages=N`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "vmem_stats phase={} calls={} us={} pages={}",
            self.phase.name(),
            self.calls,
            self.ns / 1000,
            self.pages
        )
    }
}

/// Every phase's counters, in [`Phase::ALL`] order.
pub fn snapshot() -> [PhaseStats; NR_PHASES] {
    Phase::ALL.map(|phase| {
        let c = &COUNTERS[phase.index()];
        PhaseStats {
            phase,
            calls: c.calls.load(Ordering::Relaxed),
            ns: c.ns.load(Ordering::Relaxed),
            pages: c.pages.load(Ordering::Relaxed),
        }
    })
}

/// Zeroes every counter (`vmem stats reset`).
pub fn reset() {
    for c in &COUNTERS {
        c.calls.store(0, Ordering::Relaxed);
        c.ns.store(0, Ordering::Relaxed);
        c.pages.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_in_index_order_with_distinct_names() {
        for (i, p) in Phase::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
        let mut names: alloc::vec::Vec<_> = Phase::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NR_PHASES);
    }

    #[test]
    fn record_prints_keys_in_order() {
        let s = PhaseStats {
            phase: Phase::Engine(Step::Copy),
            calls: 3,
            ns: 12_345_678,
            pages: 96,
        };
        assert_eq!(
            s.to_string(),
            "vmem_stats phase=copy calls=3 us=12345 pages=96"
        );
    }
}
