//! Entry points: the arm64 Image header, the primary CPU's entry, secondary CPUs' entry
//! (PSCI CPU_ON), EL2 -> EL1, FP/SIMD enable, and the first page tables.
//!
//! Boot contract (arm64 Image protocol): the loader puts the image at a 2 MiB aligned RAM
//! base + `TEXT_OFFSET` and jumps to `_start` with the MMU off and the DTB's physical address
//! in x0. QEMU enters at EL1, or at EL2 with `virtualization=on`.
//!
//! Primary CPU, before any Rust runs (MMU off, so addresses from `adrp` are physical):
//! 1. `el2_to_el1`: from EL2, let EL1 run AArch64 with the timers, FP and (GICv3) the
//!    system-register CPU interface, then `eret` to EL1; then enable FP/SIMD (CPACR_EL1),
//!    because the Rust target uses NEON freely.
//! 2. Zero `.bss` (page tables and Rust statics live there).
//! 3. Build two boot tables: TTBR0 identity-maps the 1 GiB containing the image (needed for
//!    the instant the MMU turns on, and later for the TTBR1 switch trampoline and for
//!    secondary CPUs); TTBR1 maps `KIMAGE_VA` to the image with 2 MiB RWX blocks.
//! 4. Enable the MMU, jump to the image's virtual address, set the stack and VBAR_EL1, and
//!    call `kernel_main(dtb_pa, kimage_pa)` (defined by the kernel binary).
//!
//! The kernel then builds the final TTBR1 tables (W^X image, linear map) and switches to them
//! with [`crate::mmu`]. Secondary CPUs enter at `secondary_entry` with their CPU index as the
//! PSCI context id, enable the MMU with the final tables (`__secondary_ttbr1`), and call
//! `secondary_main(cpu_index)`.

use crate::layout::{MAX_CPUS, STACK_SIZE};
use crate::pgtable::MAIR_VALUE;
use core::arch::global_asm;

/// TCR_EL1 without IPS: T0SZ = T1SZ = 16 (48-bit VA), 4 KiB granules (TG0 = 0b00,
/// TG1 = 0b10), walks inner-shareable write-back write-allocate.
pub const TCR_BASE: u64 = 16
    | (1 << 8)
    | (1 << 10)
    | (3 << 12)
    | (16 << 16)
    | (1 << 24)
    | (1 << 26)
    | (3 << 28)
    | (2 << 30);
/// TCR_EL1.EPD0: no TTBR0 walks (set once a CPU no longer needs the identity map).
pub const TCR_EPD0: u64 = 1 << 7;
/// SCTLR_EL1: RES1 bits, M (MMU), C (data cache), SA (SP alignment check), I (icache).
pub const SCTLR_VALUE: u64 = 0x30d0_0800 | 1 | (1 << 2) | (1 << 3) | (1 << 12);
/// Leaf attributes of the boot blocks: valid block, Normal WB (MAIR index 1), inner
/// shareable, access flag. Executable and writable (only until the final tables).
const BOOT_BLOCK_ATTRS: u64 = 0b01 | (1 << 2) | (3 << 8) | (1 << 10);

global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0x80000                 // text_offset
    .quad   __image_size            // image_size (includes .bss)
    .quad   0xa                     // flags: LE, 4 KiB pages, anywhere in RAM
    .quad   0, 0, 0                 // res2-res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

.section .text.boot, "ax"
primary_entry:
    mov     x19, x0                 // DTB physical address
    bl      el2_to_el1
    adrp    x20, _start
    sub     x20, x20, #0x80000      // physical address that KIMAGE_VA maps

    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
1:  cmp     x0, x1
    b.hs    2f
    stp     xzr, xzr, [x0], #16
    b       1b
2:
    mov     x0, x20
    bl      build_boot_tables
    adrp    x0, __boot_ttbr1_l0
    bl      enable_mmu
    ldr     x0, =primary_high
    br      x0

primary_high:
    ldr     x0, =__cpu_stacks
    mov     x1, #{stack_size}
    add     x0, x0, x1
    mov     sp, x0
    ldr     x0, =__exception_vectors
    msr     vbar_el1, x0
    isb
    mov     x0, x19
    mov     x1, x20
    bl      kernel_main
3:  wfe
    b       3b

// x0 = context id = CPU index.
.global __secondary_entry
__secondary_entry:
    mov     x19, x0
    bl      el2_to_el1
    adrp    x0, __secondary_ttbr1
    ldr     x0, [x0, :lo12:__secondary_ttbr1]
    bl      enable_mmu
    ldr     x0, =secondary_high
    br      x0

secondary_high:
    ldr     x0, =__cpu_stacks
    mov     x1, #{stack_size}
    add     x2, x19, #1
    madd    x0, x1, x2, x0          // top of this CPU's stack
    mov     sp, x0
    ldr     x0, =__exception_vectors
    msr     vbar_el1, x0
    isb
    mov     x0, x19
    bl      secondary_main
4:  wfe
    b       4b

// Leaves EL2 for EL1 (if entered at EL2) and enables FP/SIMD. Uses x9 only; no stack.
el2_to_el1:
    mrs     x9, CurrentEL
    lsr     x9, x9, #2
    cmp     x9, #2
    b.ne    1f
    mov     x9, #(1 << 31)          // HCR_EL2.RW: EL1 is AArch64; nothing trapped
    msr     hcr_el2, x9
    mov     x9, #3                  // CNTHCTL_EL2.EL1PCTEN | EL1PCEN
    msr     cnthctl_el2, x9
    msr     cntvoff_el2, xzr
    mov     x9, #0x33ff             // CPTR_EL2: RES1 bits, TFP = 0 (no FP trap)
    msr     cptr_el2, x9
    msr     vttbr_el2, xzr
    mrs     x9, midr_el1
    msr     vpidr_el2, x9
    mrs     x9, mpidr_el1
    msr     vmpidr_el2, x9
    mrs     x9, id_aa64pfr0_el1     // GIC system registers implemented?
    ubfx    x9, x9, #24, #4
    cbz     x9, 2f
    mrs     x9, S3_4_C12_C9_5       // ICC_SRE_EL2
    orr     x9, x9, #0x1            // SRE
    orr     x9, x9, #0x8            // Enable: EL1 may use ICC_SRE_EL1
    msr     S3_4_C12_C9_5, x9
    isb
2:  mov     x9, #0x3c5              // SPSR: EL1h, DAIF masked
    msr     spsr_el2, x9
    adr     x9, 1f
    msr     elr_el2, x9
    eret
1:  mov     x9, #(3 << 20)          // CPACR_EL1.FPEN: no FP/SIMD trap at EL1/EL0
    msr     cpacr_el1, x9
    isb
    ret

// x0 = physical base that KIMAGE_VA maps. No stack.
build_boot_tables:
    ldr     x5, ={block_attrs}
    // TTBR0: identity map of the 1 GiB around the image.
    adrp    x1, __boot_idmap_l0
    adrp    x2, __boot_idmap_l1
    lsr     x3, x0, #39
    and     x3, x3, #511
    orr     x4, x2, #3
    str     x4, [x1, x3, lsl #3]
    lsr     x3, x0, #30
    and     x3, x3, #511
    lsr     x4, x0, #30
    lsl     x4, x4, #30
    orr     x4, x4, x5
    str     x4, [x2, x3, lsl #3]
    // TTBR1: KIMAGE_VA (L0 index 511, L1 index 510) -> image, 2 MiB blocks.
    adrp    x1, __boot_ttbr1_l0
    adrp    x2, __boot_ttbr1_l1
    adrp    x3, __boot_ttbr1_l2
    orr     x4, x2, #3
    str     x4, [x1, #(511 * 8)]
    orr     x4, x3, #3
    str     x4, [x2, #(510 * 8)]
    ldr     x6, =__kernel_end
    ldr     x7, ={kimage_va}
    sub     x6, x6, x7
    ldr     x7, =0x1fffff
    add     x6, x6, x7
    lsr     x6, x6, #21             // number of 2 MiB blocks
    mov     x7, #0
    orr     x8, x0, x5
3:  str     x8, [x3, x7, lsl #3]
    add     x8, x8, #0x200000
    add     x7, x7, #1
    cmp     x7, x6
    b.lo    3b
    dsb     sy
    ret

// x0 = TTBR1 value. Identity TTBR0. No stack.
enable_mmu:
    ldr     x1, ={mair}
    msr     mair_el1, x1
    mrs     x2, id_aa64mmfr0_el1
    and     x2, x2, #0xf            // PARange
    mov     x3, #5                  // cap at 48 bits (no 52-bit OA with 4 KiB and DS = 0)
    cmp     x2, x3
    csel    x2, x2, x3, ls
    ldr     x1, ={tcr}
    orr     x1, x1, x2, lsl #32     // IPS
    msr     tcr_el1, x1
    adrp    x1, __boot_idmap_l0
    msr     ttbr0_el1, x1
    msr     ttbr1_el1, x0
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x1, ={sctlr}
    msr     sctlr_el1, x1
    isb
    ic      iallu
    dsb     nsh
    isb
    ret

// Switches TTBR1 to x0. Called through its identity-mapped (physical) address so that
// nothing it executes is translated by TTBR1 while the tables change. Leaf, no stack.
.global __switch_ttbr1
__switch_ttbr1:
    dsb     ishst
    msr     ttbr1_el1, x0
    isb
    tlbi    vmalle1is
    dsb     ish
    isb
    ret

.section .bss.boot_tables, "aw", %nobits
.balign 4096
.global __boot_idmap_l0
__boot_idmap_l0:    .space 4096
__boot_idmap_l1:    .space 4096
__boot_ttbr1_l0:    .space 4096
__boot_ttbr1_l1:    .space 4096
__boot_ttbr1_l2:    .space 4096
.balign 16
.global __cpu_stacks
__cpu_stacks:       .space {stacks_bytes}
"#,
    stack_size = const STACK_SIZE,
    stacks_bytes = const STACK_SIZE * MAX_CPUS,
    block_attrs = const BOOT_BLOCK_ATTRS,
    kimage_va = const crate::layout::KIMAGE_VA,
    mair = const MAIR_VALUE,
    tcr = const TCR_BASE,
    sctlr = const SCTLR_VALUE,
);

/// TTBR1 value secondary CPUs load before their MMU is on. Written by the primary before
/// CPU_ON and cleaned to the point of coherency (the secondary reads it uncached).
#[no_mangle]
pub static mut __secondary_ttbr1: u64 = 0;

unsafe extern "C" {
    static __boot_idmap_l0: u8;
    static __cpu_stacks: u8;
    fn __secondary_entry();
    fn __switch_ttbr1(ttbr1: u64);
}

/// Virtual address of `__secondary_entry` (the kernel converts it to physical for CPU_ON).
pub fn secondary_entry_va() -> u64 {
    __secondary_entry as *const () as u64
}

/// Virtual address of `__switch_ttbr1`.
pub fn switch_ttbr1_va() -> u64 {
    __switch_ttbr1 as *const () as u64
}

/// Virtual address of `__secondary_ttbr1`.
pub fn secondary_ttbr1_slot() -> *mut u64 {
    &raw mut __secondary_ttbr1
}

/// Bounds of CPU `idx`'s stack (bottom, top), virtual.
pub fn cpu_stack(idx: usize) -> (u64, u64) {
    let base = &raw const __cpu_stacks as u64 + (idx * STACK_SIZE) as u64;
    (base, base + STACK_SIZE as u64)
}
