//! The one host fake of [`MemMapStore`], shared by the model's unit tests, the vmem policy
//! tests and the buddy benchmark. Built for the crate's own tests and, through the
//! `testing` feature (which the crate's dev-dependency on itself turns on), for benches,
//! integration tests and doc tests; never part of the kernel.
//!
//! Model: every mapping is backed by a leaked `Vec` of the host, not by the handle's pages
//! (the physical address only names the mapping). A released slice goes to a pool and
//! backs a later mapping of the same type and length, so long property runs stay bounded.
//! The fake also checks the model: a handle for pages that are still mapped (the model
//! allocated them twice) or a release of a mapping this store did not make panics.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::any::Any;

use super::store::{MemMap, MemMapItem, MemMapStore, MetaPages};

/// Backs mem_maps and table chunks with leaked `Vec`s (see the module doc).
#[derive(Default)]
pub struct FakeStore {
    /// Live mappings: base address -> (slice address, length).
    live: BTreeMap<u64, (usize, usize)>,
    /// Released slices (`&'static mut [T]` of some item type), for reuse.
    pool: Vec<Box<dyn Any>>,
    /// Mappings made so far.
    pub maps: usize,
    /// Mappings released so far.
    pub releases: usize,
}

impl FakeStore {
    /// Physical bases of the mappings live now, ascending.
    pub fn live_bases(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.keys().copied()
    }
}

impl MemMapStore for FakeStore {
    fn map<T: MemMapItem>(&mut self, meta: MetaPages) -> MemMap<T> {
        let base = meta.base();
        let len = meta.capacity::<T>();
        assert!(!self.live.contains_key(&base.0), "{base:?} mapped twice");
        let pos = self.pool.iter().position(|b| {
            b.downcast_ref::<&'static mut [T]>()
                .is_some_and(|s| s.len() == len)
        });
        let slice: &'static mut [T] = match pos {
            Some(i) => {
                let slice = *self
                    .pool
                    .swap_remove(i)
                    .downcast::<&'static mut [T]>()
                    .expect("checked");
                for x in slice.iter_mut() {
                    *x = T::EMPTY;
                }
                slice
            }
            None => {
                let mut v = Vec::with_capacity(len);
                v.resize_with(len, || T::EMPTY);
                v.leak()
            }
        };
        self.live.insert(base.0, (slice.as_ptr() as usize, len));
        self.maps += 1;
        MemMap::new(meta, slice)
    }

    fn release<T: MemMapItem>(&mut self, map: MemMap<T>) -> MetaPages {
        let (meta, items) = map.into_parts();
        let (ptr, len) = self
            .live
            .remove(&meta.base().0)
            .expect("release of a range never mapped");
        assert_eq!(
            (ptr, len),
            (items.as_ptr() as usize, items.len()),
            "release of another slice"
        );
        self.releases += 1;
        self.pool.push(Box::new(items));
        meta
    }
}
