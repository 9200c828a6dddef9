//! The pure logic of the kernel heap: a size-class slab allocator over pages from the
//! page allocator. The kernel wraps one [`SlabHeap`] in its `#[global_allocator]`.
//!
//! Model: requests up to [`MAX_SLAB_OBJECT`] bytes are rounded up to a power-of-two size
//! class (16 B .. 2 KiB, so every object is aligned to its class); bigger ones take whole
//! page blocks (`2^order` pages, naturally aligned) straight from the page allocator.
//! A slab is `max(4 KiB, 8 objects)` of naturally aligned memory; its first words are a
//! header: free-object list, objects in use, the bump pointer of never-used objects, and
//! the links of the class's list of slabs with room. Free objects hold the address of the
//! next free object in their first word. All reads and writes of heap memory go through
//! [`HeapBacking`], so this code is safe and runs on the host over a fake.
//!
//! Slab states: *partial* (has room; on its class list), *full* (off the list), *empty*
//! (no object in use; on the list). At most one empty slab per class is kept; further
//! empty slabs go back to the page allocator at once; [`SlabHeap::trim`] returns the rest.
//!
//! Invariants: a slab is on its class list exactly when it has room; `in_use` equals the
//! objects handed out and not returned; `empty_slabs[c]` counts empty slabs on list `c`.
//!
//! Locks: the kernel keeps the heap behind its own IRQ-masking lock and calls the page
//! allocator (`Mm`, its own lock) from inside it: lock order heap -> Mm, never the
//! reverse (`Mm` does not allocate from the heap after boot). No logging here: this is
//! the allocator fast path.
#![forbid(unsafe_code)]

use super::types::{MAX_ORDER, PAGE_SIZE};

/// Memory for the heap: page blocks and word access to them.
pub trait HeapBacking {
    /// Allocates `2^order` pages of unmovable memory; returns their address, which must be
    /// aligned to the block size, or `None` when memory is exhausted.
    fn alloc_pages(&mut self, order: u32) -> Option<usize>;
    /// Returns a block from [`HeapBacking::alloc_pages`].
    fn free_pages(&mut self, addr: usize, order: u32);
    /// Reads the word at `addr` (inside a block the heap holds, word aligned).
    fn read_word(&self, addr: usize) -> usize;
    /// Writes the word at `addr` (inside a block the heap holds, word aligned).
    fn write_word(&mut self, addr: usize, value: usize);
}

/// Smallest size class in bytes.
pub const MIN_SLAB_OBJECT: usize = 16;
/// Largest size class in bytes; bigger requests take whole page blocks.
pub const MAX_SLAB_OBJECT: usize = 2048;
const NR_CLASSES: usize =
    (MAX_SLAB_OBJECT.trailing_zeros() - MIN_SLAB_OBJECT.trailing_zeros() + 1) as usize;
const WORD: usize = core::mem::size_of::<usize>();

// Header words.
const H_FREE: usize = 0;
const H_IN_USE: usize = 1;
const H_BUMP: usize = 2;
const H_NEXT: usize = 3;
const H_PREV: usize = 4;
const HEADER_BYTES: usize = 5 * WORD;

const _: () = assert!(MIN_SLAB_OBJECT >= WORD && MIN_SLAB_OBJECT.is_power_of_two());
const _: () = assert!(HEADER_BYTES <= MAX_SLAB_OBJECT);

/// Heap counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed out (rounded to class / block size).
    pub bytes_in_use: usize,
    /// Pages held from the page allocator (slabs and large blocks).
    pub pages_held: usize,
}

/// The slab heap (see the module doc).
#[derive(Debug)]
pub struct SlabHeap {
    partial: [usize; NR_CLASSES],
    empty_slabs: [usize; NR_CLASSES],
    stats: HeapStats,
}

impl Default for SlabHeap {
    fn default() -> Self {
        Self::new()
    }
}

fn class_of(size: usize, align: usize) -> Option<usize> {
    let need = size
        .max(align)
        .max(MIN_SLAB_OBJECT)
        .checked_next_power_of_two()?;
    (need <= MAX_SLAB_OBJECT)
        .then(|| (need.trailing_zeros() - MIN_SLAB_OBJECT.trailing_zeros()) as usize)
}

const fn class_bytes(class: usize) -> usize {
    MIN_SLAB_OBJECT << class
}

const fn slab_bytes(class: usize) -> usize {
    let b = 8 * class_bytes(class);
    if b < PAGE_SIZE as usize {
        PAGE_SIZE as usize
    } else {
        b
    }
}

const fn slab_order(class: usize) -> u32 {
    (slab_bytes(class) / PAGE_SIZE as usize).trailing_zeros()
}

fn large_order(size: usize, align: usize) -> Option<u32> {
    let need = size.max(align).checked_next_power_of_two()?;
    let pages = need.div_ceil(PAGE_SIZE as usize);
    let order = pages.trailing_zeros();
    (order <= MAX_ORDER).then_some(order)
}

impl SlabHeap {
    /// An empty heap.
    pub const fn new() -> SlabHeap {
        SlabHeap {
            partial: [0; NR_CLASSES],
            empty_slabs: [0; NR_CLASSES],
            stats: HeapStats {
                bytes_in_use: 0,
                pages_held: 0,
            },
        }
    }

    /// Counters.
    pub fn stats(&self) -> HeapStats {
        self.stats
    }

    /// Allocates `size` bytes aligned to `align` (a power of two); `None` when out of memory
    /// or the request exceeds a max-order block.
    pub fn alloc<B: HeapBacking>(&mut self, b: &mut B, size: usize, align: usize) -> Option<usize> {
        let Some(class) = class_of(size, align) else {
            let order = large_order(size, align)?;
            let addr = b.alloc_pages(order)?;
            self.stats.pages_held += 1 << order;
            self.stats.bytes_in_use += (PAGE_SIZE as usize) << order;
            return Some(addr);
        };
        if self.partial[class] == 0 {
            self.new_slab(b, class)?;
        }
        let slab = self.partial[class];
        let obj_size = class_bytes(class);
        let free = b.read_word(slab + H_FREE * WORD);
        let obj = if free != 0 {
            b.write_word(slab + H_FREE * WORD, b.read_word(free));
            free
        } else {
            let bump = b.read_word(slab + H_BUMP * WORD);
            b.write_word(slab + H_BUMP * WORD, bump + obj_size);
            bump
        };
        let in_use = b.read_word(slab + H_IN_USE * WORD);
        if in_use == 0 {
            self.empty_slabs[class] -= 1;
        }
        b.write_word(slab + H_IN_USE * WORD, in_use + 1);
        if !self.has_room(b, slab, class) {
            self.unlink(b, class, slab);
        }
        self.stats.bytes_in_use += obj_size;
        Some(obj)
    }

    /// Returns memory from [`SlabHeap::alloc`] with the same `size` and `align`.
    pub fn dealloc<B: HeapBacking>(&mut self, b: &mut B, addr: usize, size: usize, align: usize) {
        let Some(class) = class_of(size, align) else {
            if let Some(order) = large_order(size, align) {
                b.free_pages(addr, order);
                self.stats.pages_held -= 1 << order;
                self.stats.bytes_in_use -= (PAGE_SIZE as usize) << order;
            }
            return;
        };
        let slab = addr & !(slab_bytes(class) - 1);
        let was_full = !self.has_room(b, slab, class);
        b.write_word(addr, b.read_word(slab + H_FREE * WORD));
        b.write_word(slab + H_FREE * WORD, addr);
        let in_use = b.read_word(slab + H_IN_USE * WORD) - 1;
        b.write_word(slab + H_IN_USE * WORD, in_use);
        self.stats.bytes_in_use -= class_bytes(class);
        if was_full {
            self.push(b, class, slab);
        }
        if in_use == 0 {
            if self.empty_slabs[class] >= 1 {
                self.unlink(b, class, slab);
                b.free_pages(slab, slab_order(class));
                self.stats.pages_held -= 1 << slab_order(class);
            } else {
                self.empty_slabs[class] += 1;
            }
        }
    }

    /// Returns every cached empty slab to the page allocator.
    pub fn trim<B: HeapBacking>(&mut self, b: &mut B) {
        for class in 0..NR_CLASSES {
            let mut slab = self.partial[class];
            while slab != 0 {
                let next = b.read_word(slab + H_NEXT * WORD);
                if b.read_word(slab + H_IN_USE * WORD) == 0 {
                    self.unlink(b, class, slab);
                    b.free_pages(slab, slab_order(class));
                    self.stats.pages_held -= 1 << slab_order(class);
                    self.empty_slabs[class] -= 1;
                }
                slab = next;
            }
        }
    }

    fn has_room<B: HeapBacking>(&self, b: &B, slab: usize, class: usize) -> bool {
        b.read_word(slab + H_FREE * WORD) != 0
            || b.read_word(slab + H_BUMP * WORD) + class_bytes(class) <= slab + slab_bytes(class)
    }

    fn new_slab<B: HeapBacking>(&mut self, b: &mut B, class: usize) -> Option<()> {
        let order = slab_order(class);
        let slab = b.alloc_pages(order)?;
        if slab % slab_bytes(class) != 0 {
            b.free_pages(slab, order);
            return None;
        }
        self.stats.pages_held += 1 << order;
        let first = HEADER_BYTES.next_multiple_of(class_bytes(class));
        b.write_word(slab + H_FREE * WORD, 0);
        b.write_word(slab + H_IN_USE * WORD, 0);
        b.write_word(slab + H_BUMP * WORD, slab + first);
        self.push(b, class, slab);
        self.empty_slabs[class] += 1;
        Some(())
    }

    fn push<B: HeapBacking>(&mut self, b: &mut B, class: usize, slab: usize) {
        let head = self.partial[class];
        b.write_word(slab + H_NEXT * WORD, head);
        b.write_word(slab + H_PREV * WORD, 0);
        if head != 0 {
            b.write_word(head + H_PREV * WORD, slab);
        }
        self.partial[class] = slab;
    }

    fn unlink<B: HeapBacking>(&mut self, b: &mut B, class: usize, slab: usize) {
        let next = b.read_word(slab + H_NEXT * WORD);
        let prev = b.read_word(slab + H_PREV * WORD);
        if next != 0 {
            b.write_word(next + H_PREV * WORD, prev);
        }
        if prev != 0 {
            b.write_word(prev + H_NEXT * WORD, next);
        } else {
            self.partial[class] = next;
        }
    }
}
