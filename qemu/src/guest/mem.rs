//! `mem`, `check` and the boot line of the memory model, as types.
//!
//! `mem` prints one line per NUMA node and zone, then their sum:
//!
//! ```text
//! node=0 zone=Normal present_kib=524288 managed_kib=498000 free_kib=480000
//! node=0 zone=Movable present_kib=1048576 managed_kib=1048576 free_kib=1048576
//! node=all zone=all present_kib=1572864 managed_kib=1546576 free_kib=1528576
//! ```
//!
//! `present_kib` is the memory in the zone (boot RAM in Normal, plugged virtio-mem memory in
//! Movable), `managed_kib` what the page allocator got of it (present minus the kernel image,
//! the DTB, mem_maps and reservations) and `free_kib` what it has free now. Only online pages
//! count: a plugged unit that is offline (its UNPLUG's outcome unknown) is in no zone. The
//! total line also carries the kernel reserve and the unplug floor (`reserve_kib=`,
//! `floor_kib=`; older kernels print neither, [`Mem::limits`] is `None` then). A [`MemLine`] holds
//! those numbers and its node ([`MemNode::All`] for the total); [`Mem`] the lines in the order
//! printed. Parsing checks only the shape (every field there, numbers numeric, the node a
//! number or `all`); what the numbers must be is the caller's check (`tests/common`'s
//! `check_mem`).
//!
//! `check` runs the memory model's consistency checker and prints exactly `check: ok` when
//! every invariant holds ([`check`]). At boot the kernel logs `mm: ... init N us`, the time it
//! took to build the model ([`parse_mm_init_us`]).

use std::fmt;

use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::record::{parse_records, Record};

/// The node of a `mem` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemNode {
    /// `node=N`: one NUMA node (node 0 on a machine without NUMA).
    Node(u64),
    /// `node=all`: the total over all nodes and zones.
    All,
}

/// One line of `mem`. Displays as the record the guest printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemLine {
    /// The node, or [`MemNode::All`] for the total.
    pub node: MemNode,
    /// `Normal`, `Movable`, or `all` on the total line.
    pub zone: String,
    /// Memory in the zone.
    pub present_kib: u64,
    /// What the page allocator manages of it.
    pub managed_kib: u64,
    /// What is free now.
    pub free_kib: u64,
    /// The kernel reserve (total line only, when printed).
    pub reserve_kib: Option<u64>,
    /// The unplug floor (total line only, when printed).
    pub floor_kib: Option<u64>,
    record: Record,
}

/// The kernel reserve and the unplug floor of `mem`'s total line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Free Normal memory only the kernel's own allocations may take.
    pub reserve_kib: u64,
    /// Free memory unplug keeps on top of the reserve.
    pub floor_kib: u64,
}

impl MemLine {
    /// The typed view of one `mem` record.
    pub fn from_record(record: &Record) -> Result<MemLine> {
        let node = match record.str("node")? {
            "all" => MemNode::All,
            n => MemNode::Node(n.parse().map_err(|_| {
                Error::Protocol(format!("mem: node is not a number in `{record}`"))
            })?),
        };
        Ok(MemLine {
            node,
            zone: record.str("zone")?.to_string(),
            present_kib: record.u64("present_kib")?,
            managed_kib: record.u64("managed_kib")?,
            free_kib: record.u64("free_kib")?,
            reserve_kib: optional(record, "reserve_kib")?,
            floor_kib: optional(record, "floor_kib")?,
            record: record.clone(),
        })
    }

    /// Whether this is the line of node `node` (not the total).
    pub fn is_node(&self, node: u64) -> bool {
        self.node == MemNode::Node(node)
    }
}

/// `key` as a number when the record has it.
fn optional(record: &Record, key: &str) -> Result<Option<u64>> {
    record.get(key).map(|_| record.u64(key)).transpose()
}

impl fmt::Display for MemLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

/// What `mem` printed. Displays as its lines, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mem {
    lines: Vec<MemLine>,
}

impl Mem {
    /// Parses `mem` output lines (empty lines are skipped).
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Mem> {
        Mem::from_records(&parse_records(lines)?)
    }

    /// The typed view of `mem`'s records.
    pub fn from_records(records: &[Record]) -> Result<Mem> {
        let lines = records
            .iter()
            .map(MemLine::from_record)
            .collect::<Result<_>>()?;
        Ok(Mem { lines })
    }

    /// Every line, in the order printed.
    pub fn lines(&self) -> &[MemLine] {
        &self.lines
    }

    /// The line of `zone` on node `node`.
    pub fn zone(&self, node: u64, zone: &str) -> Option<&MemLine> {
        self.lines
            .iter()
            .find(|l| l.is_node(node) && l.zone == zone)
    }

    /// The (first) `node=all` line.
    pub fn total(&self) -> Result<&MemLine> {
        self.lines
            .iter()
            .find(|l| l.node == MemNode::All)
            .ok_or_else(|| Error::Protocol("mem: no node=all line".into()))
    }

    /// The reserve and the floor from the total line; `None` when the kernel prints neither.
    pub fn limits(&self) -> Option<Limits> {
        let total = self.total().ok()?;
        Some(Limits {
            reserve_kib: total.reserve_kib?,
            floor_kib: total.floor_kib?,
        })
    }

    /// Sum of `field` over the per-node lines of `zone` (the total line left out). Fails when
    /// no node has that zone, so a changed output format is noticed.
    pub fn zone_sum(&self, zone: &str, field: impl Fn(&MemLine) -> u64) -> Result<u64> {
        let mut lines = self
            .lines
            .iter()
            .filter(|l| l.zone == zone && l.node != MemNode::All)
            .peekable();
        if lines.peek().is_none() {
            return Err(Error::Protocol(format!(
                "`mem` printed no per-node zone={zone} line"
            )));
        }
        Ok(lines.map(field).sum())
    }
}

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::write_lines(f, &self.lines)
    }
}

/// Runs `mem`.
pub fn mem(console: &mut Console, deadline: impl Into<Deadline>) -> Result<Mem> {
    Mem::from_records(&console.command("mem", deadline)?.records()?)
}

/// Runs `check`, which must print exactly `check: ok`.
pub fn check(console: &mut Console, deadline: impl Into<Deadline>) -> Result<()> {
    let out = console.command("check", deadline)?;
    if out.lines != ["check: ok"] {
        return Err(Error::Protocol(format!("`check` printed {:?}", out.text())));
    }
    Ok(())
}

/// The `us` of the kernel's boot line `mm: ... init N us`.
pub fn parse_mm_init_us(text: &str) -> Option<u64> {
    text.lines()
        .filter(|l| l.contains("mm: ") && l.contains(" init "))
        .find_map(|l| {
            let rest = &l[l.find(" init ")? + 6..];
            rest.strip_suffix(" us")?.trim().parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_NODES: [&str; 5] = [
        "node=0 zone=Normal present_kib=262144 managed_kib=257000 free_kib=250000",
        "node=0 zone=Movable present_kib=2097152 managed_kib=2097152 free_kib=2097152",
        "node=1 zone=Normal present_kib=262144 managed_kib=258000 free_kib=251000",
        "node=1 zone=Movable present_kib=2097152 managed_kib=2097152 free_kib=2097000",
        "node=all zone=all present_kib=4718592 managed_kib=4709304 free_kib=4695152",
    ];

    #[test]
    fn zone_sums_over_nodes_without_the_total() {
        let mem = Mem::parse(&TWO_NODES).unwrap();
        assert_eq!(mem.zone_sum("Movable", |z| z.free_kib).unwrap(), 4_194_152);
        assert_eq!(mem.zone_sum("Normal", |z| z.managed_kib).unwrap(), 515_000);
        assert!(mem.zone_sum("DMA", |z| z.free_kib).is_err());
        // A line without one of the numbers is no `mem` line.
        assert!(Mem::parse(&["node=0 zone=Normal present_kib=1 managed_kib=1"]).is_err());
    }

    #[test]
    fn lines_zones_and_total() {
        let mem = Mem::parse(&TWO_NODES).unwrap();
        assert_eq!(mem.lines().len(), 5);
        let movable = mem.zone(1, "Movable").unwrap();
        assert_eq!(movable.node, MemNode::Node(1));
        assert_eq!(movable.free_kib, 2_097_000);
        assert_eq!(movable.to_string(), TWO_NODES[3]);
        assert!(mem.zone(2, "Normal").is_none());
        let total = mem.total().unwrap();
        assert_eq!((total.node, total.zone.as_str()), (MemNode::All, "all"));
        assert_eq!(total.present_kib, 4_718_592);
        assert_eq!(mem.to_string(), TWO_NODES.join("\n"));
        assert!(Mem::parse(&TWO_NODES[..4]).unwrap().total().is_err());
        assert_eq!(mem.limits(), None);
        let with = format!("{} reserve_kib=8192 floor_kib=65536", TWO_NODES[4]);
        let mut lines = TWO_NODES[..4].to_vec();
        lines.push(&with);
        let limits = Mem::parse(&lines).unwrap().limits().unwrap();
        assert_eq!((limits.reserve_kib, limits.floor_kib), (8192, 65536));
        assert!(Mem::parse(&[with.replace("=8192", "=x")]).is_err());
        assert!(
            Mem::parse(&["node=x zone=Normal present_kib=1 managed_kib=1 free_kib=1"]).is_err()
        );
    }

    #[test]
    fn mm_init_line_parses() {
        let t = "[INFO] mm: 4 sections present\r\n[INFO] mm: 4096 MiB present, 4000 MiB managed, mem_map 32 bytes/page, init 1234 us\r\n";
        assert_eq!(parse_mm_init_us(&t.replace('\r', "")), Some(1234));
        assert_eq!(parse_mm_init_us("[INFO] mm: nothing"), None);
    }
}
