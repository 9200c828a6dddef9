//! The kernel's virtual memory map (4 KiB granule, 48-bit VA, both halves).
//!
//! ```text
//!  0x0000_0000_0000_0000 ┬─ TTBR0: the boot identity map while CPUs start, later the
//!                        │  address spaces of tasks (walks disabled when unused)
//!  0x0000_ffff_ffff_ffff ┴─
//!  0xffff_0000_0000_0000 ┬─ linear map: VA = PA + LINEAR_OFFSET for every byte of RAM and
//!                        │  MMIO, PA < 2^SUPPORTED_PA_BITS (128 TiB). RAM is Normal WB,
//!                        │  MMIO Device-nGnRE; hot-added RAM is mapped with 2 MiB blocks at
//!                        │  most so removal never splits a live block.
//!  0xffff_8000_0000_0000 ┴─
//!           (unused)
//!  0xffff_ffff_8000_0000 ┬─ kernel image (KIMAGE_VA): text RX, rodata RO, data/bss RW+XN,
//!                        │  mapped with 4 KiB pages; KIMAGE_VA maps the 2 MiB aligned
//!  0xffff_ffff_ffff_ffff ┴─ physical base the image was loaded at (load address - 0x80000).
//! ```
//!
//! Physical memory above `2^SUPPORTED_PA_BITS` (or above the CPU's PARange, whichever is
//! smaller) is refused with a clear message: it would not fit the linear map.

/// Base of the linear map.
pub const LINEAR_OFFSET: u64 = 0xffff_0000_0000_0000;
/// Physical address bits the linear map can cover.
pub const SUPPORTED_PA_BITS: u32 = 47;
/// Virtual base of the kernel image (must match `linker.ld`).
pub const KIMAGE_VA: u64 = 0xffff_ffff_8000_0000;
/// Offset of `_start` from KIMAGE_VA (the arm64 Image header's text_offset).
pub const TEXT_OFFSET: u64 = 0x8_0000;

/// Bytes of a page (the 4 KiB translation granule).
pub const PAGE_SIZE: u64 = 4096;
/// Bytes of a level-2 block mapping.
pub const BLOCK_2M: u64 = 2 << 20;
/// Bytes of a level-1 block mapping.
pub const BLOCK_1G: u64 = 1 << 30;

/// Most CPUs the kernel starts (static per-CPU stacks and data).
pub const MAX_CPUS: usize = 16;
/// Per-CPU boot/exception stack size.
pub const STACK_SIZE: usize = 64 * 1024;

/// Physical address bits usable by this kernel on a CPU reporting `cpu_pa_bits`.
pub const fn usable_pa_bits(cpu_pa_bits: u32) -> u32 {
    if cpu_pa_bits < SUPPORTED_PA_BITS {
        cpu_pa_bits
    } else {
        SUPPORTED_PA_BITS
    }
}

/// Linear-map virtual address of a physical address.
pub const fn phys_to_virt(pa: u64) -> u64 {
    pa + LINEAR_OFFSET
}

/// Physical address behind a linear-map virtual address, `None` outside the linear map.
pub const fn linear_virt_to_phys(va: u64) -> Option<u64> {
    if va >= LINEAR_OFFSET && va < LINEAR_OFFSET + (1 << SUPPORTED_PA_BITS) {
        Some(va - LINEAR_OFFSET)
    } else {
        None
    }
}

/// PARange field of ID_AA64MMFR0_EL1 to a bit count.
pub const fn parange_bits(field: u64) -> u32 {
    match field {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_round_trip() {
        let pa = 0x4000_0000;
        assert_eq!(linear_virt_to_phys(phys_to_virt(pa)), Some(pa));
        assert_eq!(linear_virt_to_phys(KIMAGE_VA), None);
        assert_eq!(usable_pa_bits(52), 47);
        assert_eq!(usable_pa_bits(40), 40);
    }
}
