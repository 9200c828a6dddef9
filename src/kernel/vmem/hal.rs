//! The virtio `Hal` of the kernel: how virtio-drivers gets DMA memory, reaches device
//! registers and translates buffers.
//!
//! DMA memory is unmovable Normal memory from the memory model (taken under `mm_lock()`
//! per call), zeroed, and addressed through the linear map: the CPU and the device see the
//! same physical address, so `share` is a translation and `unshare` does nothing. MMIO
//! ranges are mapped as Device memory (`mmu::map_mmio`) when virtio-drivers asks for them
//! and stay mapped. No lock of its own.

use crate::kernel::mem::mm_lock;
use core::ptr::NonNull;
use hotmem::mm::{AllocFlags, Pfn, PhysAddr};
use hotmem_arch::addr::PhysRange;
use hotmem_arch::layout::{self, PAGE_SIZE};
use hotmem_arch::mmu;
use virtio_drivers::{BufferDirection, Hal};

/// DMA and MMIO for virtio-drivers: DMA memory is unmovable Normal memory from the model,
/// addressed through the linear map (the CPU and the device see the same physical address).
pub struct KernelHal;

fn virt_to_phys(va: u64) -> u64 {
    layout::linear_virt_to_phys(va).unwrap_or_else(|| mmu::image_virt_to_phys(va))
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory that nothing else uses until
// `dma_dealloc`; `mmio_phys_to_virt` returns a Device mapping of the range; `share` returns
// the physical address of the buffer (all kernel memory is identity-visible to the device).
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (u64, NonNull<u8>) {
        let order = pages.next_power_of_two().trailing_zeros();
        let pfn = mm_lock()
            .as_mut()
            .and_then(|m| m.alloc_pages(order, AllocFlags::UNMOVABLE).ok());
        match pfn {
            Some(pfn) => {
                let pa = pfn.addr().0;
                let va = layout::phys_to_virt(pa) as *mut u8;
                // SAFETY: freshly allocated RAM, mapped by the linear map, `pages` pages long.
                unsafe { core::ptr::write_bytes(va, 0, pages * PAGE_SIZE as usize) };
                (pa, NonNull::new(va).unwrap_or(NonNull::dangling()))
            }
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: u64, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let order = pages.next_power_of_two().trailing_zeros();
        match mm_lock()
            .as_mut()
            .map(|m| m.free_pages(Pfn::down(PhysAddr(paddr)), order))
        {
            Some(Ok(())) => 0,
            _ => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: u64, size: usize) -> NonNull<u8> {
        // PCI bus addresses equal CPU addresses on this board (the DT `ranges` are 1:1).
        let regs = PhysRange {
            base: paddr,
            size: size as u64,
        };
        let va = mmu::map_mmio(regs).map_or(0, |va| va.0);
        NonNull::new(va as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _dir: BufferDirection) -> u64 {
        virt_to_phys(buffer.as_ptr() as *mut u8 as u64)
    }

    unsafe fn unshare(_paddr: u64, _buffer: NonNull<[u8]>, _dir: BufferDirection) {}
}
