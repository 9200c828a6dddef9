//! `sections` as types: the memory model's present sections, and how much of a physical range
//! they hold present and online.
//!
//! `sections` prints one line per present 128 MiB section, in address order:
//!
//! ```text
//! section=40 start=0x140000000 end=0x148000000 node=0 zone=Movable state=online-hotplug
//!     subsections=64/64 online=64/64 isolated=0/64
//! ```
//!
//! (one line on the console). `start` and `end` (exclusive) bound the whole section, whatever
//! of it is present; `subsections` counts its present 2 MiB subsections, `online` those whose
//! pages are online, `isolated` its isolated pageblocks (a pageblock is a subsection). A
//! run-time (`hotplug`) section holds only what virtio-mem plugged: a subsection is present
//! from the moment its unit is added until it is removed after the device unplugged it, and
//! online while its pages are in a zone. So the present subsections of the sections inside a
//! device region are exactly the memory the guest holds plugged there (online, or offline
//! while an UNPLUG's outcome is unknown), in 2 MiB steps — the plug unit is a whole number of
//! subsections — and [`Sections::in_range`] sums them. The sum is exact only for a range that
//! starts and ends on a section boundary (a section's line does not say which of its
//! subsections are present); [`Sections::in_range`] refuses any other range.

use std::fmt;

use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::record::{parse_records, Record};

/// A section: 128 MiB.
pub const SECTION_BYTES: u64 = 128 << 20;
/// A subsection: 2 MiB, 64 to a section.
pub const SUBSECTION_BYTES: u64 = 2 << 20;

/// One line of `sections`. Displays as the record the guest printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionLine {
    /// Section number: `start / 128 MiB`.
    pub nr: u64,
    /// Start of the section.
    pub start: u64,
    /// End of the section (exclusive).
    pub end: u64,
    /// The section's node.
    pub node: u64,
    /// `Normal`, `Movable`, or `none` while nothing in it is online.
    pub zone: String,
    /// Present subsections, of 64.
    pub subsections_present: u64,
    /// Online subsections, of 64.
    pub subsections_online: u64,
    /// Isolated pageblocks, of 64.
    pub pageblocks_isolated: u64,
    record: Record,
}

/// `K/64`, a count of 64.
fn of_64(record: &Record, key: &str) -> Result<u64> {
    let v = record.str(key)?;
    match v.split_once('/') {
        Some((k, "64")) => k.parse().ok().filter(|&k| k <= 64),
        _ => None,
    }
    .ok_or_else(|| Error::Protocol(format!("sections: `{key}={v}` is not K/64 in `{record}`")))
}

impl SectionLine {
    /// The typed view of one `sections` record.
    pub fn from_record(record: &Record) -> Result<SectionLine> {
        let line = SectionLine {
            nr: record.u64("section")?,
            start: record.u64("start")?,
            end: record.u64("end")?,
            node: record.u64("node")?,
            zone: record.str("zone")?.to_string(),
            subsections_present: of_64(record, "subsections")?,
            subsections_online: of_64(record, "online")?,
            pageblocks_isolated: of_64(record, "isolated")?,
            record: record.clone(),
        };
        if line.end != line.start + SECTION_BYTES || line.start != line.nr * SECTION_BYTES {
            return Err(Error::Protocol(format!(
                "sections: `{record}` is not one 128 MiB section"
            )));
        }
        Ok(line)
    }
}

impl fmt::Display for SectionLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

/// What the sections inside a range hold, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Present subsections.
    pub present_bytes: u64,
    /// Online subsections.
    pub online_bytes: u64,
    /// Isolated pageblocks.
    pub isolated_bytes: u64,
}

/// What `sections` printed. Displays as its lines, one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections {
    /// One line per present section, in the order printed.
    pub lines: Vec<SectionLine>,
}

impl Sections {
    /// Parses `sections` output lines (empty lines are skipped).
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Sections> {
        let lines = parse_records(lines)?
            .iter()
            .map(SectionLine::from_record)
            .collect::<Result<_>>()?;
        Ok(Sections { lines })
    }

    /// The present, online and isolated subsections of the sections in `[start, end)`, which
    /// must start and end on a section boundary (see the module docs).
    pub fn in_range(&self, start: u64, end: u64) -> Result<Held> {
        if start % SECTION_BYTES != 0 || end % SECTION_BYTES != 0 {
            return Err(Error::Protocol(format!(
                "sections: [{start:#x}, {end:#x}) does not start and end on a 128 MiB \
                 section boundary, so `sections` cannot say what of it is present"
            )));
        }
        let mut held = Held::default();
        for s in self
            .lines
            .iter()
            .filter(|s| s.start >= start && s.end <= end)
        {
            held.present_bytes += s.subsections_present * SUBSECTION_BYTES;
            held.online_bytes += s.subsections_online * SUBSECTION_BYTES;
            held.isolated_bytes += s.pageblocks_isolated * SUBSECTION_BYTES;
        }
        Ok(held)
    }
}

impl fmt::Display for Sections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::write_lines(f, &self.lines)
    }
}

/// Runs `sections`.
pub fn sections(console: &mut Console, deadline: impl Into<Deadline>) -> Result<Sections> {
    Sections::parse(&console.command("sections", deadline)?.lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: [&str; 3] = [
        "section=0 start=0x0 end=0x8000000 node=0 zone=Normal state=online-boot \
         subsections=64/64 online=64/64 isolated=0/64",
        "section=40 start=0x140000000 end=0x148000000 node=0 zone=Movable state=online-hotplug \
         subsections=64/64 online=63/64 isolated=1/64",
        "section=41 start=0x148000000 end=0x150000000 node=0 zone=Movable state=online-hotplug \
         subsections=3/64 online=3/64 isolated=0/64",
    ];

    #[test]
    fn sums_the_sections_of_a_range() {
        let s = Sections::parse(&LINES).unwrap();
        assert_eq!(s.lines.len(), 3);
        assert_eq!(s.lines[1].to_string(), LINES[1]);
        let held = s.in_range(0x1_4000_0000, 0x2_4000_0000).unwrap();
        assert_eq!(held.present_bytes, 67 * SUBSECTION_BYTES);
        assert_eq!(held.online_bytes, 66 * SUBSECTION_BYTES);
        assert_eq!(held.isolated_bytes, SUBSECTION_BYTES);
        assert_eq!(
            s.in_range(0, SECTION_BYTES).unwrap().present_bytes,
            128 << 20
        );
        assert_eq!(
            s.in_range(SECTION_BYTES, 0x1_4000_0000).unwrap(),
            Held::default()
        );
        assert!(s.in_range(0x1_4020_0000, 0x2_4000_0000).is_err());
    }

    #[test]
    fn rejects_garbled_lines() {
        for bad in [
            LINES[1].replace("64/64 online", "65/64 online"),
            LINES[1].replace("online=63/64", "online=63"),
            LINES[1].replace("end=0x148000000", "end=0x149000000"),
            LINES[1].replace("section=40", "section=41"),
        ] {
            assert!(Sections::parse(&[bad.as_str()]).is_err(), "{bad}");
        }
        assert_eq!(Sections::parse::<&str>(&[]).unwrap(), Sections::default());
    }
}
