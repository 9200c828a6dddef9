//! The benchmark's scenarios: what is measured on hotmem, and on which machine.
//!
//! A [`Scenario`] is a list of [`Step`]s run in order on one fresh boot; a [`Resize`] step is one
//! `qom-set vm0 requested-size` and declares the metrics it records (`<label>_qmp_s`, and
//! `_online_s`, `_guest_s`, `_migrated_mib`, `_migrate_mib_per_s` or the mem_map overhead as
//! asked). Linux's side of the same metrics is measured in the same run ([`super::linux`]);
//! nothing here holds a Linux figure. A step without a label sets
//! the scenario up and is checked but not recorded; hog steps start and stop the hog whose data
//! an unplug must migrate. [`default_scenarios`] is what `hotmem-qemu bench` runs. The metric
//! descriptions (they go into the JSON) say exactly what the measuring loop in
//! [`crate::bench`] times, so the loop's device id and QMP poll interval live here with them.

use std::time::Duration;

use crate::machine::GIB;

use super::report::Metric;

/// QEMU id of the (first) virtio-mem device, the one `qom-set` resizes.
pub const VMEM_QEMU_ID: &str = "vm0";
/// Pause between QMP `query-memory-devices` polls.
pub(super) const QMP_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Metric names that do not belong to a step: QEMU spawn to the first prompt.
pub const BOOT_METRIC: &str = "boot";
/// One idle `mem` round trip.
pub const MEM_ROUND_TRIP_METRIC: &str = "mem_round_trip_ms";
/// Normal zone memory spent on bookkeeping per GiB plugged.
pub const MEMMAP_OVERHEAD_METRIC: &str = "memmap_overhead_kib_per_gib";
/// The same with `memmap_on_memory=on`: the descriptors live in the plugged memory, so what
/// Normal gives is section-table and page-table pages, measured as Normal free memory.
pub const MEMMAP_ON_OVERHEAD_METRIC: &str = "memmap_on_overhead_kib_per_gib";
/// The boot argument of a [`Scenario`] with `memmap_on_memory`.
pub const MEMMAP_ON_BOOTARG: &str = "memmap_on_memory=on";

/// Which bookkeeping figure a plug records, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overhead {
    /// [`MEMMAP_OVERHEAD_METRIC`]: Normal `managed_kib` before minus after (with
    /// `memmap_on_memory=off` the mem_maps come out of Normal's managed memory).
    Managed,
    /// [`MEMMAP_ON_OVERHEAD_METRIC`]: Normal `free_kib` before minus after (with
    /// `memmap_on_memory=on` managed Normal does not change: the section-table and page-table
    /// pages a plug needs are allocations, they leave managed alone and lower free).
    Free,
}

impl Overhead {
    /// Its metric's name.
    pub fn metric(self) -> &'static str {
        match self {
            Overhead::Managed => MEMMAP_OVERHEAD_METRIC,
            Overhead::Free => MEMMAP_ON_OVERHEAD_METRIC,
        }
    }
}

/// KiB of Normal memory spent per GiB plugged, from a Normal figure (KiB) before and after
/// a resize from `from_bytes` to `to_bytes`; `None` unless the resize grew the device.
pub fn overhead_kib_per_gib(
    before_kib: u64,
    after_kib: u64,
    from_bytes: u64,
    to_bytes: u64,
) -> Option<f64> {
    (to_bytes > from_bytes).then(|| {
        let gib = (to_bytes - from_bytes) as f64 / GIB as f64;
        (before_kib as f64 - after_kib as f64) / gib
    })
}

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
    /// Also record this bookkeeping metric from this step.
    pub overhead: Option<Overhead>,
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
        let mut out = vec![Metric::new(
            &format!("{label}_qmp_s"),
            "s",
            &format!(
                "from sending {what} until QMP query-memory-devices reports size == requested \
                 (polled every {} ms from a second thread)",
                QMP_POLL_INTERVAL.as_millis()
            ),
        )];
        if self.online {
            out.push(Metric::new(
                &format!("{label}_online_s"),
                "s",
                &format!(
                    "from sending {what} until a `mem` reply shows the Movable zones' free_kib \
                     (sum over nodes) == requested: `mem` is sent back to back, so this is an \
                     upper bound: a reply arrives up to one `mem` round trip after the state it \
                     shows (see {MEM_ROUND_TRIP_METRIC}; not subtracted)"
                ),
            ));
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
        match self.overhead {
            Some(Overhead::Managed) => out.push(Metric::new(
                MEMMAP_OVERHEAD_METRIC,
                "KiB/GiB",
                &format!(
                    "Normal zone managed_kib (sum over nodes) before minus after {what} \
                     converged, per GiB plugged: existing memory spent on bookkeeping \
                     (mem_map, section tables, page tables)"
                ),
            )),
            Some(Overhead::Free) => out.push(Metric::new(
                MEMMAP_ON_OVERHEAD_METRIC,
                "KiB/GiB",
                &format!(
                    "booted with `{MEMMAP_ON_BOOTARG}`: Normal zone free_kib (sum over nodes) \
                     before minus after {what} converged, per GiB plugged: existing memory \
                     spent on bookkeeping (section tables, unit tables, page tables; the \
                     descriptors are inside the plugged memory); Linux's figure is its one \
                     measured overhead (its virtio-mem driver does not use memmap_on_memory)"
                ),
            )),
            None => {}
        }
        out
    }
}

/// One step of a scenario: a resize, or starting or stopping the hog whose data a later unplug
/// must migrate (as in "plug 4 GiB, hog 1 GiB, unplug to 1 GiB").
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A `qom-set` and what it measures.
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

/// The two metrics of one lock class.
fn lock_metrics(class: &str) -> [Metric; 2] {
    let what = format!(
        "`{class}` lock class (shell `locks`) over the scenario: from `locks reset` after boot \
         to `locks` at its end; a vCPU thread the host preempts while holding counts as held, \
         so this is a figure, not a bound"
    );
    [
        Metric::new(
            &format!("lock_{class}_max_us"),
            "us",
            &format!("longest hold (IRQs masked) of the {what}"),
        ),
        Metric::new(
            &format!("lock_{class}_p99_us"),
            "us",
            &format!(
                "99th percentile of the holds (the end of its log2 bucket, at most the longest) \
                 of the {what}"
            ),
        ),
    ]
}

impl Step {
    fn metrics(&self) -> Vec<Metric> {
        match self {
            Step::Resize(r) => r.metrics(),
            Step::Locks => LOCK_CLASSES.iter().flat_map(|c| lock_metrics(c)).collect(),
            Step::Hog(_) | Step::HogStop | Step::LocksReset => Vec::new(),
        }
    }

    /// The most memory the step needs the device to be able to plug.
    pub fn max_bytes(&self) -> u64 {
        match self {
            Step::Resize(r) => r.from_bytes.max(r.to_bytes),
            Step::Hog(_) | Step::HogStop | Step::LocksReset | Step::Locks => 0,
        }
    }
}

/// Steps run in order on one fresh boot.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name in progress lines.
    pub name: &'static str,
    /// Boot RAM instead of the bench machine's.
    pub ram_bytes: Option<u64>,
    /// Boot with [`MEMMAP_ON_BOOTARG`] (appended to the machine's boot arguments).
    pub memmap_on_memory: bool,
    /// What to do, in order.
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
/// boot RAM (all of it migrates; the lock holds of this whole scenario are recorded), and
/// 0 -> 4 GiB -> 0 booted with `memmap_on_memory=on` (its bookkeeping per GiB).
pub fn default_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "plug_4g_unplug_idle",
            ram_bytes: None,
            memmap_on_memory: false,
            steps: vec![
                Step::Resize(Resize {
                    label: Some("plug_0_4g"),
                    from_bytes: 0,
                    to_bytes: 4 * GIB,
                    online: true,
                    overhead: Some(Overhead::Managed),
                    migration: false,
                }),
                Step::Resize(Resize {
                    label: Some("unplug_4g_0_idle"),
                    from_bytes: 4 * GIB,
                    to_bytes: 0,
                    online: false,
                    overhead: None,
                    migration: false,
                }),
            ],
        },
        Scenario {
            name: "plug_1g",
            ram_bytes: None,
            memmap_on_memory: false,
            steps: vec![
                Step::Resize(Resize {
                    label: Some("plug_0_1g"),
                    from_bytes: 0,
                    to_bytes: GIB,
                    online: true,
                    overhead: None,
                    migration: false,
                }),
                Step::Resize(Resize {
                    label: Some("unplug_1g_0_idle"),
                    from_bytes: GIB,
                    to_bytes: 0,
                    online: false,
                    overhead: None,
                    migration: false,
                }),
            ],
        },
        Scenario {
            name: "unplug_4g_1g_hog1g",
            ram_bytes: None,
            memmap_on_memory: false,
            steps: vec![
                setup_resize(0, 4 * GIB),
                Step::Hog(1024),
                Step::Resize(Resize {
                    label: Some("unplug_4g_1g_hog1g"),
                    from_bytes: 4 * GIB,
                    to_bytes: GIB,
                    online: false,
                    overhead: None,
                    migration: true,
                }),
                Step::HogStop,
            ],
        },
        Scenario {
            name: "unplug_4g_0_hog1g_ram2g",
            ram_bytes: Some(2 * GIB),
            memmap_on_memory: false,
            steps: vec![
                Step::LocksReset,
                setup_resize(0, 4 * GIB),
                Step::Hog(1024),
                Step::Resize(Resize {
                    label: Some("unplug_4g_0_hog1g_ram2g"),
                    from_bytes: 4 * GIB,
                    to_bytes: 0,
                    online: false,
                    overhead: None,
                    migration: true,
                }),
                Step::HogStop,
                Step::Locks,
            ],
        },
        Scenario {
            name: "plug_4g_memmap_on",
            ram_bytes: None,
            memmap_on_memory: true,
            steps: vec![
                Step::Resize(Resize {
                    label: Some("plug_0_4g_memmap_on"),
                    from_bytes: 0,
                    to_bytes: 4 * GIB,
                    // Movable free stays 16 KiB per 2 MiB unit below the plugged size.
                    online: false,
                    overhead: Some(Overhead::Free),
                    migration: false,
                }),
                setup_resize(4 * GIB, 0),
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
        overhead: None,
        migration: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scenarios_declare_their_metrics() {
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
            .chain(
                [
                    "plug_0_4g_memmap_on_qmp_s",
                    "plug_0_4g_memmap_on_guest_s",
                    MEMMAP_ON_OVERHEAD_METRIC,
                ]
                .map(String::from)
            )
            .collect::<Vec<_>>()
        );
        // Exactly one scenario boots with memmap on memory, the one of the `on` figure.
        let on: Vec<_> = default_scenarios()
            .into_iter()
            .filter(|s| s.memmap_on_memory)
            .collect();
        assert_eq!(on.len(), 1);
        assert!(on[0]
            .metrics()
            .iter()
            .any(|m| m.name == MEMMAP_ON_OVERHEAD_METRIC));
        // No Linux figure is declared: references come only from the Linux guest's run.
        assert!(default_scenarios()
            .iter()
            .flat_map(Scenario::metrics)
            .all(|m| m.reference.is_none() && m.samples.is_empty()));
    }

    #[test]
    fn overhead_is_kib_spent_per_gib_grown() {
        // 4 GiB plugged, Normal 40 MiB lower: 10 MiB per GiB.
        assert_eq!(
            overhead_kib_per_gib(500_000, 500_000 - 40_960, 0, 4 * GIB),
            Some(10_240.0)
        );
        // 1 GiB -> 3 GiB: per GiB grown, not per GiB plugged in the end.
        assert_eq!(overhead_kib_per_gib(1000, 960, GIB, 3 * GIB), Some(20.0));
        // Normal free may rise (a freed boot buffer): a negative figure, not a wrap.
        assert_eq!(overhead_kib_per_gib(100, 116, 0, GIB), Some(-16.0));
        assert_eq!(overhead_kib_per_gib(100, 90, 4 * GIB, 0), None);
        assert_eq!(overhead_kib_per_gib(100, 90, GIB, GIB), None);
        assert_eq!(Overhead::Managed.metric(), MEMMAP_OVERHEAD_METRIC);
        assert_eq!(Overhead::Free.metric(), MEMMAP_ON_OVERHEAD_METRIC);
    }
}
