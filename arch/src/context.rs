//! Kernel-thread context switch (AAPCS64 callee-saved state) and the entry trampoline of a
//! new thread.
//!
//! Model: a thread that is not running is stopped inside a call to [`switch`] (or has never
//! run). [`switch`] is an ordinary function call, so the compiler already treats x0-x18, x30
//! and the upper halves of v8-v15 as clobbered; only the callee-saved set has to survive:
//! x19-x29, lr (x30, where the thread resumes), sp and d8-d15. Everything else a preempted
//! thread had live is in the [`crate::esr::TrapFrame`] the IRQ vector saved on its own stack
//! before the scheduler was entered.
//!
//! A new thread's [`Context`] (see [`Context::new_thread`]) resumes in `__thread_entry`, which
//! 1. calls `finish(x20)` with IRQs still masked (the scheduler releases its lock there),
//! 2. unmasks IRQs, and
//! 3. calls `entry(arg)`, which must never return (the kernel's entry ends the thread).
//!
//! Interrupt state is not part of the context: the caller of [`switch`] masks IRQs, and
//! whoever is resumed restores the interrupt state it saved itself.

use core::arch::global_asm;

/// Callee-saved registers of a stopped thread. Layout shared with the assembly below.
#[repr(C)]
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// x19..=x29 (x29 is the frame pointer).
    pub x: [u64; 11],
    /// x30: where [`switch`] returns to when this context is resumed.
    pub lr: u64,
    /// Stack pointer.
    pub sp: u64,
    /// d8..=d15 (the low 64 bits of v8-v15).
    pub d: [u64; 8],
}

const CTX_LR: usize = 88;
const CTX_SP: usize = 96;
const CTX_D: usize = 104;
const _: () = assert!(core::mem::offset_of!(Context, lr) == CTX_LR);
const _: () = assert!(core::mem::offset_of!(Context, sp) == CTX_SP);
const _: () = assert!(core::mem::offset_of!(Context, d) == CTX_D);
const _: () = assert!(core::mem::size_of::<Context>() == 168);

/// Called first by a new thread, IRQs masked: the scheduler finishes the switch.
pub type ThreadFinish = extern "C" fn();
/// A new thread's body: gets the `arg` given to [`Context::new_thread`]; never returns.
pub type ThreadEntry = extern "C" fn(arg: usize) -> !;

global_asm!(
    r#"
// The register layout of a Context at `ctx`, once for saving and once for loading: `op` is
// `stp` or `ldp`. x19-x30 first, d8-d15 at CTX_D (sp sits between and is moved by hand).
.macro CTX_GPRS op, ctx
    \op     x19, x20, [\ctx, #0]
    \op     x21, x22, [\ctx, #16]
    \op     x23, x24, [\ctx, #32]
    \op     x25, x26, [\ctx, #48]
    \op     x27, x28, [\ctx, #64]
    \op     x29, x30, [\ctx, #80]
.endm

.macro CTX_FPRS op, ctx
    \op     d8, d9, [\ctx, #{d}]
    \op     d10, d11, [\ctx, #{d} + 16]
    \op     d12, d13, [\ctx, #{d} + 32]
    \op     d14, d15, [\ctx, #{d} + 48]
.endm

.section .text, "ax"
// x0 = *mut Context (save), x1 = *const Context (load).
.global __context_switch
__context_switch:
    CTX_GPRS stp, x0
    mov     x9, sp
    str     x9, [x0, #{sp}]
    CTX_FPRS stp, x0

    CTX_GPRS ldp, x1
    ldr     x9, [x1, #{sp}]
    mov     sp, x9
    CTX_FPRS ldp, x1
    ret

// A new thread: x19 = finish, x20 = entry, x21 = arg (set by Context::new_thread).
.global __thread_entry
__thread_entry:
    mov     x29, #0                 // end of the frame-pointer chain
    blr     x19
    msr     daifclr, #2
    mov     x0, x21
    blr     x20
1:  brk     #0x7e1                  // entry returned: a bug
    b       1b
"#,
    sp = const CTX_SP,
    d = const CTX_D,
);

unsafe extern "C" {
    fn __context_switch(prev: *mut Context, next: *const Context);
    fn __thread_entry();
}

impl Context {
    /// The context of a thread that has not run yet: it starts in the entry trampoline on
    /// the stack whose top (exclusive, 16-byte aligned) is `stack_top`.
    pub fn new_thread(
        stack_top: u64,
        finish: ThreadFinish,
        entry: ThreadEntry,
        arg: usize,
    ) -> Context {
        let mut c = Context::default();
        c.x[0] = finish as *const () as u64;
        c.x[1] = entry as *const () as u64;
        c.x[2] = arg as u64;
        c.lr = __thread_entry as *const () as u64;
        c.sp = stack_top & !15;
        c
    }
}

/// Saves the current thread's callee-saved state in `prev` and resumes `next`. Returns when
/// some CPU later switches back to `prev`.
///
/// # Safety
/// - IRQs must be masked on this CPU (an IRQ between the save and the load would run on a
///   half-switched stack).
/// - `prev` must be writable and stay alive until the thread is resumed; `next` must hold a
///   context saved by `switch` or made by [`Context::new_thread`] whose stack is alive, and
///   no other CPU may be running or resuming `next`.
pub unsafe fn switch(prev: *mut Context, next: *const Context) {
    // SAFETY: the caller upholds the contract above; the assembly saves exactly the
    // callee-saved registers the AAPCS64 requires a call to preserve.
    unsafe { __context_switch(prev, next) }
}
