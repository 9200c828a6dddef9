//! How the model reaches the memory holding its own metadata: the one trait
//! [`MemMapStore`] that turns an allocated physical range into a typed slice.
//!
//! Model: mem_maps (arrays of [`Page`]) and section-table chunks (arrays of
//! [`Section`]) live in physical memory that the model itself allocates: from the early
//! allocator at boot, from the buddy allocator (unmovable, node-preferred) at run time.
//! The model never touches page contents otherwise. The kernel implements the store with
//! a cast through its linear map; host tests implement it with ordinary `Vec`s and ignore
//! the address.
//!
//! Why not the heap: section-table chunks are allocated while `Mm` is locked; taking them
//! from the kernel heap could recurse into a heap that needs pages from `Mm`. Drawing them
//! from `Mm`'s own allocator keeps the lock order one-way (heap -> Mm, never back).
//!
//! What the model guarantees to an implementation (so a kernel implementation can be
//! sound with one `unsafe` block):
//! 1. `map` is called only for ranges the model has just allocated for this purpose
//!    (`len * size_of::<T>()` bytes at `base`, page aligned, inside RAM the kernel has
//!    mapped), and never twice for overlapping ranges without a `release` in between.
//! 2. After `release(base, items)` the model holds no reference into the range and frees
//!    it to its allocator only after `release` returns.
//!
//! Locks: called only from `Mm` methods, i.e. under the kernel's `Mm` lock.
#![forbid(unsafe_code)]

use super::page::Page;
use super::section::Section;
use super::types::PhysAddr;

mod sealed {
    pub trait Sealed {}
}

/// Types the model stores through a [`MemMapStore`]: [`Page`] and [`Section`]. Every bit
/// pattern the model reads back was written by the model, starting from `EMPTY`.
pub trait MemMapItem: Sized + 'static + sealed::Sealed {
    /// The value every element holds right after [`MemMapStore::map`].
    const EMPTY: Self;
}

impl sealed::Sealed for Page {}
impl MemMapItem for Page {
    const EMPTY: Page = Page::EMPTY;
}
impl sealed::Sealed for Section {}
impl MemMapItem for Section {
    const EMPTY: Section = Section::EMPTY;
}

/// Turns physical ranges allocated by the model into typed slices (see the module doc for
/// the guarantees the model gives an implementation).
pub trait MemMapStore {
    /// Returns the `len` elements of type `T` stored at physical address `base`, each
    /// initialised to `T::EMPTY`.
    fn map<T: MemMapItem>(&mut self, base: PhysAddr, len: usize) -> &'static mut [T];

    /// Like [`MemMapStore::map`], but every element holds `value` (one pass over the memory
    /// instead of two when the caller would overwrite `T::EMPTY` at once).
    fn map_filled<T: MemMapItem + Copy>(
        &mut self,
        base: PhysAddr,
        len: usize,
        value: T,
    ) -> &'static mut [T] {
        let items = self.map::<T>(base, len);
        items.fill(value);
        items
    }

    /// Takes back a slice returned by `map(base, items.len())`; the model will free the
    /// memory afterwards. An implementation may poison it.
    fn release<T: MemMapItem>(&mut self, base: PhysAddr, items: &'static mut [T]);
}
