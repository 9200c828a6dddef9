//! `vmem state <vmemN> <addr> <size>` as a type: the device's STATE over a block-aligned range
//! next to the guest's own plug bitmap for it.
//!
//! The guest asks the device through its worker (so the request never races a pass) and
//! prints one line:
//!
//! ```text
//! vmem state: id=vmem0 addr=0x140000000 size_kib=8192 device=plugged guest=plugged
//! ```
//!
//! `device` is STATE's answer, `guest` what the bitmap holds for the same blocks, each
//! `plugged`, `unplugged` or `mixed`. A request the guest refuses prints
//! `vmem state: FAIL <reason>` (`unaligned`, `outside_usable`, `too_many_blocks`, `no_device`,
//! `device_busy`, `device_broken`, ...). Older kernels have no such command; the caller finds
//! out from `help` ([`has_vmem_state`]). The range is at most [`MAX_BLOCKS`] blocks.

use std::fmt;

use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::record::Record;

use super::one_line;

/// The most blocks one STATE request (and so one `vmem state`) may cover.
pub const MAX_BLOCKS: u64 = 65535;
const PREFIX: &str = "vmem state:";

/// What `vmem state` printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmemState {
    /// The answer: both views of the range.
    Seen(StateLine),
    /// `vmem state: FAIL <reason>`.
    Refused(String),
}

/// A `vmem state: id=… addr=… size_kib=… device=… guest=…` line. Displays as its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLine {
    /// `vmemN`.
    pub id: String,
    /// Start of the range.
    pub addr: u64,
    /// Its size.
    pub size_kib: u64,
    /// The device's STATE: `plugged`, `unplugged` or `mixed`.
    pub device: String,
    /// The guest's bitmap over the same blocks.
    pub guest: String,
    record: Record,
}

impl VmemState {
    /// Parses the one line `vmem state` prints.
    pub fn parse(line: &str) -> Result<VmemState> {
        let rest = line
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::Protocol(format!("`vmem state` printed {line:?}")))?
            .trim();
        if let Some(reason) = rest.strip_prefix("FAIL") {
            return Ok(VmemState::Refused(reason.trim().to_string()));
        }
        let record = Record::parse(rest)?;
        let view = |key: &str| -> Result<String> {
            match record.str(key)? {
                v @ ("plugged" | "unplugged" | "mixed") => Ok(v.to_string()),
                v => Err(Error::Protocol(format!(
                    "`vmem state`: `{key}={v}` in {line:?} is no block state"
                ))),
            }
        };
        Ok(VmemState::Seen(StateLine {
            id: record.str("id")?.to_string(),
            addr: record.u64("addr")?,
            size_kib: record.u64("size_kib")?,
            device: view("device")?,
            guest: view("guest")?,
            record,
        }))
    }
}

impl fmt::Display for StateLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

/// Whether `help` lists `vmem state`: a line whose first word is `vmem` with `state` among
/// its argument words (`vmem state <vmemN> …`, `vmem [wait|state] …`). The plain `vmem` line's
/// description ("sizes, state, why ...") does not count.
pub fn has_vmem_state<S: AsRef<str>>(help: &[S]) -> bool {
    help.iter().any(|l| {
        let mut words = l.as_ref().split_whitespace();
        words.next() == Some("vmem")
            && words.any(|w| {
                w.split(['[', ']', '|', '<', '>'])
                    .any(|part| part == "state")
            })
    })
}

/// Runs `vmem state <id> <addr> <size_kib>K`.
pub fn vmem_state(
    console: &mut Console,
    id: &str,
    addr: u64,
    size_kib: u64,
    deadline: impl Into<Deadline>,
) -> Result<VmemState> {
    let cmd = format!("vmem state {id} {addr:#x} {size_kib}K");
    VmemState::parse(&one_line(console, &cmd, deadline)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_lines() {
        let line = "vmem state: id=vmem1 addr=0x1c0000000 size_kib=4096 device=mixed guest=plugged";
        let VmemState::Seen(s) = VmemState::parse(line).unwrap() else {
            panic!("seen");
        };
        assert_eq!(
            (
                s.id.as_str(),
                s.addr,
                s.size_kib,
                s.device.as_str(),
                s.guest.as_str()
            ),
            ("vmem1", 0x1_c000_0000, 4096, "mixed", "plugged")
        );
        assert_eq!(s.to_string(), &line[PREFIX.len() + 1..]);
        assert_eq!(
            VmemState::parse("vmem state: FAIL outside_usable").unwrap(),
            VmemState::Refused("outside_usable".into())
        );
        assert!(VmemState::parse("unknown command").is_err());
        assert!(VmemState::parse(&line.replace("guest=plugged", "guest=half")).is_err());
    }

    #[test]
    fn help_lists_vmem_state() {
        let old = ["vmem                     virtio-mem devices: sizes, state, why not converged"];
        assert!(!has_vmem_state(&old));
        assert!(has_vmem_state(&[
            "vmem state <vmemN> <addr> <size>   STATE of a range against the bitmap"
        ]));
        assert!(has_vmem_state(&["vmem [wait|state] ..."]));
        assert!(!has_vmem_state(&["vmemstate x"]));
    }
}
