//! Seeded scenarios of the stress runner: what to do next, as plain data.
//!
//! - [`Rng`]: SplitMix64, seeded from `--seed`; the same seed gives the same numbers everywhere
//!   (the runner's scenarios, `tests/unplug.rs`'s random sizes).
//! - [`Scenario`]: an endless, deterministic sequence of [`Step`]s for a [`ScenarioConfig`] (the
//!   devices, the boot RAM and the guest [`Features`]). It mirrors what the host asked for
//!   (requested sizes, a running hog, pins), so "grow" always grows and `pin` only comes with a
//!   hog. Steps: resize one device (grow, shrink, zero, maximum), two `qom-set`s back to back (a
//!   new size while the previous one still converges), `system_reset` with memory plugged, and,
//!   when the guest's `help` lists them, `hog`/`hog stop` and `pin`/`unpin`.
//!
//! A step is chosen by one roll of 0..100: 45 % resize, 15 % overlap, 5 % reset (only with
//! memory requested), 15 % hog start/stop, 12 % pin/unpin (only with a hog), the rest resize;
//! a roll whose step is not possible now falls back to a resize. Sizes are whole blocks of the
//! device. Changing any of this changes what a seed replays, so the tests pin it
//! (`same_seed_same_steps`, `steps_are_valid_and_cover_every_kind`).

use std::fmt;

use crate::machine::{format_size, MIB};

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

/// Guest commands beyond the plug path, found in `help` at run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `hog <MiB>`, `hog status`, `hog stop`.
    pub hog: bool,
    /// `pin <MiB>`, `unpin` (only used together with a hog).
    pub pin: bool,
    /// `inject …`, the fault injection [`super::faults`] arms (the steps do not depend on it).
    pub inject: bool,
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
            inject: has("inject"),
        }
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b| if b { "yes" } else { "no (not in help)" };
        write!(
            f,
            "hog {}, pin {}, inject {}",
            on(self.hog),
            on(self.pin),
            on(self.inject)
        )
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
    /// The virtio-mem devices, `vm0` first.
    pub devices: Vec<DeviceSpec>,
    /// Boot RAM (bounds the hog's size).
    pub boot_ram_bytes: u64,
    /// What the guest can do besides plugging.
    pub features: Features,
}

/// Step kinds, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A resize above the current request.
    Grow,
    /// A resize below it, not to zero.
    Shrink,
    /// A resize to zero.
    Zero,
    /// A resize to the whole region.
    Max,
    /// Two resizes back to back.
    Overlap,
    /// `system_reset`.
    Reset,
    /// `hog <MiB>`.
    HogStart,
    /// `hog stop`.
    HogStop,
    /// `pin <MiB>`.
    Pin,
    /// `unpin`.
    Unpin,
}

impl Kind {
    /// Every kind, in summary order.
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

    /// The name in the summary and in step descriptions.
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
        /// Grow, Shrink, Zero or Max.
        kind: Kind,
        /// Index of the device (`vm<device>`).
        device: usize,
        /// The new requested size.
        bytes: u64,
    },
    /// Two `qom-set`s `gap_ms` apart: the second lands while the first still converges.
    Overlap {
        /// Index of the device.
        device: usize,
        /// The first request.
        first_bytes: u64,
        /// The second request, the one that must be reached.
        then_bytes: u64,
        /// Pause between the two.
        gap_ms: u64,
    },
    /// QMP `system_reset` with memory plugged; wait for the prompt again.
    Reset,
    /// `hog <mib>` (only without a hog).
    HogStart {
        /// Hog size.
        mib: u64,
    },
    /// `hog stop` (only with a hog and no pins).
    HogStop,
    /// `pin <mib>`: pins that many MiB of hog pages (only with a hog).
    Pin {
        /// Pinned size.
        mib: u64,
    },
    /// `unpin` (only with pins).
    Unpin,
}

impl Step {
    /// Its kind, for the summary.
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

    /// The next step; the scenario's view of the host (requests, hog, pins) follows it.
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

/// A size for progress lines and step names: `0`, or [`format_size`]'s `512M`, `4G`.
pub(super) fn short_size(bytes: u64) -> String {
    if bytes == 0 {
        "0".into()
    } else {
        format_size(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::GIB;

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

    /// Every feature the steps depend on.
    const ALL: Features = Features {
        hog: true,
        pin: true,
        inject: false,
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
                pin: false,
                inject: false
            }
        );
        let inject = ["inject [...]     fault injection"];
        assert_eq!(
            Features::from_help(&inject),
            Features {
                inject: true,
                ..Features::default()
            }
        );
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
}
