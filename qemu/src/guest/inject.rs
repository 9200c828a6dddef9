//! `inject`: the guest's fault-injection plan as a type, and the actions that arm and disarm it.
//!
//! `inject` alone prints a header and one record per rule, in slot order:
//!
//! ```text
//! inject: seed=7 armed=1
//! rule=0 kind=reply mode=refuse answer=busy request=plug left=0 ppm=1000000 fired=2
//! rule=1 kind=migrate left=- ppm=500 fired=0
//! ```
//!
//! (`armed` counts the rules that can still fire; `left=-` means no limit.) Arming prints
//! `inject: armed <rule record>`, `inject off` prints `inject: off`, `inject seed N` prints
//! `inject: seed=N`. [`InjectPlan`] is the parsed listing; [`inject_arm`], [`inject_off`] and
//! [`inject_plan`] are the commands, each checking the guest's answer.

use std::fmt;

use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::record::{parse_records, Record};

use super::one_line;

/// What `inject` alone printed. Displays as the lines the guest printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectPlan {
    /// The plan's seed.
    pub seed: u64,
    /// Rules that can still fire.
    pub armed: u64,
    /// One record per rule (`rule=<slot> kind=... left=... ppm=... fired=...`).
    pub rules: Vec<Record>,
    header: Record,
}

impl InjectPlan {
    /// Parses the output of `inject`.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<InjectPlan> {
        let (first, rest) = lines
            .split_first()
            .ok_or_else(|| Error::Protocol("`inject` printed nothing".into()))?;
        let header = Record::parse_after(first.as_ref(), "inject:")?;
        let rules = parse_records(rest)?;
        for r in &rules {
            for key in ["rule", "fired"] {
                r.u64(key)?;
            }
        }
        Ok(InjectPlan {
            seed: header.u64("seed")?,
            armed: header.u64("armed")?,
            rules,
            header,
        })
    }

    /// Times the rules fired, together.
    pub fn fired(&self) -> u64 {
        self.rules.iter().map(|r| r.u64("fired").unwrap_or(0)).sum()
    }

    /// The rules without their `fired` and `left` counts: what was armed, for comparing two
    /// plans armed the same way.
    pub fn armed_specs(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                r.fields()
                    .filter(|(k, _)| !matches!(*k, "fired" | "left"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }
}

impl fmt::Display for InjectPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inject: {}", self.header)?;
        for r in &self.rules {
            write!(f, "\n{r}")?;
        }
        Ok(())
    }
}

/// `inject`: the plan.
pub fn inject_plan(console: &mut Console, deadline: impl Into<Deadline>) -> Result<InjectPlan> {
    let out = console.command("inject", deadline)?;
    InjectPlan::parse(&out.lines)
}

/// `inject <spec>` (e.g. `reply refuse busy plug count=2`): must print `inject: armed ...`;
/// returns the new rule's record.
pub fn inject_arm(
    console: &mut Console,
    spec: &str,
    deadline: impl Into<Deadline>,
) -> Result<Record> {
    let cmd = format!("inject {spec}");
    let line = one_line(console, &cmd, deadline)?;
    Record::parse_after(&line, "inject: armed")
        .map_err(|_| Error::Protocol(format!("`{cmd}` printed {line:?}")))
}

/// `inject off`: must print `inject: off`.
pub fn inject_off(console: &mut Console, deadline: impl Into<Deadline>) -> Result<()> {
    let line = one_line(console, "inject off", deadline)?;
    if line == "inject: off" {
        Ok(())
    } else {
        Err(Error::Protocol(format!("`inject off` printed {line:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_listing() {
        let lines = [
            "inject: seed=7 armed=1",
            "rule=0 kind=reply mode=refuse answer=busy request=plug left=0 ppm=1000000 fired=2",
            "rule=1 kind=migrate left=- ppm=500 fired=3",
        ];
        let p = InjectPlan::parse(&lines).unwrap();
        assert_eq!((p.seed, p.armed, p.rules.len(), p.fired()), (7, 1, 2, 5));
        assert_eq!(
            p.armed_specs(),
            [
                "rule=0 kind=reply mode=refuse answer=busy request=plug ppm=1000000",
                "rule=1 kind=migrate ppm=500"
            ]
        );
        assert_eq!(p.to_string(), lines.join("\n"));
        let empty = InjectPlan::parse(&["inject: seed=0 armed=0"]).unwrap();
        assert!(empty.rules.is_empty());
        assert!(InjectPlan::parse::<&str>(&[]).is_err());
        assert!(InjectPlan::parse(&["usage: inject ..."]).is_err());
        assert!(InjectPlan::parse(&["inject: seed=0 armed=0", "rule=x"]).is_err());
    }
}
