//! The [`Hal`] of the drivers' host tests, shared by the virtio-mem fake device and the
//! PCI tests.
//!
//! DMA memory comes from the std allocator, zeroed and page-aligned, and its physical
//! address is its virtual address, so a fake device can read and write the driver's
//! queues and buffers through plain pointers. There is no MMIO: a test that reaches
//! [`Hal::mmio_phys_to_virt`] has gone wrong.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// DMA from the std allocator, physical address == virtual address, no MMIO.
pub(crate) struct TestHal;

fn dma_layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("valid DMA layout")
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned, exclusively owned memory from the global
// allocator; `share` returns the buffer's own address, which is where the fake device accesses it.
unsafe impl Hal for TestHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size (virtio-drivers never asks for 0 pages).
        let ptr = unsafe { alloc_zeroed(dma_layout(pages)) };
        let vaddr = NonNull::new(ptr).expect("test DMA allocation failed");
        (ptr as PhysAddr, vaddr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes back what `dma_alloc` returned, with the same page count.
        unsafe { dealloc(vaddr.as_ptr(), dma_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(_paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        unreachable!("the test HAL has no MMIO")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
