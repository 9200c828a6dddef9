//! Broadcast TLB maintenance of the kernel's mappings: which `TLBI` instructions invalidate a
//! virtual range (the plan, plain logic), and issuing them (target only).
//!
//! Model. An invalidation of `[va, va + size)` after its entries were cleared is a short
//! list of [`Op`]s, chosen by [`plan`] from the range, the size of the smallest leaf that was
//! removed there, and whether the CPU has FEAT_TLBIRANGE:
//! - with range instructions: `TLBI RVAAE1IS` covering the range in as few operands as the
//!   encoding allows (at most 8 GiB each; a lone last page by `TLBI VAAE1IS`);
//! - without: one `TLBI VAAE1IS` per leaf, i.e. every `min_leaf` bytes (an invalidation by
//!   any address inside a block removes the whole block's entry), so a 2 MiB block costs one
//!   instruction, not 512;
//! - either way, a plan of more than [`MAX_OPS`] instructions becomes one `TLBI VMALLE1IS`
//!   (dropping every EL1 entry costs refills, but no more broadcasts).
//!
//! Every operation is the all-levels form (never the leaf-only `*ALE1IS` variants and no
//! level hint, TTL = 0): a caller that also freed table pages under the range has the
//! walk-cache entries for them invalidated by the same plan.
//!
//! Range operand (Arm ARM, TLBI RVAAE1IS, 4 KiB granule), as [`range_operand`] builds it:
//! bits [47:46] TG = 0b01 (4 KiB; TG = 0b00 is reserved and invalidates nothing), [45:44]
//! SCALE, [43:39] NUM, [38:37] TTL = 0, [36:0] BaseADDR = VA[48:12] (VA[48] selects the
//! TTBR1 half). It covers (NUM + 1) · 2^(5·SCALE + 1) pages from BaseADDR: 2 to 2^21 pages
//! (8 GiB). The VA operand of `TLBI VAAE1IS` is VA[55:12] in bits [43:0].
//!
//! Hardware part (target only): [`init`] reads ID_AA64ISAR0_EL1.TLB once on the boot CPU
//! (the kernel assumes all CPUs alike, as on QEMU `virt`); [`flush_kernel_range`] and the
//! per-ASID helpers issue the instructions between `dsb ishst` (the cleared entries reach
//! the walkers first) and `dsb ish; isb` (the invalidation is complete everywhere before the
//! caller goes on). Each CPU counts the broadcast instructions it issues ([`broadcasts`]),
//! lock-free; the kernel shows them per CPU. The boot code's one switch-time flush is not
//! counted.

use crate::layout::MAX_CPUS;
use core::sync::atomic::{AtomicU64, Ordering};

/// Base-2 log of the translation granule (4 KiB).
const PAGE_SHIFT: u32 = 12;
const PAGE: u64 = 1 << PAGE_SHIFT;
/// TG of a range operand for the 4 KiB granule.
pub const TG_4K: u64 = 0b01;
/// Largest SCALE of a range operand.
const MAX_SCALE: u32 = 3;
/// Largest NUM of a range operand.
const MAX_NUM: u64 = 31;
/// Pages one range instruction covers at most: (31 + 1) · 2^16 (8 GiB).
pub const RANGE_MAX_PAGES: u64 = range_pages(MAX_SCALE, MAX_NUM);
const _: () = assert!(RANGE_MAX_PAGES << PAGE_SHIFT == 8 << 30);

/// Plans longer than this become one [`Op::All`].
pub const MAX_OPS: usize = 64;

/// One broadcast TLB invalidation (inner shareable, EL1, all ASIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `TLBI VAAE1IS` with this operand ([`va_operand`]): every level's entries for one VA.
    Va(u64),
    /// `TLBI RVAAE1IS` with this operand ([`range_operand`]): every level's entries for a
    /// range of pages.
    Range(u64),
    /// `TLBI VMALLE1IS`: every EL1 entry.
    All,
}

/// The operand of `TLBI VAAE1IS` for `va`: VA[55:12] in bits [43:0].
pub const fn va_operand(va: u64) -> u64 {
    (va >> PAGE_SHIFT) & ((1 << 44) - 1)
}

/// Pages a range operand with `scale` and `num` covers: (num + 1) · 2^(5·scale + 1).
pub const fn range_pages(scale: u32, num: u64) -> u64 {
    (num + 1) << (5 * scale + 1)
}

/// The operand of `TLBI RVAAE1IS` for [`range_pages`]`(scale, num)` pages from the page of
/// `va` (layout in the module doc). `scale` ≤ 3, `num` ≤ 31.
pub const fn range_operand(va: u64, scale: u32, num: u64) -> u64 {
    assert!(scale <= MAX_SCALE && num <= MAX_NUM);
    (TG_4K << 46) | ((scale as u64) << 44) | (num << 39) | ((va >> PAGE_SHIFT) & ((1 << 37) - 1))
}

/// The invalidations of one range, in address order: an iterator of [`Op`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan(Steps);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Steps {
    Done,
    All,
    /// `ops` more `TLBI VAAE1IS`, from `va` on, `stride` bytes apart.
    ByVa {
        va: u64,
        stride: u64,
        ops: u64,
    },
    /// `pages` pages from `va` on, by range operands.
    Range {
        va: u64,
        pages: u64,
    },
}

/// Plans the invalidation of `[va, va + size)` (rounded out to whole pages) after leaves of
/// at least `min_leaf` bytes were removed there (a power of two; anything below 4 KiB counts
/// as 4 KiB); `has_range` says whether `TLBI RVAAE1IS` may be used. Empty for `size` 0.
pub fn plan(va: u64, size: u64, min_leaf: u64, has_range: bool) -> Plan {
    if size == 0 {
        return Plan(Steps::Done);
    }
    let start = va & !(PAGE - 1);
    let end = va.saturating_add(size).saturating_add(PAGE - 1) & !(PAGE - 1);
    let steps = if has_range {
        Steps::Range {
            va: start,
            pages: (end - start) >> PAGE_SHIFT,
        }
    } else {
        let stride = min_leaf.max(PAGE);
        debug_assert!(stride.is_power_of_two(), "leaf size {min_leaf:#x}");
        Steps::ByVa {
            va: start,
            stride,
            ops: (end - start).div_ceil(stride),
        }
    };
    let p = Plan(steps);
    // A plan is short unless the range is enormous, so counting it by walking is cheap;
    // the first check bounds the walk for ranges of many 8 GiB pieces.
    let long = match p.0 {
        Steps::ByVa { ops, .. } => ops > MAX_OPS as u64,
        Steps::Range { pages, .. } => {
            pages / RANGE_MAX_PAGES > MAX_OPS as u64 || p.clone().count() > MAX_OPS
        }
        _ => false,
    };
    if long {
        Plan(Steps::All)
    } else {
        p
    }
}

impl Iterator for Plan {
    type Item = Op;

    fn next(&mut self) -> Option<Op> {
        match &mut self.0 {
            Steps::Done => None,
            Steps::All => {
                self.0 = Steps::Done;
                Some(Op::All)
            }
            Steps::ByVa { va, stride, ops } => {
                let op = Op::Va(va_operand(*va));
                *va += *stride;
                *ops -= 1;
                if *ops == 0 {
                    self.0 = Steps::Done;
                }
                Some(op)
            }
            Steps::Range { va, pages } => {
                let (op, taken) = if *pages == 1 {
                    (Op::Va(va_operand(*va)), 1)
                } else {
                    // The largest scale that covers at least two of the pages, and as many
                    // of its units as NUM allows. Below the top scale what is left after a
                    // larger scale is under 32 units, so NUM never runs out there.
                    let scale = (0..=MAX_SCALE)
                        .rev()
                        .find(|&s| *pages >= range_pages(s, 0))
                        .expect("two or more pages");
                    let units = (*pages / range_pages(scale, 0)).min(MAX_NUM + 1);
                    let op = Op::Range(range_operand(*va, scale, units - 1));
                    (op, range_pages(scale, units - 1))
                };
                *va += taken << PAGE_SHIFT;
                *pages -= taken;
                if *pages == 0 {
                    self.0 = Steps::Done;
                }
                Some(op)
            }
        }
    }
}

/// Broadcast TLB instructions issued, by CPU index.
static ISSUED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Broadcast TLB invalidation instructions CPU `cpu` has issued since boot (0 for an index
/// beyond `MAX_CPUS`).
pub fn broadcasts(cpu: usize) -> u64 {
    ISSUED.get(cpu).map_or(0, |c| c.load(Ordering::Relaxed))
}

#[cfg(target_os = "none")]
pub use hw::*;

#[cfg(target_os = "none")]
mod hw {
    use super::{plan, Op, ISSUED};
    use aarch64_cpu::asm::barrier;
    use core::sync::atomic::{AtomicBool, Ordering};

    /// Counts `n` broadcasts issued on this CPU (slot 0 for an index beyond `MAX_CPUS`, as
    /// before the index is set at boot).
    fn count(n: u64) {
        let slot = ISSUED.get(crate::cpu::index()).unwrap_or(&ISSUED[0]);
        slot.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether `TLBI RVAAE1IS` may be used (FEAT_TLBIRANGE); set once by [`init`].
    static HAS_RANGE: AtomicBool = AtomicBool::new(false);

    /// Reads whether this CPU implements FEAT_TLBIRANGE: ID_AA64ISAR0_EL1.TLB, bits [59:56],
    /// is 0b0010 (outer-shareable and range TLBIs) or above. Called once, on the boot CPU,
    /// before the first flush.
    pub fn init() {
        let isar0: u64;
        // SAFETY: reading an ID register has no side effects.
        unsafe {
            core::arch::asm!("mrs {}, ID_AA64ISAR0_EL1", out(reg) isar0, options(nomem, nostack))
        };
        HAS_RANGE.store((isar0 >> 56) & 0xf >= 0b0010, Ordering::Relaxed);
    }

    /// Whether flushes use range instructions (FEAT_TLBIRANGE, as [`init`] found).
    pub fn has_range() -> bool {
        HAS_RANGE.load(Ordering::Relaxed)
    }

    fn issue(op: Op) {
        match op {
            // SAFETY: broadcast invalidation of one VA's EL1 entries; no memory effects,
            // dropping entries only costs refills.
            Op::Va(x) => unsafe {
                core::arch::asm!("tlbi vaae1is, {}", in(reg) x, options(nostack))
            },
            // TLBI RVAAE1IS is SYS #0, C8, C2, #3 (written as `sys` so no assembler
            // extension is needed). Only issued when `init` found FEAT_TLBIRANGE.
            // SAFETY: as above, for a range of VAs.
            Op::Range(x) => unsafe {
                core::arch::asm!("sys #0, c8, c2, #3, {}", in(reg) x, options(nostack))
            },
            // SAFETY: as above, for every EL1 entry.
            Op::All => unsafe { core::arch::asm!("tlbi vmalle1is", options(nostack)) },
        }
    }

    /// Runs `ops` on every CPU's TLB: `dsb ishst` first (entries cleared before reach the
    /// walkers), `dsb ish; isb` after (complete everywhere before the caller goes on).
    fn run(ops: impl Iterator<Item = Op>) {
        barrier::dsb(barrier::ISHST);
        let mut n = 0;
        for op in ops {
            issue(op);
            n += 1;
        }
        barrier::dsb(barrier::ISH);
        crate::cpu::isb();
        count(n);
    }

    /// Invalidates `[va, va + size)` of the kernel's (global) mappings on every CPU, where
    /// the smallest leaf removed was `min_leaf` bytes (see [`plan`]).
    pub fn flush_kernel_range(va: u64, size: u64, min_leaf: u64) {
        run(plan(va, size, min_leaf, has_range()));
    }

    /// Invalidates every EL1 entry on every CPU, cached table walks (non-leaf entries)
    /// included (`TLBI VMALLE1IS`): what unlinking a table page needs before the page is
    /// reused.
    pub fn flush_kernel_walks() {
        run(core::iter::once(Op::All));
    }

    /// Invalidates the page at `va` for `asid` on every CPU (`TLBI VAE1IS`, all levels).
    pub fn flush_asid_page(asid: u16, va: u64) {
        let arg = ((asid as u64) << 48) | super::va_operand(va);
        barrier::dsb(barrier::ISHST);
        // SAFETY: TLB invalidation by VA and ASID, broadcast; no memory effects.
        unsafe { core::arch::asm!("tlbi vae1is, {}", in(reg) arg, options(nostack)) };
        barrier::dsb(barrier::ISH);
        crate::cpu::isb();
        count(1);
    }

    /// Invalidates every entry of `asid` on every CPU (`TLBI ASIDE1IS`).
    pub fn flush_asid(asid: u16) {
        barrier::dsb(barrier::ISHST);
        // SAFETY: TLB invalidation by ASID, broadcast; no memory effects.
        unsafe {
            core::arch::asm!("tlbi aside1is, {}", in(reg) (asid as u64) << 48, options(nostack))
        };
        barrier::dsb(barrier::ISH);
        crate::cpu::isb();
        count(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VA: u64 = 0xffff_0000_4020_0000;
    const K4: u64 = 4096;
    const M2: u64 = 2 << 20;
    const G8: u64 = 8 << 30;

    fn ops(va: u64, size: u64, leaf: u64, range: bool) -> Vec<Op> {
        plan(va, size, leaf, range).collect()
    }

    /// The pages a range plan covers, as (first page va, pages) per op.
    fn covered(plan: &[Op]) -> Vec<(u64, u64)> {
        plan.iter()
            .map(|op| match *op {
                // VA[55:12]; VA[63:56] copy VA[55] (the TTBR1 half here).
                Op::Va(x) => (x << 12 | 0xff00_0000_0000_0000, 1),
                Op::Range(x) => {
                    assert_eq!(x >> 46 & 3, TG_4K, "TG must be 4 KiB in {x:#x}");
                    assert_eq!(x >> 37 & 3, 0, "no level hint in {x:#x}");
                    assert_eq!(x >> 48, 0, "no ASID in {x:#x}");
                    let base = x & ((1 << 37) - 1);
                    // BaseADDR is VA[48:12]; VA[63:49] copy VA[48] (the TTBR1 half here).
                    let va = (base | (0xffff_ffe0_0000_0000 * (base >> 36))) << 12;
                    let pages = range_pages((x >> 44 & 3) as u32, x >> 39 & 31);
                    (va, pages)
                }
                Op::All => panic!("unexpected full flush"),
            })
            .collect()
    }

    #[test]
    fn operands_bit_by_bit() {
        // VA[55:12] of 0xffff_0000_4020_0000: VA[55:48] = 0xff in bits [43:36], VA[47:12] =
        // 0x0_0004_0200 in bits [35:0].
        assert_eq!(va_operand(VA), 0xff0_0004_0200);
        // 2 MiB = 512 pages = (7 + 1) · 2^(5·1 + 1): TG 01, SCALE 01, NUM 00111, TTL 00,
        // BaseADDR = VA[48:12] = 1_0000_0000_0000_0100_0000_0010_0000_0000.
        assert_eq!(
            range_operand(VA, 1, 7),
            0b01 << 46 | 0b01 << 44 | 0b00111 << 39 | 0x10_0004_0200
        );
        assert_eq!(range_operand(VA, 1, 7), 0x5390_0004_0200);
        // The largest operand: 8 GiB, SCALE 3, NUM 31.
        assert_eq!(
            range_operand(VA, 3, 31),
            0b01 << 46 | 0b11 << 44 | 0b11111 << 39 | 0x10_0004_0200
        );
        assert_eq!(range_pages(0, 0), 2);
        assert_eq!(range_pages(3, 31), 1 << 21);
        // A TTBR0 address has VA[48] = 0.
        assert_eq!(range_operand(0x1000_0000, 0, 0), 1 << 46 | 0x1_0000);
    }

    #[test]
    fn one_block_is_one_op_either_way() {
        assert_eq!(ops(VA, M2, M2, false), [Op::Va(va_operand(VA))]);
        assert_eq!(ops(VA, M2, M2, true), [Op::Range(range_operand(VA, 1, 7))]);
    }

    #[test]
    fn blocks_step_by_block_pages_by_page() {
        let blocks = ops(VA, 8 * M2, M2, false);
        let want: Vec<Op> = (0..8).map(|i| Op::Va(va_operand(VA + i * M2))).collect();
        assert_eq!(blocks, want);
        let pages = ops(VA, 16 * K4, K4, false);
        let want: Vec<Op> = (0..16).map(|i| Op::Va(va_operand(VA + i * K4))).collect();
        assert_eq!(pages, want);
        // A leaf size below a page counts as a page.
        assert_eq!(ops(VA, 2 * K4, 0, false).len(), 2);
        // Blocks after a hole that starts off the block boundary: one op per 2 MiB window
        // from the start still reaches every block.
        let v = ops(VA - K4, M2 + K4, M2, false);
        assert_eq!(
            v,
            [
                Op::Va(va_operand(VA - K4)),
                Op::Va(va_operand(VA - K4 + M2))
            ]
        );
    }

    #[test]
    fn single_page() {
        assert_eq!(ops(VA, K4, K4, true), [Op::Va(va_operand(VA))]);
        assert_eq!(ops(VA, K4, K4, false), [Op::Va(va_operand(VA))]);
        assert_eq!(ops(VA, 0, K4, true), []);
        assert_eq!(ops(VA, 0, K4, false), []);
    }

    #[test]
    fn unaligned_rounds_out_to_pages() {
        // 0x1000 bytes from mid-page touch two pages.
        let v = ops(VA + 0x800, K4, K4, true);
        assert_eq!(v, [Op::Range(range_operand(VA, 0, 0))]);
        assert_eq!(covered(&v), [(VA, 2)]);
        let v = ops(VA + 0x800, K4, K4, false);
        assert_eq!(v, [Op::Va(va_operand(VA)), Op::Va(va_operand(VA + K4))]);
        assert_eq!(ops(VA + 1, 1, K4, true), [Op::Va(va_operand(VA))]);
    }

    #[test]
    fn exactly_and_above_8_gib() {
        assert_eq!(ops(VA, G8, M2, true), [Op::Range(range_operand(VA, 3, 31))]);
        assert_eq!(
            ops(VA, G8 + K4, M2, true),
            [
                Op::Range(range_operand(VA, 3, 31)),
                Op::Va(va_operand(VA + G8))
            ]
        );
        // 8 GiB + 2 MiB + 12 KiB: 2^21 pages, then 512 = 8 · 2^6, then 3 = 2 + 1.
        let v = ops(VA, G8 + M2 + 3 * K4, M2, true);
        assert_eq!(
            v,
            [
                Op::Range(range_operand(VA, 3, 31)),
                Op::Range(range_operand(VA + G8, 1, 7)),
                Op::Range(range_operand(VA + G8 + M2, 0, 0)),
                Op::Va(va_operand(VA + G8 + M2 + 2 * K4)),
            ]
        );
        // 20 GiB: two full operands and 4 GiB = 16 · 2^16 pages.
        assert_eq!(
            ops(VA, 20 << 30, M2, true),
            [
                Op::Range(range_operand(VA, 3, 31)),
                Op::Range(range_operand(VA + G8, 3, 31)),
                Op::Range(range_operand(VA + 2 * G8, 3, 15)),
            ]
        );
    }

    #[test]
    fn range_plans_tile_the_range_exactly() {
        // Every page count up to 3000 and a spread of larger ones, at a few offsets: the
        // ops cover the pages in order, each once, within the bound on their number.
        let big = (0..40u64).map(|i| (i * 0x9e37_79b9) % (5 * RANGE_MAX_PAGES) + 1);
        for pages in (1..3000).chain(big) {
            for off in [0, K4, 7 * K4, M2 - K4] {
                let va = VA + off;
                let v = ops(va, pages * K4, K4, true);
                let mut next = va;
                for (first, n) in covered(&v) {
                    assert_eq!(first, next, "{pages} pages: gap or overlap in {v:x?}");
                    next += n * K4;
                }
                assert_eq!(next, va + pages * K4, "{pages} pages: {v:x?}");
                // Full 8 GiB pieces, at most one op per scale for the rest, a last page.
                let bound = pages / RANGE_MAX_PAGES + 5;
                assert!(v.len() as u64 <= bound, "{pages} pages: {} ops", v.len());
            }
        }
    }

    #[test]
    fn long_plans_become_one_full_flush() {
        // Without range instructions: MAX_OPS blocks still by VA, one more is a full flush.
        let n = MAX_OPS as u64;
        assert_eq!(ops(VA, n * M2, M2, false).len(), MAX_OPS);
        assert_eq!(ops(VA, (n + 1) * M2, M2, false), [Op::All]);
        assert_eq!(ops(VA, n * K4, K4, false).len(), MAX_OPS);
        assert_eq!(ops(VA, n * K4 + 1, K4, false), [Op::All]);
        // 2 MiB of pages is 512 ops: a full flush.
        assert_eq!(ops(VA, M2, K4, false), [Op::All]);
        // With them, only more than MAX_OPS pieces of 8 GiB (never on a real range) do.
        assert_eq!(ops(VA, n * G8, K4, true).len(), MAX_OPS);
        assert_eq!(ops(VA, (n + 1) * G8, K4, true), [Op::All]);
        assert_eq!(ops(VA, 1 << 40, K4, true), [Op::All]);
    }
}
