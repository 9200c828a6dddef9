//! What a stress run is given: the machine ([`Topology`]), the seed, the limits and where its
//! files go ([`StressConfig`]), and the `--duration` syntax ([`parse_duration`]).
//!
//! Two topologies: `default` is `make run`'s machine (512M of RAM, one 4G device, 2 CPUs);
//! `two-node` has two NUMA nodes of 512M with a 2G device on each, so both devices and both
//! nodes' zones are exercised at once.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::instance::LaunchOptions;
use crate::machine::{Machine, VirtioMem, GIB, MIB};

/// The machines `stress` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `make run`'s machine: 512M RAM, one 4G device, 2 CPUs.
    Default,
    /// Two NUMA nodes of 512M, a 2G device on each, 2 CPUs (one per node).
    TwoNode,
}

impl Topology {
    /// `default` or `two-node` (`--topology`).
    pub fn parse(text: &str) -> Result<Topology> {
        match text {
            "default" => Ok(Topology::Default),
            "two-node" => Ok(Topology::TwoNode),
            other => Err(Error::Machine(format!(
                "--topology {other}: want default or two-node"
            ))),
        }
    }

    /// The name [`Topology::parse`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Default => "default",
            Topology::TwoNode => "two-node",
        }
    }

    /// The machine it boots.
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

/// What [`super::run`] does.
#[derive(Debug, Clone)]
pub struct StressConfig {
    /// The machine.
    pub topology: Topology,
    /// Image and QEMU binary.
    pub options: LaunchOptions,
    /// Seed of the scenario (printed, and in the failure directory's name).
    pub seed: u64,
    /// Stop after this many steps (no limit when `None`).
    pub steps: Option<usize>,
    /// Start no step after this much time (no limit when `None`).
    pub duration: Option<Duration>,
    /// Failure directories go under here (`<out>/<seed>-<step>/`).
    pub out_dir: PathBuf,
    /// The SVG plot.
    pub plot: PathBuf,
    /// Deadline for the first prompt after a boot or reset.
    pub boot_timeout: Duration,
    /// Arm faults along some resize steps (`--inject`; see [`super::faults`]), when the guest
    /// has `inject`.
    pub inject: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        for bad in ["", "m", "15x", "1m2"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
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
