//! Page allocator micro-benchmarks: hotmem's buddy allocator (`hotmem::mm`) against the
//! `buddy_system_allocator` crate's `FrameAllocator` on the same workload, plus the cost
//! of booting the model (mem_map initialisation) per GiB.
//!
//! Workloads, each for order 0 (4 KiB) and order 9 (2 MiB) over 1 GiB of free memory:
//! - `pair`: allocate one block and free it at once (the common short-lived case);
//! - `batch`: allocate 256 blocks, then free them in allocation order.
//!
//! Run with `cargo bench --bench buddy`.

use std::hint::black_box;

use buddy_system_allocator::FrameAllocator;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hotmem::mm::testing::FakeStore;
use hotmem::mm::{AllocFlags, MemRegion, Mm, NodeId, Pfn, PhysAddr};

const GIB: u64 = 1 << 30;

fn boot(size: u64) -> Mm<FakeStore> {
    let region = MemRegion {
        base: PhysAddr(GIB),
        size_bytes: size,
        node: NodeId::ZERO,
    };
    Mm::boot(&[region], &[], 40, FakeStore::default()).expect("boot")
}

fn bsa() -> FrameAllocator<33> {
    let mut f = FrameAllocator::<33>::new();
    f.add_frame((GIB >> 12) as usize, ((2 * GIB) >> 12) as usize);
    f
}

const BATCH: usize = 256;

fn bench(c: &mut Criterion) {
    for order in [0u32, 9] {
        let mut g = c.benchmark_group(format!("order{order}"));
        let mut mm = boot(GIB);
        g.bench_function("pair/hotmem", |b| {
            b.iter(|| {
                let p = mm.alloc_pages(order, AllocFlags::UNMOVABLE).unwrap();
                mm.free_pages(black_box(p), order).unwrap();
            })
        });
        let mut f = bsa();
        g.bench_function("pair/buddy_system_allocator", |b| {
            b.iter(|| {
                let p = f.alloc(1 << order).unwrap();
                f.dealloc(black_box(p), 1 << order);
            })
        });
        let mut held: Vec<Pfn> = Vec::with_capacity(BATCH);
        g.bench_function("batch256/hotmem", |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    held.push(mm.alloc_pages(order, AllocFlags::UNMOVABLE).unwrap());
                }
                for p in held.drain(..) {
                    mm.free_pages(p, order).unwrap();
                }
            })
        });
        let mut held: Vec<usize> = Vec::with_capacity(BATCH);
        g.bench_function("batch256/buddy_system_allocator", |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    held.push(f.alloc(1 << order).unwrap());
                }
                for p in held.drain(..) {
                    f.dealloc(p, 1 << order);
                }
            })
        });
        mm.check().expect("check after bench");
        g.finish();
    }
    let mut g = c.benchmark_group("boot");
    g.sample_size(10);
    g.bench_function("boot_4gib_hotmem", |b| {
        b.iter_batched(|| (), |_| black_box(boot(4 * GIB)), BatchSize::PerIteration)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
