//! Stage-1 translation tables (4 KiB granule, 4 levels, 48-bit VA): descriptor encoding and a
//! walker that maps and unmaps physical ranges: [`map`] places a [`PhysRange`] at a
//! [`VirtAddr`], [`unmap`] clears `size` bytes from a `VirtAddr` on.
//!
//! The walker is plain logic over [`TableMemory`], which hands out zeroed table pages and
//! lets the walker read and write their 512 entries. The kernel implements it over the linear
//! map; host tests implement it over boxed arrays. Table pages are named by [`TablePa`], which
//! only a table allocation or an `unsafe` constructor (for roots) makes, so safe code cannot
//! point the walker at an arbitrary address. `TableMemory` is an `unsafe trait`: the MMU
//! follows what the walker writes, so "the entries of table `t`" must be exactly the memory
//! at `t` (the trait's safety section).
//!
//! Entries are `AtomicU64` because the hardware walker (and other CPUs' walkers) read them
//! concurrently: every update is a single 64-bit store, and a live entry is only ever
//! changed invalid -> valid (map) or valid -> invalid (unmap). Changing a valid entry in
//! place (break-before-make) is never needed because:
//! - [`map`] refuses to overwrite a valid entry ([`MapError::AlreadyMapped`]);
//! - [`unmap`] refuses to split a block ([`MapError::WouldSplitBlock`]). Hot-added memory is
//!   mapped with at most [`Granule::Block2M`], and hotplug removes whole 2 MiB pageblocks, so
//!   removal never meets a block it would have to split.
//!
//! TLB maintenance is the caller's: after [`unmap`] the caller must invalidate the range on
//! every CPU before the memory is reused or given back. [`unmap`] says how large the smallest
//! leaf it removed was ([`Unmapped::min_leaf`]), so `mmu` can invalidate once per block
//! instead of once per page (the plan is [`crate::tlb`]'s).
//! Intermediate tables are not freed by [`unmap`] itself; [`prune_empty`] unlinks the tables
//! of a range that hold no entry any more (deepest first, never the root). Unlinking is the
//! break of break-before-make for a table descriptor: the caller must invalidate every CPU's
//! cached walks (non-leaf entries: `TLBI VMALLE1IS`, or by VA without the last-level hint)
//! before it frees or reuses a page `prune_empty` named; nothing is made in its place.
//!
//! Callers serialise all changes to one table tree (the kernel holds the page-table lock).

use crate::addr::{PhysRange, VirtAddr};
use core::sync::atomic::{AtomicU64, Ordering};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::registers::InMemoryRegister;

register_bitfields! {u64,
    /// A stage-1 descriptor at any level (ARM ARM D8.3, VMSAv8-64 descriptor formats).
    DESC [
        VALID OFFSET(0) NUMBITS(1) [],
        /// Levels 0-2: 1 = table, 0 = block. Level 3: must be 1 (page).
        TYPE OFFSET(1) NUMBITS(1) [Block = 0, TableOrPage = 1],
        /// Index into MAIR_EL1.
        ATTR_INDX OFFSET(2) NUMBITS(3) [],
        /// AP[2:1]: EL1 read-write / read-only (EL0 has no access).
        AP OFFSET(6) NUMBITS(2) [RwEl1 = 0b00, RoEl1 = 0b10],
        SH OFFSET(8) NUMBITS(2) [NonShareable = 0b00, Outer = 0b10, Inner = 0b11],
        AF OFFSET(10) NUMBITS(1) [],
        NG OFFSET(11) NUMBITS(1) [],
        /// Output address (or next-level table address), bits [47:12].
        OUTPUT_ADDR OFFSET(12) NUMBITS(36) [],
        PXN OFFSET(53) NUMBITS(1) [],
        UXN OFFSET(54) NUMBITS(1) []
    ]
}

/// MAIR_EL1 attribute index of Device-nGnRE memory; `boot.rs` programs MAIR_EL1 =
/// [`MAIR_VALUE`].
pub const MAIR_DEVICE_NGNRE: u64 = 0;
/// MAIR_EL1 attribute index of Normal write-back memory.
pub const MAIR_NORMAL_WB: u64 = 1;
/// MAIR_EL1 attribute index of Normal non-cacheable memory.
pub const MAIR_NORMAL_NC: u64 = 2;
/// Attr0 = Device-nGnRE (0x04), Attr1 = Normal WB RW-allocate (0xff), Attr2 = Normal NC (0x44).
pub const MAIR_VALUE: u64 = 0x04 | (0xff << 8) | (0x44 << 16);

/// Entries of a table page (4 KiB of 8-byte descriptors).
pub const ENTRIES: usize = 512;
const LEVEL_SHIFT: [u32; 4] = [39, 30, 21, 12];
const OA_MASK: u64 = ((1 << 48) - 1) & !0xfff;

/// Memory type of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemType {
    /// Normal memory, write-back cacheable, inner shareable (RAM).
    Normal,
    /// Normal memory, non-cacheable.
    NormalNonCacheable,
    /// Device-nGnRE memory (MMIO).
    Device,
}

/// Attributes of a mapping (always EL1-only; EL0 never gets kernel memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// Memory type.
    pub mem: MemType,
    /// EL1 may write (else read-only).
    pub writable: bool,
    /// EL1 may execute (never EL0).
    pub executable: bool,
}

impl Attrs {
    /// Kernel data: normal, read-write, never executable.
    pub const RAM: Attrs = Attrs {
        mem: MemType::Normal,
        writable: true,
        executable: false,
    };
    /// Device registers: device memory, read-write, never executable.
    pub const MMIO: Attrs = Attrs {
        mem: MemType::Device,
        writable: true,
        executable: false,
    };
    /// Kernel code: normal, read-only, executable.
    pub const TEXT: Attrs = Attrs {
        mem: MemType::Normal,
        writable: false,
        executable: true,
    };
    /// Kernel constants: normal, read-only, never executable.
    pub const RODATA: Attrs = Attrs {
        mem: MemType::Normal,
        writable: false,
        executable: false,
    };

    /// Leaf descriptor bits (without VALID/TYPE and address).
    fn leaf_bits(self) -> u64 {
        let d: InMemoryRegister<u64, DESC::Register> = InMemoryRegister::new(0);
        let idx = match self.mem {
            MemType::Normal => MAIR_NORMAL_WB,
            MemType::NormalNonCacheable => MAIR_NORMAL_NC,
            MemType::Device => MAIR_DEVICE_NGNRE,
        };
        let sh = match self.mem {
            MemType::Device => DESC::SH::NonShareable,
            _ => DESC::SH::Inner,
        };
        let ap = if self.writable {
            DESC::AP::RwEl1
        } else {
            DESC::AP::RoEl1
        };
        let pxn = if self.executable {
            DESC::PXN::CLEAR
        } else {
            DESC::PXN::SET
        };
        d.write(DESC::ATTR_INDX.val(idx) + sh + ap + DESC::AF::SET + pxn + DESC::UXN::SET);
        d.get()
    }

    /// Decodes the attributes of a leaf descriptor.
    pub fn from_desc(desc: u64) -> Attrs {
        let d: InMemoryRegister<u64, DESC::Register> = InMemoryRegister::new(desc);
        let mem = match d.read(DESC::ATTR_INDX) {
            MAIR_DEVICE_NGNRE => MemType::Device,
            MAIR_NORMAL_NC => MemType::NormalNonCacheable,
            _ => MemType::Normal,
        };
        Attrs {
            mem,
            writable: d.read(DESC::AP) == 0,
            executable: d.read(DESC::PXN) == 0,
        }
    }
}

/// Largest leaf size the walker may use for a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Granule {
    /// 4 KiB pages only.
    Page4K,
    /// Up to 2 MiB blocks.
    Block2M,
    /// Up to 1 GiB blocks.
    Block1G,
}

/// Why the walker refused a change (see each call for what it leaves behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// va, pa or size is not 4 KiB aligned, or the range wraps.
    Misaligned,
    /// Part of the range is already mapped (the first such va).
    AlreadyMapped(u64),
    /// [`TableMemory::alloc_table`] returned `None`.
    OutOfTables,
    /// Unmapping would split a block entry (the va of the block).
    WouldSplitBlock(u64),
}

/// The physical address of a translation-table page: what a table descriptor and a TTBR
/// point at.
///
/// Made by a [`TableMemory::alloc_table`] implementation or for a root, both through the
/// `unsafe` [`TablePa::new`]; the walker makes more only from the table descriptors of a
/// tree, which point at such pages. So safe code can hand the walker no other address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TablePa(u64);

impl TablePa {
    /// Names the table page at physical address `pa`.
    ///
    /// # Safety
    /// `pa` is a 4 KiB-aligned page that was zero when it first became a table, and that is
    /// used as a translation table and nothing else (its entries only read and written as
    /// atomics) for as long as this value, a copy of it, or a tree linking it is in use.
    pub const unsafe fn new(pa: u64) -> TablePa {
        TablePa(pa)
    }

    /// The physical address.
    pub const fn pa(self) -> u64 {
        self.0
    }

    /// The table a table descriptor points at (a tree links only table pages).
    fn of_desc(desc: u64) -> TablePa {
        TablePa(desc & OA_MASK)
    }
}

/// Where the walker gets and reads table pages.
///
/// # Safety
/// Whoever installs a tree built through an implementation (loads a TTBR with its root)
/// relies on the MMU translating exactly what the walker wrote. An implementation
/// guarantees:
/// 1. [`table`](TableMemory::table)`(t)` returns the 512 entries stored at `t`'s physical
///    address, the memory the MMU reads when it walks through `t`, valid for as long as `t`
///    is (see [`TablePa::new`]). A host fake, which no MMU reads, returns its own copy of
///    the table it handed out as `t`.
/// 2. [`alloc_table`](TableMemory::alloc_table) returns only pages that meet
///    [`TablePa::new`]'s conditions: 4 KiB aligned, zeroed, used for nothing else until the
///    tree that links them is torn down.
pub unsafe trait TableMemory {
    /// The entries of the table page `t`.
    fn table(&self, t: TablePa) -> &[AtomicU64; ENTRIES];

    /// A new table page, zeroed; `None` when there is none to give. The default (for
    /// read-only views of a tree) never has one.
    fn alloc_table(&mut self) -> Option<TablePa> {
        None
    }
}

fn index(va: u64, level: usize) -> usize {
    ((va >> LEVEL_SHIFT[level]) & (ENTRIES as u64 - 1)) as usize
}

fn is_table(desc: u64, level: usize) -> bool {
    level < 3 && desc & 0b11 == 0b11
}

fn block_size(level: usize) -> u64 {
    1 << LEVEL_SHIFT[level]
}

fn leaf_desc(pa: u64, attrs: Attrs, level: usize) -> u64 {
    let ty = if level == 3 { 0b11 } else { 0b01 };
    (pa & OA_MASK) | attrs.leaf_bits() | ty
}

/// Maps `[va, va + pa.size)` to the physical range `pa` with leaves no larger than `max`,
/// using the largest leaf that alignment allows. Nothing that is already mapped is changed;
/// on error the part mapped so far stays mapped (the caller unmaps it if it wants to undo).
pub fn map(
    mem: &mut impl TableMemory,
    root: TablePa,
    va: VirtAddr,
    pa: PhysRange,
    attrs: Attrs,
    max: Granule,
) -> Result<(), MapError> {
    let (va, pa, size) = (va.0, pa.base, pa.size);
    if (va | pa | size) & 0xfff != 0 || va.checked_add(size - 1).is_none() && size != 0 {
        return Err(MapError::Misaligned);
    }
    let min_leaf = match max {
        Granule::Block1G => 1,
        Granule::Block2M => 2,
        Granule::Page4K => 3,
    };
    let mut off = 0;
    while off < size {
        let (v, p, left) = (va + off, pa + off, size - off);
        // Walk down; place the largest leaf that fits and is allowed, descending through
        // existing tables (so a range next to smaller mappings uses smaller leaves).
        let mut table = root;
        let mut level = 0;
        loop {
            let slot = &mem.table(table)[index(v, level)];
            let desc = slot.load(Ordering::Acquire);
            if is_table(desc, level) {
                table = TablePa::of_desc(desc);
                level += 1;
                continue;
            }
            if desc & 1 != 0 {
                return Err(MapError::AlreadyMapped(v));
            }
            let bs = block_size(level);
            if level >= min_leaf && (v | p) & (bs - 1) == 0 && left >= bs {
                slot.store(leaf_desc(p, attrs, level), Ordering::Release);
                off += bs;
                break;
            }
            let new = mem.alloc_table().ok_or(MapError::OutOfTables)?;
            mem.table(table)[index(v, level)].store(new.pa() | 0b11, Ordering::Release);
            table = new;
            level += 1;
        }
    }
    Ok(())
}

/// What [`unmap`] removed: enough for the caller to size its TLB maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unmapped {
    /// Bytes that were mapped (holes are not counted).
    pub bytes: u64,
    /// Size of the smallest leaf removed (4 KiB, 2 MiB or 1 GiB); 0 if nothing was mapped.
    /// Every removed leaf is at least this large and aligned to its size, so one
    /// invalidation by VA every `min_leaf` bytes of the range reaches all of them.
    pub min_leaf: u64,
}

/// Unmaps `[va, va + size)`. Holes inside the range are fine. Fails without changing
/// anything if a block entry straddles either end of the range.
/// Returns what was mapped there. The caller must invalidate TLBs.
pub fn unmap(
    mem: &mut impl TableMemory,
    root: TablePa,
    va: VirtAddr,
    size: u64,
) -> Result<Unmapped, MapError> {
    let va = va.0;
    if (va | size) & 0xfff != 0 {
        return Err(MapError::Misaligned);
    }
    // First pass: check that no block straddles the range boundaries.
    for edge in [va, va + size] {
        if let Some((level, _)) = lookup(mem, root, edge) {
            let bs = block_size(level);
            let base = edge & !(bs - 1);
            if base != edge && base < va + size && base + bs > va {
                return Err(MapError::WouldSplitBlock(base));
            }
        }
    }
    let mut unmapped = Unmapped::default();
    let mut v = va;
    while v < va + size {
        match lookup(mem, root, v) {
            Some((level, _)) => {
                let table = table_at(mem, root, v, level).expect("lookup found a leaf");
                mem.table(table)[index(v, level)].store(0, Ordering::Release);
                let bs = block_size(level);
                unmapped.bytes += bs;
                if unmapped.min_leaf == 0 || bs < unmapped.min_leaf {
                    unmapped.min_leaf = bs;
                }
                v += bs;
            }
            None => v = next_boundary(mem, root, v),
        }
    }
    Ok(unmapped)
}

/// Unlinks the tables of levels 1-3 whose span meets `[va, va + size)` and that hold no
/// entry (deepest first, so a table emptied by the pruning of its children goes too), at
/// most `max` of them; calls `gone(t)` for each. Returns how many it unlinked: with `max`
/// reached, call again (after dealing with those) for the rest. See the module doc for the
/// TLB maintenance the caller owes before reusing a page.
pub fn prune_empty(
    mem: &mut impl TableMemory,
    root: TablePa,
    va: VirtAddr,
    size: u64,
    max: usize,
    mut gone: impl FnMut(TablePa),
) -> usize {
    let mut n = 0;
    for level in (1..4).rev() {
        // A table at `level` spans one entry of its parent at `level - 1`.
        let span = block_size(level - 1);
        let mut v = va.0 & !(span - 1);
        while v < va.0 + size {
            if n == max {
                return n;
            }
            if let Some(parent) = table_at(mem, root, v, level - 1) {
                let entry = &mem.table(parent)[index(v, level - 1)];
                let desc = entry.load(Ordering::Acquire);
                if is_table(desc, level - 1) {
                    let t = TablePa::of_desc(desc);
                    if mem.table(t).iter().all(|e| e.load(Ordering::Acquire) == 0) {
                        entry.store(0, Ordering::Release);
                        gone(t);
                        n += 1;
                    }
                }
            }
            v = match v.checked_add(span) {
                Some(next) => next,
                None => break,
            };
        }
    }
    n
}

/// The next va after `va` where a mapping could start (skips whole empty tables).
fn next_boundary(mem: &impl TableMemory, root: TablePa, va: u64) -> u64 {
    let mut table = root;
    for l in 0..4 {
        let desc = mem.table(table)[index(va, l)].load(Ordering::Acquire);
        if !is_table(desc, l) {
            let bs = block_size(l);
            return (va & !(bs - 1)) + bs;
        }
        table = TablePa::of_desc(desc);
    }
    va + 4096
}

/// The table at `level` on the walk to `va` (`level` 0 is `root`, 3 the table holding
/// `va`'s page entry); `None` if a level above holds no table (nothing, or a block).
pub fn table_at(mem: &impl TableMemory, root: TablePa, va: u64, level: usize) -> Option<TablePa> {
    let mut table = root;
    for l in 0..level {
        let desc = mem.table(table)[index(va, l)].load(Ordering::Acquire);
        if !is_table(desc, l) {
            return None;
        }
        table = TablePa::of_desc(desc);
    }
    Some(table)
}

/// The leaf mapping `va`: its level and descriptor.
pub fn lookup(mem: &impl TableMemory, root: TablePa, va: u64) -> Option<(usize, u64)> {
    let mut table = root;
    for l in 0..4 {
        let desc = mem.table(table)[index(va, l)].load(Ordering::Acquire);
        if desc & 1 == 0 {
            return None;
        }
        if !is_table(desc, l) {
            return Some((l, desc));
        }
        table = TablePa::of_desc(desc);
    }
    None
}

/// Physical address `va` translates to, with the leaf's attributes.
pub fn translate(mem: &impl TableMemory, root: TablePa, va: u64) -> Option<(u64, Attrs)> {
    let (level, desc) = lookup(mem, root, va)?;
    let bs = block_size(level);
    Some((
        (desc & OA_MASK & !(bs - 1)) | (va & (bs - 1)),
        Attrs::from_desc(desc),
    ))
}

// ---------------------------------------------------------------------------------------
// 4 KiB pages of per-task address spaces (TTBR0), and migration entries.

/// nG: the entry is tagged with the ASID of the address space (TTBR0 leaves set it).
pub const DESC_NG: u64 = 1 << 11;

/// A valid level-3 page descriptor for `pa` (4 KiB aligned), tagged with the ASID
/// (non-global), never executable.
pub fn user_page_desc(pa: u64, writable: bool) -> u64 {
    let attrs = Attrs {
        mem: MemType::Normal,
        writable,
        executable: false,
    };
    leaf_desc(pa, attrs, 3) | DESC_NG
}

/// Output address of a valid leaf descriptor (level 3).
pub fn desc_addr(desc: u64) -> u64 {
    desc & OA_MASK
}

/// Low 12 bits of a migration entry: bit 0 (VALID) clear, so the MMU faults on it; the
/// rest is a marker no other descriptor we write has (we write 0 for "nothing mapped").
pub const MIGRATION_TAG: u64 = 0b1101_0010_1100;
const _: () = assert!(MIGRATION_TAG & 1 == 0 && MIGRATION_TAG < 0x1000);
/// Largest pfn a migration entry holds (bits [63:12]: 52 bits).
pub const MIGRATION_MAX_PFN: u64 = (1 << 52) - 1;

/// A software migration entry: an invalid descriptor saying "the page `pfn` that was
/// mapped here is being migrated; wait for the new mapping". The MMU ignores every bit of
/// an invalid descriptor but bit 0, so a fault on it reaches the kernel with FAR = the VA.
pub fn migration_entry(pfn: u64) -> u64 {
    assert!(pfn <= MIGRATION_MAX_PFN, "pfn 0x{pfn:x} too large");
    (pfn << 12) | MIGRATION_TAG
}

/// The pfn of a migration entry; `None` for anything else (valid or plain invalid).
pub fn parse_migration_entry(desc: u64) -> Option<u64> {
    (desc & 0xfff == MIGRATION_TAG).then_some(desc >> 12)
}

/// The level-3 table holding `va`'s entry, allocating missing tables on the way. Levels 0-2
/// must hold tables or nothing (a block is [`MapError::AlreadyMapped`]). To find the table
/// without creating any, use [`table_at`] with level 3.
pub fn l3_table(mem: &mut impl TableMemory, root: TablePa, va: u64) -> Result<TablePa, MapError> {
    let mut table = root;
    for level in 0..3 {
        let desc = mem.table(table)[index(va, level)].load(Ordering::Acquire);
        if is_table(desc, level) {
            table = TablePa::of_desc(desc);
            continue;
        }
        if desc & 1 != 0 {
            return Err(MapError::AlreadyMapped(va & !(block_size(level) - 1)));
        }
        let new = mem.alloc_table().ok_or(MapError::OutOfTables)?;
        mem.table(table)[index(va, level)].store(new.pa() | 0b11, Ordering::Release);
        table = new;
    }
    Ok(table)
}

/// Index of `va`'s entry in its level-3 table.
pub fn l3_index(va: u64) -> usize {
    index(va, 3)
}

/// Calls `f` with every table page below `root` (not the root), children first: used to
/// free a tree. Only table descriptors are followed (4 KiB-page trees have no blocks).
pub fn for_each_subtable(mem: &impl TableMemory, root: TablePa, f: &mut impl FnMut(TablePa)) {
    fn walk(mem: &impl TableMemory, table: TablePa, level: usize, f: &mut impl FnMut(TablePa)) {
        if level == 3 {
            return;
        }
        for e in mem.table(table).iter() {
            let d = e.load(Ordering::Acquire);
            if is_table(d, level) {
                walk(mem, TablePa::of_desc(d), level + 1, f);
                f(TablePa::of_desc(d));
            }
        }
    }
    walk(mem, root, 0, f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeMem {
        tables: HashMap<u64, Box<[AtomicU64; ENTRIES]>>,
        next: u64,
        limit: usize,
    }

    impl FakeMem {
        fn new() -> (Self, TablePa) {
            let mut m = FakeMem {
                next: 0x1000_0000,
                limit: usize::MAX,
                ..Default::default()
            };
            let root = m.alloc_table().unwrap();
            (m, root)
        }
    }

    // SAFETY: no MMU reads these tables; `table(t)` is the boxed array handed out as `t`
    // (point 1), and each new one is zeroed and handed out once (point 2).
    unsafe impl TableMemory for FakeMem {
        fn alloc_table(&mut self) -> Option<TablePa> {
            if self.tables.len() >= self.limit {
                return None;
            }
            let pa = self.next;
            self.next += 4096;
            self.tables
                .insert(pa, Box::new(core::array::from_fn(|_| AtomicU64::new(0))));
            // SAFETY: a new, zeroed, page-aligned fake table, used only as a table.
            Some(unsafe { TablePa::new(pa) })
        }
        fn table(&self, t: TablePa) -> &[AtomicU64; ENTRIES] {
            &self.tables[&t.pa()]
        }
    }

    const VA: u64 = 0xffff_0000_4000_0000;

    fn phys(base: u64, size: u64) -> PhysRange {
        PhysRange { base, size }
    }

    /// Tables of an unmapped range go, deepest first, in batches; tables still holding a
    /// mapping (and the root) stay, and what they map still translates.
    #[test]
    fn prune_unlinks_only_empty_tables() {
        let (mut m, root) = FakeMem::new();
        let gib = 1u64 << 30;
        // 4 KiB pages over 4 MiB at VA+1G (two L3 tables and one L2), 2 MiB blocks at
        // VA+2G..+4G (one L2 table per GiB), and a page at VA that stays.
        map(
            &mut m,
            root,
            VirtAddr(VA + gib),
            phys(0x8000_0000, 4 << 20),
            Attrs::RAM,
            Granule::Page4K,
        )
        .unwrap();
        map(
            &mut m,
            root,
            VirtAddr(VA + 2 * gib),
            phys(0x1_0000_0000, 2 * gib),
            Attrs::RAM,
            Granule::Block2M,
        )
        .unwrap();
        map(
            &mut m,
            root,
            VirtAddr(VA),
            phys(0x4000_0000, 4096),
            Attrs::RAM,
            Granule::Page4K,
        )
        .unwrap();
        let tables = m.tables.len();
        let mut gone = Vec::new();
        // Nothing is empty yet.
        assert_eq!(
            prune_empty(&mut m, root, VirtAddr(VA), 4 * gib, 8, |t| gone.push(t)),
            0
        );
        unmap(&mut m, root, VirtAddr(VA + gib), 4 << 20).unwrap();
        unmap(&mut m, root, VirtAddr(VA + 2 * gib), 2 * gib).unwrap();
        // Batches of 2: two L3 tables, then the L2 tables of 1G, 2G and 3G.
        let mut batches = Vec::new();
        loop {
            let n = prune_empty(&mut m, root, VirtAddr(VA + gib), 3 * gib, 2, |t| {
                gone.push(t)
            });
            if n == 0 {
                break;
            }
            batches.push(n);
        }
        assert_eq!(batches, [2, 2, 1]);
        assert_eq!(gone.len(), 5);
        for t in &gone {
            assert!(m.tables[&t.pa()]
                .iter()
                .all(|e| e.load(Ordering::Relaxed) == 0));
        }
        // The table path to VA (L1, L2, L3) and the root stay; VA still translates.
        assert_eq!(tables - gone.len(), 4);
        assert!(lookup(&m, root, VA).is_some());
        assert!(table_at(&m, root, VA + gib, 2).is_none());
        // Unmapping the last page empties the rest: L3, L2, L1, never the root.
        unmap(&mut m, root, VirtAddr(VA), 4096).unwrap();
        let n = prune_empty(&mut m, root, VirtAddr(VA), 4096, 8, |t| gone.push(t));
        assert_eq!(n, 3);
        assert!(m.tables[&root.pa()]
            .iter()
            .all(|e| e.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn largest_leaves_and_translate() {
        let (mut m, root) = FakeMem::new();
        // 1 GiB + 2 MiB + 4 KiB, 1 GiB aligned: one 1G block, one 2M block, one page.
        let size = (1 << 30) + (2 << 20) + 4096;
        map(
            &mut m,
            root,
            VirtAddr(VA),
            phys(0x4000_0000, size),
            Attrs::RAM,
            Granule::Block1G,
        )
        .unwrap();
        assert_eq!(lookup(&m, root, VA).unwrap().0, 1);
        assert_eq!(lookup(&m, root, VA + (1 << 30)).unwrap().0, 2);
        assert_eq!(lookup(&m, root, VA + (1 << 30) + (2 << 20)).unwrap().0, 3);
        assert_eq!(lookup(&m, root, VA + size), None);
        let (pa, attrs) = translate(&m, root, VA + 0x1234_5678).unwrap();
        assert_eq!(pa, 0x4000_0000 + 0x1234_5678);
        assert_eq!(attrs, Attrs::RAM);
    }

    #[test]
    fn granule_cap_and_no_split() {
        let (mut m, root) = FakeMem::new();
        map(
            &mut m,
            root,
            VirtAddr(VA),
            phys(0x4000_0000, 8 << 20),
            Attrs::RAM,
            Granule::Block2M,
        )
        .unwrap();
        assert_eq!(lookup(&m, root, VA).unwrap().0, 2);
        // Removing half a 2 MiB block would split it: refused, nothing changed.
        assert_eq!(
            unmap(&mut m, root, VirtAddr(VA), 1 << 20),
            Err(MapError::WouldSplitBlock(VA))
        );
        assert!(lookup(&m, root, VA).is_some());
        // Removing a whole block in the middle works and leaves the neighbours.
        assert_eq!(
            unmap(&mut m, root, VirtAddr(VA + (2 << 20)), 2 << 20),
            Ok(Unmapped {
                bytes: 2 << 20,
                min_leaf: 2 << 20
            })
        );
        assert!(lookup(&m, root, VA + (2 << 20)).is_none());
        assert!(lookup(&m, root, VA).is_some());
        assert!(lookup(&m, root, VA + (4 << 20)).is_some());
        // Remap the hole.
        map(
            &mut m,
            root,
            VirtAddr(VA + (2 << 20)),
            phys(0x4020_0000, 2 << 20),
            Attrs::RAM,
            Granule::Block2M,
        )
        .unwrap();
        assert_eq!(translate(&m, root, VA + (3 << 20)).unwrap().0, 0x4030_0000);
    }

    #[test]
    fn unmap_reports_the_smallest_leaf() {
        let (mut m, root) = FakeMem::new();
        // 4 MiB of blocks, then 8 KiB of pages after a 2 MiB hole.
        let map_at = |m: &mut FakeMem, off: u64, size: u64, g| {
            map(
                m,
                root,
                VirtAddr(VA + off),
                phys(0x4000_0000 + off, size),
                Attrs::RAM,
                g,
            )
            .unwrap()
        };
        map_at(&mut m, 0, 4 << 20, Granule::Block2M);
        map_at(&mut m, 6 << 20, 8192, Granule::Page4K);
        let blocks = Unmapped {
            bytes: 2 << 20,
            min_leaf: 2 << 20,
        };
        assert_eq!(unmap(&mut m, root, VirtAddr(VA), 2 << 20), Ok(blocks));
        // A block and a hole: only blocks were removed.
        let r = unmap(&mut m, root, VirtAddr(VA + (2 << 20)), 4 << 20);
        assert_eq!(r, Ok(blocks));
        // Nothing mapped: nothing to invalidate.
        let r = unmap(&mut m, root, VirtAddr(VA), 6 << 20);
        assert_eq!(r, Ok(Unmapped::default()));
        map_at(&mut m, 4 << 20, 2 << 20, Granule::Block2M);
        // A block and pages: the pages set the stride.
        let r = unmap(&mut m, root, VirtAddr(VA + (4 << 20)), 4 << 20);
        assert_eq!(
            r,
            Ok(Unmapped {
                bytes: (2 << 20) + 8192,
                min_leaf: 4096
            })
        );
    }

    #[test]
    fn smaller_leaves_next_to_existing_tables() {
        let (mut m, root) = FakeMem::new();
        // A page mapped and unmapped leaves its tables; a later 1 GiB map of that GiB must
        // still succeed, with 2 MiB blocks and pages where the tables are.
        map(
            &mut m,
            root,
            VirtAddr(VA + (8 << 20)),
            phys(0x4080_0000, 4096),
            Attrs::RAM,
            Granule::Page4K,
        )
        .unwrap();
        unmap(&mut m, root, VirtAddr(VA + (8 << 20)), 4096).unwrap();
        map(
            &mut m,
            root,
            VirtAddr(VA),
            phys(0x4000_0000, 1 << 30),
            Attrs::RAM,
            Granule::Block1G,
        )
        .unwrap();
        assert_eq!(lookup(&m, root, VA).unwrap().0, 2);
        assert_eq!(lookup(&m, root, VA + (8 << 20)).unwrap().0, 3);
        assert_eq!(
            translate(&m, root, VA + (8 << 20) + 8).unwrap().0,
            0x4080_0008
        );
        assert_eq!(
            translate(&m, root, VA + (1 << 30) - 8).unwrap().0,
            0x7fff_fff8
        );
    }

    #[test]
    fn overlap_and_errors() {
        let (mut m, root) = FakeMem::new();
        map(
            &mut m,
            root,
            VirtAddr(VA),
            phys(0x4000_0000, 2 << 20),
            Attrs::RAM,
            Granule::Page4K,
        )
        .unwrap();
        assert_eq!(
            map(
                &mut m,
                root,
                VirtAddr(VA + 4096),
                phys(0, 4096),
                Attrs::RAM,
                Granule::Page4K
            ),
            Err(MapError::AlreadyMapped(VA + 4096))
        );
        assert_eq!(
            map(
                &mut m,
                root,
                VirtAddr(VA + 1),
                phys(0, 4096),
                Attrs::RAM,
                Granule::Page4K
            ),
            Err(MapError::Misaligned)
        );
        // Unmap over a range with holes counts only what was mapped.
        assert_eq!(
            unmap(&mut m, root, VirtAddr(VA), 64 << 20),
            Ok(Unmapped {
                bytes: 2 << 20,
                min_leaf: 4096
            })
        );
        m.limit = m.tables.len();
        assert_eq!(
            map(
                &mut m,
                root,
                VirtAddr(VA + (1 << 39)),
                phys(0, 4096),
                Attrs::RAM,
                Granule::Page4K
            ),
            Err(MapError::OutOfTables)
        );
    }

    #[test]
    fn attrs_round_trip() {
        for a in [Attrs::RAM, Attrs::MMIO, Attrs::TEXT, Attrs::RODATA] {
            assert_eq!(Attrs::from_desc(leaf_desc(0x1000, a, 3)), a);
        }
        // Text is executable and read-only; data is never executable.
        let d = leaf_desc(0x1000, Attrs::TEXT, 3);
        assert_eq!(d & (1 << 53), 0);
        assert_ne!(leaf_desc(0x1000, Attrs::RAM, 3) & (1 << 53), 0);
    }

    #[test]
    fn migration_entries() {
        for pfn in [0, 1, 0x4_0000, 0x1234_5678, MIGRATION_MAX_PFN] {
            let d = migration_entry(pfn);
            assert_eq!(d & 1, 0, "must be invalid to the MMU");
            assert_eq!(parse_migration_entry(d), Some(pfn));
        }
        assert_eq!(parse_migration_entry(0), None);
        let valid = user_page_desc(0x4000_0000, true);
        assert_eq!(valid & 1, 1);
        assert_eq!(parse_migration_entry(valid), None);
        assert_eq!(parse_migration_entry(valid & !1), None);
        assert_ne!(migration_entry(0), 0, "distinct from an empty entry");
    }

    #[test]
    fn user_pages_and_subtables() {
        let (mut m, root) = FakeMem::new();
        let va = 0x1000_0000u64;
        assert_eq!(table_at(&m, root, va, 3), None);
        let t = l3_table(&mut m, root, va).unwrap();
        let d = user_page_desc(0x8000_1000, false);
        assert_eq!(d & DESC_NG, DESC_NG);
        assert_eq!(desc_addr(d), 0x8000_1000);
        m.table(t)[l3_index(va)].store(d, Ordering::Release);
        assert_eq!(lookup(&m, root, va), Some((3, d)));
        assert!(!Attrs::from_desc(d).writable);
        assert_eq!(table_at(&m, root, va + 4096, 3), Some(t));
        let mut n = 0;
        for_each_subtable(&m, root, &mut |_| n += 1);
        assert_eq!(n, 3, "L1, L2 and L3 below the root");
    }
}
