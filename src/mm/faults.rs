//! Allocation-failure injection for host tests: the page allocator can be told to fail the
//! next N allocations, or a seeded fraction of them, so that tests drive every
//! out-of-memory path through random sequences: mem_map and table-chunk allocations of
//! `add_sections`, migration destinations, workload and kernel pages, and the heap's slabs
//! (its pages come from the same allocator).
//!
//! Model: the model has one allocation-failure hook ([`Mm::set_alloc_fault`], the same one
//! the kernel's fault injection installs); [`Mm::inject_faults`] installs [`hook`], which
//! consults this thread's [`AllocFaults`] once per call of the page allocator, before it
//! looks at any free list. An injected failure is the same `NoMemory` a full zone gives, so
//! the caller cannot tell the difference. `next` failures come first, then each call fails
//! with probability `per_mille / 1000` drawn from a seeded SplitMix64, so a run replays
//! exactly.
//!
//! The plan is per thread (each test runs on its own thread; [`with`] reaches it), so tests
//! running side by side do not see each other's faults. Built only for host tests
//! (`cfg(test)` or the `testing` feature); the kernel installs its own hook.
#![forbid(unsafe_code)]

use super::model::Mm;
use super::store::MemMapStore;
use super::AllocFlags;
use std::cell::RefCell;

std::thread_local! {
    static FAULTS: RefCell<AllocFaults> = RefCell::new(AllocFaults::default());
}

/// This thread's plan: `f` sees and may change it.
pub fn with<T>(f: impl FnOnce(&mut AllocFaults) -> T) -> T {
    FAULTS.with(|c| f(&mut c.borrow_mut()))
}

/// The model's allocation-failure hook for host tests: whether this call fails, by this
/// thread's plan.
pub fn hook(_: AllocFlags) -> bool {
    with(AllocFaults::fail_now)
}

impl<S: MemMapStore> Mm<S> {
    /// Makes this model's page allocator follow this thread's plan (see the module doc),
    /// starting from an empty plan.
    pub fn inject_faults(&mut self) {
        with(|f| *f = AllocFaults::default());
        self.set_alloc_fault(Some(hook));
    }
}

/// Which page allocations fail (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocFaults {
    /// Fail this many calls from now on, then go on with `per_mille`.
    pub next: u64,
    /// Then fail this many calls in a thousand (0: none).
    pub per_mille: u32,
    /// SplitMix64 state for `per_mille`.
    pub seed: u64,
    /// Failures injected so far.
    pub injected: u64,
}

impl AllocFaults {
    /// Fail the next `n` calls.
    pub fn fail_next(&mut self, n: u64) {
        self.next = n;
    }

    /// Fail `per_mille` of the calls in a thousand, drawn from `seed`.
    pub fn fail_fraction(&mut self, per_mille: u32, seed: u64) {
        self.per_mille = per_mille.min(1000);
        self.seed = seed;
    }

    /// Inject nothing more.
    pub fn clear(&mut self) {
        self.next = 0;
        self.per_mille = 0;
    }

    fn draw(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Whether this call fails.
    pub fn fail_now(&mut self) -> bool {
        let fail = if self.next > 0 {
            self.next -= 1;
            true
        } else {
            self.per_mille > 0 && self.draw() % 1000 < u64::from(self.per_mille)
        };
        self.injected += u64::from(fail);
        fail
    }
}
