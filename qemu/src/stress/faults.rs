//! The faults the stress runner injects (with `--inject`, when the guest's `help` lists
//! `inject`), as plain data: which resize steps meet a fault, and which fault.
//!
//! [`Faults`] draws from its own [`Rng`] stream (the run's seed mixed with a constant), so the
//! scenario's steps are the same with and without `--inject`: a fault only rides along a step.
//! A fault is chosen for one resize step in four ([`FAULT_PERCENT`]) and armed in the guest
//! before the step's `qom-set`. The runner waits until the device converges or stalls for a
//! reason the fault explains, disarms (`inject off`), and then requires the step to settle as
//! any other step (see [`super::oracle::excused_while_injecting`]).
//!
//! What a resize can meet (each with a count of 1 or 2, so a fault is over quickly), in both
//! modes: *refuse* (the request never reaches the device; the guest sees the answer) and
//! *replace* (the device acts on the request and its real answer is replaced, so the guest
//! and the device part until the policy reconciles them with STATE and the `plugged_size`
//! audit):
//! - growing: PLUG answered NACK, BUSY or ERROR;
//! - shrinking: UNPLUG answered NACK, BUSY or ERROR; and with a hog running, migrations
//!   failing (1 to 64 pages, as if pinned mid-move).
//!
//! A refused ERROR leaves the device as it was, which the policy counts as a contradiction;
//! the ACKs of the rest of the step break the run of contradictions, so the device stays in
//! service (three in a row disable it). Changing the table or the rates changes what a seed
//! replays with `--inject`.

use std::fmt;

use super::scenario::{Kind, Rng, Step};

/// Percentage of resize steps that meet a fault.
pub const FAULT_PERCENT: u64 = 25;
/// Mixed into the run's seed for the fault stream.
const STREAM: u64 = 0x1f3a_c0de_fa17_5eed;

/// One fault to arm: the words after `inject` ([`Fault::command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `reply <mode> <answer> <request> count=<count>`.
    Reply {
        /// `replace` or `refuse`.
        mode: &'static str,
        /// `nack`, `busy` or `error`.
        answer: &'static str,
        /// `plug` or `unplug`.
        request: &'static str,
        /// Firings.
        count: u32,
    },
    /// `migrate count=<count>`.
    Migrate {
        /// Pages that fail to move.
        count: u32,
    },
}

impl Fault {
    /// The `inject` arguments that arm it.
    pub fn command(&self) -> String {
        match self {
            Fault::Reply {
                mode,
                answer,
                request,
                count,
            } => format!("reply {mode} {answer} {request} count={count}"),
            Fault::Migrate { count } => format!("migrate count={count}"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command())
    }
}

/// The (mode, answer) pairs a request may meet: every answer in both modes.
const ANSWERS: [(&str, &str); 6] = [
    ("refuse", "nack"),
    ("refuse", "busy"),
    ("refuse", "error"),
    ("replace", "nack"),
    ("replace", "busy"),
    ("replace", "error"),
];

/// The fault stream of a run (see the module doc).
#[derive(Debug, Clone)]
pub struct Faults {
    rng: Rng,
}

impl Faults {
    /// The stream for the run's `seed`.
    pub fn new(seed: u64) -> Faults {
        Faults {
            rng: Rng::new(seed ^ STREAM),
        }
    }

    /// The fault `step` meets, if any; `hog` says whether a hog is running before it.
    pub fn choose(&mut self, step: &Step, hog: bool) -> Option<Fault> {
        let Step::Resize { kind, .. } = step else {
            return None;
        };
        if !self.rng.percent(FAULT_PERCENT) {
            return None;
        }
        let count = self.rng.between(1, 2) as u32;
        let growing = matches!(kind, Kind::Grow | Kind::Max);
        if !growing && hog && self.rng.percent(30) {
            return Some(Fault::Migrate {
                count: self.rng.between(1, 64) as u32,
            });
        }
        let request = if growing { "plug" } else { "unplug" };
        let (mode, answer) = ANSWERS[self.rng.below(ANSWERS.len() as u64) as usize];
        Some(Fault::Reply {
            mode,
            answer,
            request,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize(kind: Kind) -> Step {
        Step::Resize {
            kind,
            device: 0,
            bytes: 1 << 30,
        }
    }

    #[test]
    fn faults_ride_on_resizes_only_and_replay() {
        let run = |seed| {
            let mut f = Faults::new(seed);
            let mut out = Vec::new();
            for i in 0..2000 {
                let kind = [Kind::Grow, Kind::Shrink, Kind::Zero, Kind::Max][i % 4];
                out.push(f.choose(&resize(kind), i % 3 == 0));
                assert_eq!(f.choose(&Step::Reset, true), None);
                assert_eq!(f.choose(&Step::HogStop, true), None);
            }
            out
        };
        let a = run(5);
        assert_eq!(a, run(5));
        assert_ne!(a, run(6));
        let n = a.iter().flatten().count();
        assert!((400..600).contains(&n), "{n} faults in 2000 resizes");
        let met: std::collections::BTreeSet<_> = a
            .iter()
            .flatten()
            .filter_map(|f| match f {
                Fault::Reply {
                    mode,
                    answer,
                    request,
                    ..
                } => Some((*mode, *answer, *request)),
                Fault::Migrate { .. } => None,
            })
            .collect();
        assert_eq!(
            met.len(),
            2 * ANSWERS.len(),
            "every answer in both modes, both ways"
        );
        for (i, f) in a.iter().enumerate() {
            let growing = i % 4 == 0 || i % 4 == 3;
            match f {
                None => {}
                Some(Fault::Reply {
                    mode,
                    answer,
                    request,
                    count,
                }) => {
                    assert!((1..=2).contains(count));
                    assert_eq!(*request, if growing { "plug" } else { "unplug" });
                    assert!(ANSWERS.contains(&(*mode, *answer)), "{f:?}");
                }
                Some(Fault::Migrate { count }) => {
                    assert!(!growing && i % 3 == 0 && (1..=64).contains(count), "{f:?}");
                }
            }
        }
        assert_eq!(
            Fault::Reply {
                mode: "refuse",
                answer: "busy",
                request: "plug",
                count: 2
            }
            .command(),
            "reply refuse busy plug count=2"
        );
        assert_eq!(Fault::Migrate { count: 7 }.to_string(), "migrate count=7");
    }
}
