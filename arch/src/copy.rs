//! The page copy of migration: one 4 KiB page with 64 bytes per loop iteration, as two
//! `ldp`/`stp` pairs of 128-bit q registers. Wide accesses cut the instructions per byte
//! eightfold against a loop of 8-byte moves, which is what counts under TCG (every guest
//! instruction is emulated) and helps on hardware too.
//!
//! The q registers are ordinary caller-saved state here: FP/SIMD is enabled at EL1 by boot
//! (CPACR_EL1.FPEN), every exception vector saves and restores q0-q31 in its trap frame,
//! and the `asm!` block declares the four it uses as clobbered.

use crate::layout::PAGE_SIZE;

/// Bytes one loop iteration moves.
const STEP: u64 = 64;
const _: () = assert!(PAGE_SIZE % STEP == 0);

/// Copies the 4 KiB page at `src` to `dst`.
///
/// # Safety
/// `src` and `dst` are page-aligned, mapped, do not overlap, `src` is readable and `dst`
/// writable for 4 KiB, and nothing else writes either while the copy runs.
pub unsafe fn copy_page(dst: *mut u8, src: *const u8) {
    // SAFETY: the caller's contract covers every access: 64 iterations of 64 bytes inside
    // the two pages; only the declared registers are changed.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldp q0, q1, [{src}]",
            "ldp q2, q3, [{src}, #32]",
            "add {src}, {src}, #64",
            "stp q0, q1, [{dst}]",
            "stp q2, q3, [{dst}, #32]",
            "add {dst}, {dst}, #64",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            src = inout(reg) src => _,
            dst = inout(reg) dst => _,
            n = inout(reg) PAGE_SIZE / STEP => _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            options(nostack),
        );
    }
}
