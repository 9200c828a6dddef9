//! Host tests of the memory model over the shared `Vec`-backed fake store
//! ([`FakeStore`]), one file per topic:
//! - [`boot`]: boot from the device tree's view of memory, page lookup, allocation;
//! - [`hotplug`]: the run-time section calls (add, online, isolate, offline, remove) and
//!   their errors;
//! - [`chunked`]: the same calls in bounded holds of the lock, and what another CPU can see
//!   between two holds;
//! - [`nodes`]: NUMA: node boundaries inside sections and pageblocks, node-local metadata;
//! - [`heap`]: the slab heap over pages of the model;
//! - [`proptests`]: property tests that run random sequences with the invariant checker
//!   after every step;
//! - [`migrate`]: references, the reverse map and the migration engine over fake page
//!   tables, unit and property tests;
//! - [`pressure`]: the watermarks of the reserve and the floor, and allocation-failure
//!   injection over random sequences of every call (nothing lost, nothing changed by a
//!   failed call).
//!
//! This module holds what they share: layouts, a fingerprint of everything that must
//! come back when all memory is returned, and the checker as an assertion.

use std::vec::Vec;

use super::testing::FakeStore;
use super::*;

mod boot;
mod chunked;
mod heap;
mod hotplug;
mod memmap;
mod migrate;
mod nodes;
mod pressure;
mod proptests;

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;

pub(crate) fn region(base: u64, size: u64, node: u32) -> MemRegion {
    MemRegion {
        base: PhysAddr(base),
        size_bytes: size,
        node: NodeId::new(node).unwrap(),
    }
}

pub(crate) fn resv(base: u64, size: u64) -> Reservation {
    Reservation {
        base: PhysAddr(base),
        size_bytes: size,
    }
}

/// The model booted over `regions` less `reservations`, with a 40-bit physical address
/// space and a fresh [`FakeStore`]: the machine most tests start from.
pub(crate) fn boot_mm(regions: &[MemRegion], reservations: &[Reservation]) -> Mm<FakeStore> {
    Mm::boot(regions, reservations, 40, FakeStore::default()).unwrap()
}

fn prange(base: u64, size: u64) -> PfnRange {
    PfnRange::from_phys(PhysAddr(base), size).unwrap()
}

/// Memory at 1 GiB (node 0, 256 MiB with a kernel image and a DTB reserved) and a
/// partially present section at 512 GiB (node 1, 200 MiB starting 2 MiB into a section).
fn holes_layout() -> Mm<FakeStore> {
    let regions = [
        region(GIB, 256 * MIB, 0),
        region(512 * GIB + 2 * MIB, 200 * MIB, 1),
    ];
    let reservations = [
        resv(GIB + 2 * MIB, 3 * MIB + 4096),
        resv(GIB + 200 * MIB, 64 * 1024),
        resv(0, 4096),
    ];
    boot_mm(&regions, &reservations)
}

fn zone(mm: &Mm<FakeStore>, node: u32, z: ZoneType) -> ZoneStats {
    mm.stats()
        .find(|s| s.node.index() == node as usize && s.zone == Some(z))
        .unwrap()
}

/// Everything that must come back when all memory is returned.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    zones: Vec<ZoneStats>,
    nodes: Vec<NodeStats>,
    sections: Vec<SectionInfo>,
    lists: Vec<u64>,
}

fn fingerprint(mm: &Mm<FakeStore>) -> Fingerprint {
    let mut lists = Vec::new();
    for n in &mm.buddy.nodes {
        for z in &n.zones {
            for o in &z.lists {
                lists.extend(o.iter().map(|l| l.len));
            }
        }
    }
    Fingerprint {
        zones: mm.stats().collect(),
        nodes: mm.node_stats().collect(),
        sections: mm.sections().collect(),
        lists,
    }
}

/// `runs` sequences of `len` values of `strategy`, drawn from a fixed `seed`: what the tests
/// that check a property test reaches every state run.
fn fixed_sequences<S: proptest::strategy::Strategy>(
    seed: u8,
    runs: usize,
    len: usize,
    strategy: S,
) -> Vec<Vec<S::Value>> {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let seq = proptest::collection::vec(strategy, len);
    (0..runs)
        .map(|_| seq.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Runs `run` over [`fixed_sequences`] and adds up the per-kind counts it returns: what a
/// "the random sequences reach every state" test asserts on.
fn counts_over_fixed_sequences<S: proptest::strategy::Strategy, const N: usize>(
    seed: u8,
    runs: usize,
    len: usize,
    strategy: S,
    run: impl Fn(&[S::Value]) -> [u64; N],
) -> [u64; N] {
    let mut total = [0u64; N];
    for ops in fixed_sequences(seed, runs, len, strategy) {
        for (t, n) in total.iter_mut().zip(run(&ops)) {
            *t += n;
        }
    }
    total
}

fn ok(mm: &Mm<FakeStore>) {
    if let Err(e) = mm.check() {
        panic!("check: FAIL {e}");
    }
}
