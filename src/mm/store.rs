//! How the model reaches the memory holding its own metadata: pages it allocated for that
//! purpose ([`MetaPages`], a handle only the model makes), turned into a typed slice
//! ([`MemMap`]) by the one trait [`MemMapStore`].
//!
//! Model: mem_maps (arrays of [`Page`]), section-table chunks (arrays of [`Section`]) and
//! unit tables (arrays of [`UnitMaps`], see [`super::memmap`]) live in physical memory that the model itself allocates: from the early
//! allocator at boot, from the buddy allocator (unmovable, node-preferred) at run time.
//! The model never touches page contents otherwise. The kernel implements the store with
//! a cast through its linear map (one `unsafe fn`); host tests implement it with ordinary
//! `Vec`s and ignore the address (the shared fake in `testing`).
//!
//! Why not the heap: section-table chunks are allocated while `Mm` is locked; taking them
//! from the kernel heap could recurse into a heap that needs pages from `Mm`. Drawing them
//! from `Mm`'s own allocator keeps the lock order one-way (heap -> Mm, never back).
//!
//! # Life of a metadata allocation
//! ```text
//!            allocate             map                  release              free
//!   (model) ──────────▶ MetaPages ────▶ MemMap<T> ──────────▶ MetaPages ──────▶ (model)
//!                       (handle)  store (owns the  store      (handle)   pages back to
//!                                        handle, derefs to [T])          its allocator
//! ```
//! What the types guarantee to an implementation, by ownership rather than by promise:
//! 1. A [`MetaPages`] names pages the model has just allocated for metadata: page
//!    aligned, inside RAM the model manages, used by nothing else. Only the model makes
//!    one (no public constructor, not `Clone`), once per allocation; [`MemMapStore::map`]
//!    consumes it, so the same pages are never mapped twice.
//! 2. The model frees metadata pages only through their handle, and the handle of mapped
//!    pages lives inside their [`MemMap`]: the model gets it back only from
//!    [`MemMapStore::release`], which takes the mapping. Release therefore comes before
//!    free, and nothing of the model's refers into the pages afterwards. Boot mem_maps and
//!    table chunks are never released. A unit's own descriptors ([`super::memmap`]) are
//!    the one mapping the model takes apart while it lives: it keeps the slice and rebuilds
//!    the handle from the unit's address (the pages are never free, so no one else can
//!    hold them) to release the mapping before the unit is removed; the pages then leave
//!    with the unit instead of being freed.
//!
//! What an implementation promises in return: the slice inside a [`MemMap`] is memory that
//! only that mapping reaches (for the kernel, the handle's pages through the linear map),
//! and once `release` returns the handle nothing uses that memory through the slice.
//!
//! Safe code cannot make a mapping from a bare address, because the handle it needs is the
//! model's (the passing twin is the store in [`MemMapStore`]'s example, which maps the
//! handle it is given):
//! ```compile_fail,E0624
//! use hotmem::mm::{MemMap, MetaPages, Page, PhysAddr};
//! fn forge(items: &'static mut [Page]) -> MemMap<Page> {
//!     MemMap::new(MetaPages::new(Pfn::down(PhysAddr(0x4000_0000)), 8), items)
//! }
//! ```
//!
//! Locks: called only from `Mm` methods, i.e. under the kernel's `Mm` lock.
#![forbid(unsafe_code)]

use core::fmt;
use core::ops::{Deref, DerefMut};

use super::memmap::UnitMaps;
use super::page::Page;
use super::section::Section;
use super::types::{Pfn, PhysAddr, MAX_ORDER, PAGE_SHIFT, PAGE_SIZE};

mod sealed {
    pub trait Sealed {}
}

/// Types the model stores through a [`MemMapStore`]: [`Page`], [`Section`], [`UnitMaps`]. Every bit
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
impl sealed::Sealed for UnitMaps {}
impl MemMapItem for UnitMaps {
    const EMPTY: UnitMaps = UnitMaps::EMPTY;
}

const _: () = assert!(
    core::mem::align_of::<Page>() as u64 <= PAGE_SIZE
        && core::mem::align_of::<Section>() as u64 <= PAGE_SIZE,
    "a page-aligned handle must be aligned for every item"
);
const _: () = assert!(
    (MAX_ORDER as u64) < PAGE_SIZE,
    "the order is kept in the base's page offset"
);

/// Handle of `2^order` contiguous pages the model allocated to hold its metadata (see the
/// module doc). Only the model makes one; a store gets it in [`MemMapStore::map`] and the
/// model takes it back from [`MemMapStore::release`] to free the pages.
///
/// A handle moved into a mapping cannot be freed while the mapping lives:
/// ```compile_fail,E0382
/// use hotmem::mm::{MemMap, MemMapItem, MetaPages};
/// fn free(_pages: MetaPages) {} // the model's side: the pages go back to its allocator
/// fn free_while_mapped<T: MemMapItem>(meta: MetaPages, items: &'static mut [T]) -> MemMap<T> {
///     let map = MemMap::new(meta, items);
///     free(meta);
///     map
/// }
/// ```
/// Only once the mapping is taken apart is the handle free to go:
/// ```
/// use hotmem::mm::{MemMap, MemMapItem, MetaPages};
/// fn free(_pages: MetaPages) {}
/// fn unmap_then_free<T: MemMapItem>(map: MemMap<T>) {
///     let (meta, _items) = map.into_parts();
///     free(meta);
/// }
/// ```
#[must_use = "dropping a handle leaks its pages"]
pub struct MetaPages {
    /// Physical base (page aligned) with the order in the page offset: one word, so a
    /// [`Section`] holding a mapping still fits its 64 bytes.
    word: u64,
}

impl MetaPages {
    /// The handle of `2^order` pages from `start`, freshly allocated for metadata. Only the
    /// model calls this, once per allocation.
    pub(crate) fn new(start: Pfn, order: u32) -> MetaPages {
        debug_assert!(order <= MAX_ORDER);
        MetaPages {
            word: start.addr().0 | u64::from(order),
        }
    }

    /// Physical address of the first page.
    pub fn base(&self) -> PhysAddr {
        PhysAddr(self.word & !(PAGE_SIZE - 1))
    }

    /// First page.
    pub fn start(&self) -> Pfn {
        Pfn(self.word >> PAGE_SHIFT)
    }

    /// log2 of the number of pages.
    pub fn order(&self) -> u32 {
        (self.word & (PAGE_SIZE - 1)) as u32
    }

    /// Bytes the handle covers.
    pub fn size_bytes(&self) -> u64 {
        PAGE_SIZE << self.order()
    }

    /// How many `T`s the pages hold: the length of every mapping of this handle.
    pub fn capacity<T: MemMapItem>(&self) -> usize {
        (self.size_bytes() / core::mem::size_of::<T>() as u64) as usize
    }
}

impl fmt::Debug for MetaPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaPages")
            .field("base", &self.base())
            .field("order", &self.order())
            .finish()
    }
}

/// Metadata pages as a typed slice: owns the pages' handle for as long as it lives, and
/// derefs to the `[T]` stored there. Made by a [`MemMapStore`] from the handle the model
/// gives it; taken apart only by [`MemMap::into_parts`] (in [`MemMapStore::release`]).
pub struct MemMap<T: MemMapItem> {
    meta: MetaPages,
    items: &'static mut [T],
}

impl<T: MemMapItem> MemMap<T> {
    /// Pairs the handle `meta` with `items`, the memory that holds its `T`s (the kernel:
    /// the handle's own pages through the linear map; a host fake: a `Vec` of its own).
    /// `items` must hold exactly [`MetaPages::capacity`] elements.
    pub fn new(meta: MetaPages, items: &'static mut [T]) -> MemMap<T> {
        assert_eq!(
            items.len(),
            meta.capacity::<T>(),
            "a mapping covers its handle's pages exactly"
        );
        MemMap { meta, items }
    }

    /// Physical address of the pages.
    pub fn base(&self) -> PhysAddr {
        self.meta.base()
    }

    /// Takes the mapping apart: the handle (for the model to free) and the slice (a store
    /// that backs mappings with memory of its own may reuse it; one that maps the handle's
    /// pages must drop it).
    pub fn into_parts(self) -> (MetaPages, &'static mut [T]) {
        (self.meta, self.items)
    }
}

impl<T: MemMapItem> Deref for MemMap<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &*self.items
    }
}

impl<T: MemMapItem> DerefMut for MemMap<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut *self.items
    }
}

/// Turns metadata pages allocated by the model into typed slices (see the module doc for
/// what the types guarantee an implementation, and what it promises back).
///
/// The shape of an implementation (this one backs every mapping with leaked host memory):
/// ```
/// use hotmem::mm::{MemMap, MemMapItem, MemMapStore, MemRegion, MetaPages, Mm, NodeId, PhysAddr};
/// struct Leak;
/// impl MemMapStore for Leak {
///     fn map<T: MemMapItem>(&mut self, meta: MetaPages) -> MemMap<T> {
///         let items: Vec<T> = (0..meta.capacity::<T>()).map(|_| T::EMPTY).collect();
///         MemMap::new(meta, items.leak())
///     }
/// }
/// let ram = MemRegion { base: PhysAddr(1 << 30), size_bytes: 128 << 20, node: NodeId::ZERO };
/// assert!(Mm::boot(&[ram], &[], 40, Leak).is_ok());
/// ```
pub trait MemMapStore {
    /// The pages of `meta` as a mapping of [`MetaPages::capacity`] elements of type `T`,
    /// each initialised to `T::EMPTY`.
    fn map<T: MemMapItem>(&mut self, meta: MetaPages) -> MemMap<T>;

    /// Like [`MemMapStore::map`], but every element holds `value` (one pass over the memory
    /// instead of two when the caller would overwrite `T::EMPTY` at once).
    fn map_filled<T: MemMapItem + Copy>(&mut self, meta: MetaPages, value: T) -> MemMap<T> {
        let mut items = self.map::<T>(meta);
        items.fill(value);
        items
    }

    /// Takes back a mapping from [`MemMapStore::map`] and returns its handle; the model
    /// frees the pages afterwards. An implementation may poison the memory. The default
    /// drops the slice.
    fn release<T: MemMapItem>(&mut self, map: MemMap<T>) -> MetaPages {
        map.into_parts().0
    }
}
