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
        if self.overhead {
            out.push(Metric::new(
                MEMMAP_OVERHEAD_METRIC,
                "KiB/GiB",
                &format!(
                    "Normal zone managed_kib (sum over nodes) before minus after {what} \
                     converged, per GiB plugged: existing memory spent on bookkeeping \
                     (mem_map, section tables, page tables)"
                ),
            ));
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
                    migration: false,
                }),
                Step::Resize(Resize {
                    label: Some("unplug_4g_0_idle"),
                    from_bytes: 4 * GIB,
                    to_bytes: 0,
                    online: false,
                    overhead: false,
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
                    migration: false,
                }),
                Step::Resize(Resize {
                    label: Some("unplug_1g_0_idle"),
                    from_bytes: GIB,
                    to_bytes: 0,
                    online: false,
                    overhead: false,
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
            .collect::<Vec<_>>()
        );
        // No Linux figure is declared: references come only from the Linux guest's run.
        assert!(default_scenarios()
            .iter()
            .flat_map(Scenario::metrics)
            .all(|m| m.reference.is_none() && m.samples.is_empty()));
    }
}
