//! The one wrapper that dereferences MMIO register blocks.

use core::marker::PhantomData;
use core::ops::Deref;

/// A register block of type `T` (a `register_structs!` struct) at a fixed virtual address.
pub struct Mmio<T> {
    base: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Mmio<T> {
    /// # Safety
    /// `base` must be the virtual address of a device-memory mapping at least
    /// `size_of::<T>()` bytes long that holds a `T` register block, and it must stay mapped
    /// for as long as the returned value (or a copy of it) is used.
    pub const unsafe fn new(base: usize) -> Self {
        Mmio {
            base,
            _t: PhantomData,
        }
    }

    /// The virtual address of the register block.
    pub fn base(&self) -> usize {
        self.base
    }
}

impl<T> Clone for Mmio<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Mmio<T> {}

impl<T> Deref for Mmio<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new`'s contract: `base` is a live mapping of a `T` register block.
        unsafe { &*(self.base as *const T) }
    }
}
