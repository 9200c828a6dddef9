//! Exception vectors, the trap frame save/restore, and the exception-fixup table.
//!
//! Every vector saves a full [`TrapFrame`] (x0-x30, SP, ELR, SPSR, FPSR/FPCR, q0-q31) on the
//! current stack and calls Rust:
//! - synchronous exceptions go to [`handle_sync`]: first the fixup table (a chosen kernel
//!   instruction that may fault, like [`probe_read_u64`], resumes at its fixup address), then
//!   the kernel's sync hook (e.g. migration faults), else a decoded dump and a panic. The
//!   frame is on the interrupted thread's own stack, so the sync hook may block (switch to
//!   other threads) and return true to retry the faulting instruction;
//! - IRQs go to the kernel's IRQ hook (GIC acknowledge, dispatch, EOI, then possibly a
//!   preemptive thread switch before the frame is restored);
//! - everything else (FIQ, SError, exceptions from SP0 or lower ELs for now) is unexpected:
//!   decoded dump, then panic.
//!
//! The fixup table (`__ex_table` section, bounded by `__ex_table_start/end` in `linker.ld`)
//! holds pairs (faulting instruction address, fixup address). Only kernel-chosen instructions
//! are in it; a fault anywhere else is a bug and panics.

use crate::esr::{
    Dump, Esr, TrapFrame, VectorKind, FRAME_ELR, FRAME_FPSR, FRAME_Q, FRAME_SIZE, FRAME_SP,
};
use aarch64_cpu::registers::{Readable, ESR_EL1, FAR_EL1};
use core::arch::global_asm;
use core::fmt;

global_asm!(
    r#"
// The register layout of the frame, once for saving and once for restoring: `op` is
// `stp` or `ldp`, `ldst` is `str` or `ldr`.
.macro FRAME_GPRS op, ldst
    \op     x0, x1, [sp, #0]
    \op     x2, x3, [sp, #16]
    \op     x4, x5, [sp, #32]
    \op     x6, x7, [sp, #48]
    \op     x8, x9, [sp, #64]
    \op     x10, x11, [sp, #80]
    \op     x12, x13, [sp, #96]
    \op     x14, x15, [sp, #112]
    \op     x16, x17, [sp, #128]
    \op     x18, x19, [sp, #144]
    \op     x20, x21, [sp, #160]
    \op     x22, x23, [sp, #176]
    \op     x24, x25, [sp, #192]
    \op     x26, x27, [sp, #208]
    \op     x28, x29, [sp, #224]
    \ldst   x30, [sp, #240]
.endm

// q0-q31 at x0 (the frame's FP area).
.macro FRAME_FPRS op
    \op     q0, q1, [x0, #0]
    \op     q2, q3, [x0, #32]
    \op     q4, q5, [x0, #64]
    \op     q6, q7, [x0, #96]
    \op     q8, q9, [x0, #128]
    \op     q10, q11, [x0, #160]
    \op     q12, q13, [x0, #192]
    \op     q14, q15, [x0, #224]
    \op     q16, q17, [x0, #256]
    \op     q18, q19, [x0, #288]
    \op     q20, q21, [x0, #320]
    \op     q22, q23, [x0, #352]
    \op     q24, q25, [x0, #384]
    \op     q26, q27, [x0, #416]
    \op     q28, q29, [x0, #448]
    \op     q30, q31, [x0, #480]
.endm

.macro SAVE_FRAME
    sub     sp, sp, #{size}
    FRAME_GPRS stp, str
    add     x0, sp, #{size}
    str     x0, [sp, #{sp_off}]
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    stp     x0, x1, [sp, #{elr_off}]
    mrs     x0, fpsr
    mrs     x1, fpcr
    stp     x0, x1, [sp, #{fpsr_off}]
    add     x0, sp, #{q_off}
    FRAME_FPRS stp
.endm

.macro STUB name, handler, kind
\name:
    SAVE_FRAME
    mov     x0, sp
    mov     x1, #\kind
    bl      \handler
    b       __restore_frame
.endm

.macro VEC target
.balign 0x80
    b       \target
.endm

.section .text.vectors, "ax"
.balign 0x800
.global __exception_vectors
__exception_vectors:
    // Current EL with SP_EL0: never used by the kernel.
    VEC     __v_unexpected_sync
    VEC     __v_unexpected_irq
    VEC     __v_unexpected_fiq
    VEC     __v_unexpected_serror
    // Current EL with SP_ELx: the kernel.
    VEC     __v_sync
    VEC     __v_irq
    VEC     __v_unexpected_fiq
    VEC     __v_unexpected_serror
    // Lower EL, AArch64.
    VEC     __v_unexpected_sync
    VEC     __v_unexpected_irq
    VEC     __v_unexpected_fiq
    VEC     __v_unexpected_serror
    // Lower EL, AArch32.
    VEC     __v_unexpected_sync
    VEC     __v_unexpected_irq
    VEC     __v_unexpected_fiq
    VEC     __v_unexpected_serror

.balign 0x80
    STUB    __v_sync, __exc_sync, 0
    STUB    __v_irq, __exc_irq, 1
    STUB    __v_unexpected_sync, __exc_unexpected, 0
    STUB    __v_unexpected_irq, __exc_unexpected, 1
    STUB    __v_unexpected_fiq, __exc_unexpected, 2
    STUB    __v_unexpected_serror, __exc_unexpected, 3

__restore_frame:
    add     x0, sp, #{q_off}
    FRAME_FPRS ldp
    ldp     x0, x1, [sp, #{fpsr_off}]
    msr     fpsr, x0
    msr     fpcr, x1
    ldp     x0, x1, [sp, #{elr_off}]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    FRAME_GPRS ldp, ldr
    add     sp, sp, #{size}
    eret

// Reads 8 bytes at x0. Returns (value, 0) in (x0, x1), or (0, 1) if the load faulted.
.section .text, "ax"
.global __probe_read_u64
__probe_read_u64:
1:  ldr     x0, [x0]
    mov     x1, #0
    ret
2:  mov     x0, #0
    mov     x1, #1
    ret
.pushsection __ex_table, "a"
    .quad   1b, 2b
.popsection
"#,
    size = const FRAME_SIZE,
    sp_off = const FRAME_SP,
    elr_off = const FRAME_ELR,
    fpsr_off = const FRAME_FPSR,
    q_off = const FRAME_Q,
);

#[repr(C)]
struct ProbeResult {
    value: u64,
    faulted: u64,
}

unsafe extern "C" {
    fn __probe_read_u64(addr: u64) -> ProbeResult;
    static __ex_table_start: [u64; 0];
    static __ex_table_end: [u64; 0];
}

/// Reads 8 bytes at virtual address `va`, returning `None` instead of crashing if the read
/// faults (unmapped or no access). `va` must be 8-byte aligned.
pub fn probe_read_u64(va: u64) -> Option<u64> {
    if va % 8 != 0 {
        return None;
    }
    // SAFETY: `__probe_read_u64` performs one load whose fault is recovered through the
    // fixup table; it has no other side effects. Reading MMIO through it could have side
    // effects, which is why the kernel only passes linear-map RAM addresses.
    let r = unsafe { __probe_read_u64(va) };
    (r.faulted == 0).then_some(r.value)
}

/// Fixup address for a faulting instruction at `pc`, if the table has one.
fn find_fixup(pc: u64) -> Option<u64> {
    // SAFETY: the linker script places `__ex_table` between these two symbols in rodata,
    // as 8-byte aligned (insn, fixup) u64 pairs; the range is immutable after link.
    let table: &[u64] = unsafe {
        let start = __ex_table_start.as_ptr();
        let end = __ex_table_end.as_ptr();
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    };
    table.chunks_exact(2).find(|e| e[0] == pc).map(|e| e[1])
}

/// Hook for synchronous exceptions the fixup table does not cover. Returns true when it
/// handled the exception (the frame is then restored and execution resumes).
pub type SyncHook = fn(&mut TrapFrame, Esr, u64) -> bool;
/// Hook for IRQs.
pub type IrqHook = fn(&mut TrapFrame);
/// Hook that prints one line of an exception dump (must work with the console lock held).
pub type DumpPrinter = fn(fmt::Arguments);

// Each hook is installed once at boot (a later call is ignored) and read lock-free by the
// vectors; before it is installed the vector behaves as if the hook declined.
static SYNC_HOOK: spin::Once<SyncHook> = spin::Once::new();
static IRQ_HOOK: spin::Once<IrqHook> = spin::Once::new();
static DUMP_PRINTER: spin::Once<DumpPrinter> = spin::Once::new();

/// Installs the synchronous-exception hook (once; later calls are ignored).
pub fn set_sync_hook(h: SyncHook) {
    SYNC_HOOK.call_once(|| h);
}
/// Installs the IRQ hook (once; later calls are ignored).
pub fn set_irq_hook(h: IrqHook) {
    IRQ_HOOK.call_once(|| h);
}
/// Installs the dump printer (once; later calls are ignored).
pub fn set_dump_printer(h: DumpPrinter) {
    DUMP_PRINTER.call_once(|| h);
}

fn dump_and_panic(kind: VectorKind, frame: &TrapFrame, esr: Esr, far: u64) -> ! {
    if let Some(print) = DUMP_PRINTER.get() {
        let dump = Dump {
            kind,
            esr,
            far,
            frame,
        };
        for i in 0..Dump::LINES {
            print(format_args!("{}", LineOf(&dump, i)));
        }
    }
    panic!(
        "unhandled {:?} exception: {} at ELR=0x{:x} FAR=0x{:x}",
        kind,
        esr.class_name(),
        frame.elr,
        far
    );
}

struct LineOf<'a>(&'a Dump<'a>, usize);
impl fmt::Display for LineOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.line(self.1, f)
    }
}

#[no_mangle]
extern "C" fn __exc_sync(frame: &mut TrapFrame, _kind: u64) {
    let esr = Esr(ESR_EL1.get());
    let far = FAR_EL1.get();
    if esr.is_data_abort_same_el() {
        if let Some(fixup) = find_fixup(frame.elr) {
            frame.elr = fixup;
            return;
        }
    }
    if SYNC_HOOK.get().is_some_and(|hook| hook(frame, esr, far)) {
        return;
    }
    dump_and_panic(VectorKind::Sync, frame, esr, far);
}

#[no_mangle]
extern "C" fn __exc_irq(frame: &mut TrapFrame, _kind: u64) {
    if let Some(hook) = IRQ_HOOK.get() {
        hook(frame);
    }
}

#[no_mangle]
extern "C" fn __exc_unexpected(frame: &mut TrapFrame, kind: u64) {
    dump_and_panic(
        VectorKind::from_index(kind),
        frame,
        Esr(ESR_EL1.get()),
        FAR_EL1.get(),
    );
}
