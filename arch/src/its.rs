//! The GICv3 Interrupt Translation Service: what turns a PCI function's MSI write into an
//! LPI.
//!
//! Model (Arm IHI 0069, chapter 5): a function writes an EventID to the ITS's doorbell,
//! GITS_TRANSLATER; the bus tags the write with the function's DeviceID (the PCI requester
//! ID through the host bridge's `msi-map`). The ITS looks the DeviceID up in its device
//! table, which names the device's Interrupt Translation Table (ITT); the ITT entry of the
//! EventID names an LPI INTID and a collection; the collection table names the
//! redistributor that takes it. The LPI's enable bit and priority are one byte in the
//! LPI configuration (property) table, shared by the redistributors; its pending bit is in
//! the redistributor's pending table.
//!
//! The kernel drives it with commands written to a ring in memory (GITS_CBASER), published
//! by moving GITS_CWRITER and consumed when GITS_CREADR catches up:
//! - `MAPC ICID, RD`: collection ICID is that redistributor (by physical address when
//!   GITS_TYPER.PTA, else by processor number);
//! - `MAPD DeviceID, ITT, Size`: the device's ITT, for 2^(Size+1) EventIDs;
//! - `MAPTI DeviceID, EventID, pINTID, ICID`: that event raises that LPI there;
//! - `INV DeviceID, EventID`: re-read the LPI's configuration byte; `SYNC RD`: every
//!   earlier command's effect is visible at that redistributor.
//!
//! This file is the pure part, run by host tests: the 32-byte command encodings (four
//! little-endian doublewords each, IHI 0069 5.3), and the register values and table sizes
//! computed from GITS_TYPER and GITS_BASER<n>. The live driver, target-only, is
//! [`driver`]; the redistributors' side (GICR_PROPBASER, GICR_PENDBASER, EnableLPIs) is in
//! [`crate::gic`]. Table memory comes from the kernel through [`GicMemory`].

#[cfg(target_os = "none")]
pub mod driver;

pub use crate::irq::FIRST_LPI;
/// Offset of GITS_TRANSLATER (the MSI doorbell) from the ITS base: the second 64 KiB frame.
pub const TRANSLATER_OFFSET: u64 = 0x1_0040;
/// Bytes of one command.
pub const COMMAND_BYTES: usize = 32;
/// Table and queue attributes we ask for: Normal, inner write-back read/write-allocate
/// (InnerCache 0b111), outer the same as inner (OuterCache 0), inner shareable (0b01),
/// which is how the kernel maps its RAM.
pub const INNER_WB: u64 = 0b111;
/// Shareability field value: inner shareable.
pub const INNER_SHAREABLE: u64 = 0b01;

/// Memory for the GIC's tables: the kernel's allocator behind a trait.
///
/// # Safety
/// Implementers promise that `alloc_zeroed` returns `(pa, va)` of `bytes` of zeroed RAM,
/// aligned to `align` in physical address, mapped at `va` as Normal write-back memory, that
/// nothing else uses or frees for the rest of the run (the GIC writes into it at any time).
pub unsafe trait GicMemory {
    /// `bytes` of zeroed memory aligned to `align` (a power of two), or `None`.
    fn alloc_zeroed(&mut self, bytes: usize, align: usize) -> Option<(u64, usize)>;
}

/// One ITS command: four doublewords, DW0 first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command(pub [u64; 4]);

/// Command numbers (IHI 0069 5.3, DW0 bits [7:0]).
mod op {
    pub const SYNC: u64 = 0x05;
    pub const MAPD: u64 = 0x08;
    pub const MAPC: u64 = 0x09;
    pub const MAPTI: u64 = 0x0a;
    pub const INV: u64 = 0x0c;
    pub const INVALL: u64 = 0x0d;
    pub const DISCARD: u64 = 0x0f;
}

const VALID: u64 = 1 << 63;
/// RDbase field of MAPC / SYNC: DW2 bits [51:16].
const RD_MASK: u64 = ((1 << 36) - 1) << 16;

/// Which redistributor a collection or a SYNC names, as the ITS wants it (GITS_TYPER.PTA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdTarget(u64);

impl RdTarget {
    /// PTA = 1: the redistributor's physical address (64 KiB aligned); PTA = 0: its
    /// GICR_TYPER.Processor_Number.
    pub fn new(pta: bool, rd_pa: u64, processor_number: u16) -> RdTarget {
        RdTarget(match pta {
            true => rd_pa >> 16,
            false => u64::from(processor_number),
        })
    }
}

impl Command {
    /// `MAPD`: DeviceID's ITT at `itt_pa` (256-byte aligned) for 2^`event_bits` events
    /// (Size = event_bits - 1), or unmapped when `valid` is false.
    pub fn mapd(device_id: u32, itt_pa: u64, event_bits: u32, valid: bool) -> Command {
        let size = u64::from(event_bits.clamp(1, 32) - 1);
        let itt = itt_pa & (((1 << 44) - 1) << 8);
        Command([
            op::MAPD | u64::from(device_id) << 32,
            size,
            itt | if valid { VALID } else { 0 },
            0,
        ])
    }

    /// `MAPC`: collection `icid` is the redistributor `rd`.
    pub fn mapc(icid: u16, rd: RdTarget) -> Command {
        Command([
            op::MAPC,
            0,
            VALID | (rd.0 << 16) & RD_MASK | u64::from(icid),
            0,
        ])
    }

    /// `MAPTI`: event `event_id` of `device_id` raises LPI `intid` in collection `icid`.
    pub fn mapti(device_id: u32, event_id: u32, intid: u32, icid: u16) -> Command {
        Command([
            op::MAPTI | u64::from(device_id) << 32,
            u64::from(event_id) | u64::from(intid) << 32,
            u64::from(icid),
            0,
        ])
    }

    /// `INV`: the LPI of that event re-reads its configuration byte.
    pub fn inv(device_id: u32, event_id: u32) -> Command {
        Command([
            op::INV | u64::from(device_id) << 32,
            u64::from(event_id),
            0,
            0,
        ])
    }

    /// `INVALL`: every LPI of collection `icid` re-reads its configuration.
    pub fn invall(icid: u16) -> Command {
        Command([op::INVALL, 0, u64::from(icid), 0])
    }

    /// `DISCARD`: forget that event's translation (and a pending LPI of it).
    pub fn discard(device_id: u32, event_id: u32) -> Command {
        Command([
            op::DISCARD | u64::from(device_id) << 32,
            u64::from(event_id),
            0,
            0,
        ])
    }

    /// `SYNC`: earlier commands' effects are visible at redistributor `rd`.
    pub fn sync(rd: RdTarget) -> Command {
        Command([op::SYNC, 0, (rd.0 << 16) & RD_MASK, 0])
    }
}

/// GITS_TYPER, decoded (IHI 0069 12.19.20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItsTyper {
    /// Physical LPIs are supported (bit 0).
    pub physical: bool,
    /// Bytes of one ITT entry (bits [7:4] + 1).
    pub itt_entry_bytes: usize,
    /// EventID bits (bits [12:8] + 1).
    pub event_id_bits: u32,
    /// DeviceID bits (bits [17:13] + 1).
    pub device_id_bits: u32,
    /// Collections are named by redistributor address (bit 19), else by processor number.
    pub pta: bool,
    /// Collections held in the ITS without a table (bits [31:24]).
    pub hcc: u32,
}

impl From<u64> for ItsTyper {
    fn from(v: u64) -> ItsTyper {
        ItsTyper {
            physical: v & 1 != 0,
            itt_entry_bytes: ((v >> 4) & 0xf) as usize + 1,
            event_id_bits: ((v >> 8) & 0x1f) as u32 + 1,
            device_id_bits: ((v >> 13) & 0x1f) as u32 + 1,
            pta: v & (1 << 19) != 0,
            hcc: ((v >> 24) & 0xff) as u32,
        }
    }
}

/// What a GITS_BASER<n> holds (its Type field, bits [58:56]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableType {
    /// 0: not implemented.
    None,
    /// 1: the device table.
    Devices,
    /// 2: vPEs (GICv4; left invalid).
    Vpes,
    /// 4: the collection table.
    Collections,
    /// Reserved values.
    Other(u8),
}

/// The read-only and negotiated fields of a GITS_BASER<n>.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Baser {
    /// The table's type.
    pub kind: TableType,
    /// Bytes of one entry (bits [52:48] + 1).
    pub entry_bytes: usize,
    /// Page size (bits [9:8]: 4, 16 or 64 KiB).
    pub page_bytes: usize,
}

impl From<u64> for Baser {
    fn from(v: u64) -> Baser {
        Baser {
            kind: match (v >> 56) & 7 {
                0 => TableType::None,
                1 => TableType::Devices,
                2 => TableType::Vpes,
                4 => TableType::Collections,
                t => TableType::Other(t as u8),
            },
            entry_bytes: ((v >> 48) & 0x1f) as usize + 1,
            page_bytes: match (v >> 8) & 3 {
                0 => 4 << 10,
                1 => 16 << 10,
                _ => 64 << 10,
            },
        }
    }
}

/// The Page_Size field value of `page_bytes` (4, 16 or 64 KiB).
pub fn page_size_code(page_bytes: usize) -> u64 {
    match page_bytes {
        0x1000 => 0,
        0x4000 => 1,
        _ => 2,
    }
}

/// Most pages one flat table can have (Size is 8 bits of pages - 1).
pub const MAX_TABLE_PAGES: usize = 256;

/// How big to make a flat table for `ids` entries: (pages, IDs it then covers). Never
/// more than [`MAX_TABLE_PAGES`], never 0 pages.
pub fn table_plan(entry_bytes: usize, page_bytes: usize, ids: u64) -> (usize, u64) {
    let entry_bytes = entry_bytes.max(1) as u64;
    let per_page = (page_bytes as u64 / entry_bytes).max(1);
    let pages = ids.div_ceil(per_page).clamp(1, MAX_TABLE_PAGES as u64);
    (pages as usize, pages * per_page)
}

/// A GITS_BASER<n> value: Valid, flat (Indirect = 0), `pages` pages of `page_bytes` at
/// `pa`, with `entry_bytes` and `kind` as read, cacheable inner-shareable.
pub fn baser_value(raw: u64, pa: u64, page_bytes: usize, pages: usize) -> u64 {
    // Keep Type and Entry_Size (read-only), replace the rest.
    let ro = raw & ((7 << 56) | (0x1f << 48));
    // Physical_Address: bits [47:12] for 4/16 KiB pages; with 64 KiB pages PA [51:48] sits
    // in bits [15:12].
    let addr = match page_bytes {
        0x1_0000 => (pa & 0x0000_ffff_ffff_0000) | ((pa >> 48) & 0xf) << 12,
        _ => pa & 0x0000_ffff_ffff_f000,
    };
    VALID
        | INNER_WB << 59
        | ro
        | addr
        | INNER_SHAREABLE << 10
        | page_size_code(page_bytes) << 8
        | (pages.clamp(1, MAX_TABLE_PAGES) as u64 - 1)
}

/// GITS_CBASER: Valid, `pages` 4 KiB pages of commands at `pa`, cacheable inner-shareable.
pub fn cbaser_value(pa: u64, pages: usize) -> u64 {
    VALID
        | INNER_WB << 59
        | (pa & 0x000f_ffff_ffff_f000)
        | INNER_SHAREABLE << 10
        | (pages.clamp(1, 256) as u64 - 1)
}

/// Shareability field (bits [11:10]) of a GITS_BASER / CBASER / GICR_PROPBASER /
/// PENDBASER value: when the GIC reads back 0 (non-shareable) it does not snoop the
/// caches, and what we write must be cleaned to memory.
pub fn shareability(v: u64) -> u64 {
    (v >> 10) & 3
}

/// An ITT for at least `events` events: (EventID bits, bytes, at least 256). `None` when
/// `events` needs more EventID bits than the ITS has.
pub fn itt_plan(events: u32, entry_bytes: usize, its_event_bits: u32) -> Option<(u32, usize)> {
    // MAPD's Size is bits - 1, so one event still takes one bit.
    let bits = events.max(2).next_power_of_two().trailing_zeros();
    (bits <= its_event_bits).then(|| (bits, ((1usize << bits) * entry_bytes).max(256)))
}

/// The LPI configuration byte (IHI 0069 5.1.1): priority bits [7:2], bit 1 RES1, bit 0
/// enable.
pub fn lpi_config(priority: u8, enabled: bool) -> u8 {
    (priority & 0xfc) | 0b10 | enabled as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_encodings() {
        let rd = RdTarget::new(false, 0, 0);
        assert_eq!(
            Command::mapd(0x0108, 0x4123_4500, 1, true).0,
            [0x0000_0108_0000_0008, 0, VALID | 0x4123_4500, 0]
        );
        // Size is bits - 1; the ITT address keeps bits [51:8].
        assert_eq!(
            Command::mapd(7, 0x4123_45ff, 5, false).0,
            [0x0000_0007_0000_0008, 4, 0x4123_4500, 0]
        );
        assert_eq!(Command::mapc(3, rd).0, [0x09, 0, VALID | 3, 0]);
        let by_addr = RdTarget::new(true, 0x080a_0000, 9);
        assert_eq!(
            Command::mapc(0, by_addr).0,
            [0x09, 0, VALID | 0x080a_0000, 0]
        );
        let by_number = RdTarget::new(false, 0x080a_0000, 2);
        assert_eq!(
            Command::mapc(1, by_number).0,
            [0x09, 0, VALID | 2 << 16 | 1, 0]
        );
        assert_eq!(
            Command::mapti(0x0008, 1, 8193, 0).0,
            [0x0000_0008_0000_000a, 0x0000_2001_0000_0001, 0, 0]
        );
        assert_eq!(Command::inv(0x0008, 1).0, [0x0000_0008_0000_000c, 1, 0, 0]);
        assert_eq!(Command::invall(5).0, [0x0d, 0, 5, 0]);
        assert_eq!(
            Command::discard(0x0100, 3).0,
            [0x0000_0100_0000_000f, 3, 0, 0]
        );
        assert_eq!(Command::sync(by_addr).0, [0x05, 0, 0x080a_0000, 0]);
        assert_eq!(Command::sync(by_number).0, [0x05, 0, 2 << 16, 0]);
    }

    #[test]
    fn typer_and_baser_decoding() {
        // QEMU's ITS: physical, 8-byte ITT entries, 16 EventID bits, 16 DeviceID bits.
        let t = ItsTyper::from(0x1 | 7 << 4 | 15 << 8 | 15 << 13 | 1 << 19);
        assert_eq!(
            t,
            ItsTyper {
                physical: true,
                itt_entry_bytes: 8,
                event_id_bits: 16,
                device_id_bits: 16,
                pta: true,
                hcc: 0
            }
        );
        let devices = Baser::from(1 << 56 | 7 << 48 | 1 << 8);
        assert_eq!(
            devices,
            Baser {
                kind: TableType::Devices,
                entry_bytes: 8,
                page_bytes: 16 << 10
            }
        );
        assert_eq!(Baser::from(4 << 56).kind, TableType::Collections);
        assert_eq!(Baser::from(0).kind, TableType::None);
        assert_eq!(Baser::from(3 << 56).kind, TableType::Other(3));
    }

    #[test]
    fn table_sizes() {
        // 256 buses of requester IDs, 8-byte entries, 4 KiB pages: 128 pages.
        assert_eq!(table_plan(8, 4096, 1 << 16), (128, 1 << 16));
        // Capped at 256 pages.
        assert_eq!(table_plan(8, 4096, 1 << 20), (256, 256 * 512));
        assert_eq!(table_plan(16, 4096, 1), (1, 256));
        // 2 events -> 1 bit, 256-byte minimum; 3 -> 2 bits.
        assert_eq!(itt_plan(2, 8, 16), Some((1, 256)));
        assert_eq!(itt_plan(3, 8, 16), Some((2, 256)));
        assert_eq!(itt_plan(64, 8, 16), Some((6, 512)));
        assert_eq!(itt_plan(64, 8, 5), None);
    }

    #[test]
    fn register_values() {
        let raw = 1 << 56 | 7 << 48;
        let v = baser_value(raw, 0x4010_0000, 4096, 128);
        assert_eq!(
            v,
            VALID | 7 << 59 | 1 << 56 | 7 << 48 | 0x4010_0000 | 1 << 10 | 127
        );
        assert_eq!(shareability(v), INNER_SHAREABLE);
        // 64 KiB pages carry PA bits [51:48] in [15:12].
        let v = baser_value(raw, 0x000f_0000_4001_0000, 64 << 10, 1);
        assert_eq!(v & 0xffff_ffff_f000, 0x4001_0000 | 0xf << 12);
        assert_eq!((v >> 8) & 3, 2);
        assert_eq!(
            cbaser_value(0x4020_0000, 1),
            VALID | 7 << 59 | 0x4020_0000 | 1 << 10
        );
        assert_eq!(lpi_config(0xa0, true), 0xa3);
        assert_eq!(lpi_config(0xa3, false), 0xa2);
    }
}
