//! Hold-time statistics of the IRQ-masking spin locks: for each named class of locks, how
//! many holds, the longest, and a log2 histogram from which the 99th percentile is read.
//!
//! Model: a [`LockClass`] is a `static` (made with [`lock_class!`](crate::lock_class)) that
//! every lock of the class points to: one class per named static lock (`mm`, `rmap`, ...),
//! one shared by all locks of a kind that has many instances (every wait queue's lock is
//! `waitq`). [`cpu::IrqSpinLock`](crate::cpu) notes the counter when it is taken and, when it
//! is released, calls [`LockClass::record`] with the ticks it was held: bucket `k` of the
//! histogram counts holds of `[2^(k-1), 2^k)` ticks (bucket 0: no tick), the last bucket
//! everything longer. So the 99th percentile is known to within a factor of two, and
//! [`Summary::p99_ticks`] reports the upper end of its bucket, capped at the maximum.
//!
//! Cost: always on. A record is a few relaxed atomic adds on the releasing CPU; nothing
//! allocates, nothing takes a lock. Counts of different buckets are not read atomically
//! together, so a summary taken while locks are in use is a consistent-enough snapshot
//! (each count is exact, the set may straddle a few holds).
//!
//! Registry: a class registers itself on its first record, in a fixed table of
//! [`MAX_CLASSES`] `spin::Once` cells (a slot is claimed with an atomic counter, so
//! registering needs no lock); [`classes`] lists them in that order. A class that was never
//! held is not listed; one that finds the table full still counts but is not listed.
//!
//! Units: ticks of the generic timer's counter (CNTVCT_EL0); [`ticks_to_us_ceil`] converts
//! with the counter's frequency. The counter runs in host time under QEMU's TCG, so a vCPU
//! thread the host preempts while it holds a lock counts as held.
//!
//! Pure logic: runs under host `cargo test`.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Histogram buckets: bucket 39 starts at 2^38 ticks (275 s at 1 GHz, 73 min at 62.5 MHz).
pub const BUCKETS: usize = 40;
/// Most classes [`classes`] can list.
pub const MAX_CLASSES: usize = 32;

/// Hold-time statistics of one class of locks (see the module doc).
pub struct LockClass {
    name: &'static str,
    buckets: [AtomicU64; BUCKETS],
    max_ticks: AtomicU64,
    registered: AtomicBool,
}

static CLASSES: [spin::Once<&'static LockClass>; MAX_CLASSES] =
    [const { spin::Once::new() }; MAX_CLASSES];
static NR_CLASSES: AtomicUsize = AtomicUsize::new(0);

/// The histogram bucket of a hold of `ticks`.
pub const fn bucket(ticks: u64) -> usize {
    let k = (u64::BITS - ticks.leading_zeros()) as usize;
    if k < BUCKETS {
        k
    } else {
        BUCKETS - 1
    }
}

/// The longest hold bucket `k` counts, in ticks (the last bucket has no end).
pub const fn bucket_end(k: usize) -> u64 {
    if k == 0 {
        0
    } else if k >= BUCKETS - 1 {
        u64::MAX
    } else {
        (1u64 << k) - 1
    }
}

/// `ticks` of a counter running at `hz`, in whole microseconds rounded up.
pub const fn ticks_to_us_ceil(ticks: u64, hz: u64) -> u64 {
    let hz = if hz == 0 { 1 } else { hz as u128 };
    ((ticks as u128 * 1_000_000).div_ceil(hz)) as u64
}

/// What a class has recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The class's name.
    pub name: &'static str,
    /// Holds recorded.
    pub holds: u64,
    /// The longest hold, in ticks.
    pub max_ticks: u64,
    /// An upper bound of the 99th percentile of hold times, in ticks: the end of the bucket
    /// it falls in, capped at `max_ticks` (0 without holds).
    pub p99_ticks: u64,
}

impl LockClass {
    /// A class with no holds yet.
    pub const fn new(name: &'static str) -> LockClass {
        LockClass {
            name,
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            max_ticks: AtomicU64::new(0),
            registered: AtomicBool::new(false),
        }
    }

    /// The class's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Counts one hold of `ticks` (and registers the class on its first).
    pub fn record(&'static self, ticks: u64) {
        if !self.registered.load(Ordering::Relaxed) && !self.registered.swap(true, Ordering::AcqRel)
        {
            let slot = NR_CLASSES.fetch_add(1, Ordering::AcqRel);
            if let Some(cell) = CLASSES.get(slot) {
                cell.call_once(|| self);
            }
        }
        self.buckets[bucket(ticks)].fetch_add(1, Ordering::Relaxed);
        if ticks > self.max_ticks.load(Ordering::Relaxed) {
            self.max_ticks.fetch_max(ticks, Ordering::Relaxed);
        }
    }

    /// Holds, maximum and 99th percentile so far.
    pub fn summary(&self) -> Summary {
        let counts: [u64; BUCKETS] =
            core::array::from_fn(|k| self.buckets[k].load(Ordering::Relaxed));
        let max_ticks = self.max_ticks.load(Ordering::Relaxed);
        let holds: u64 = counts.iter().sum();
        Summary {
            name: self.name,
            holds,
            max_ticks,
            p99_ticks: percentile_end(&counts, 99).min(max_ticks),
        }
    }

    /// Forgets every hold recorded so far (holds under way are recorded when they end).
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.max_ticks.store(0, Ordering::Relaxed);
    }
}

/// The end of the bucket holding the `pct`-th percentile of `counts` (0 when empty).
fn percentile_end(counts: &[u64; BUCKETS], pct: u64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    // The smallest count of holds that is at least pct% of them.
    let want = (total as u128 * pct as u128).div_ceil(100) as u64;
    let mut seen = 0;
    for (k, &n) in counts.iter().enumerate() {
        seen += n;
        if seen >= want {
            return bucket_end(k);
        }
    }
    bucket_end(BUCKETS - 1)
}

/// Every class registered so far, in the order of their first hold.
pub fn classes() -> impl Iterator<Item = &'static LockClass> {
    let n = NR_CLASSES.load(Ordering::Acquire).min(MAX_CLASSES);
    CLASSES[..n].iter().filter_map(|c| c.get().copied())
}

/// Resets every registered class.
pub fn reset_all() {
    for c in classes() {
        c.reset();
    }
}

/// A `&'static LockClass` named `$name`: a static made at the place the macro is used, so
/// every lock built by one use (say in a constructor) shares it.
#[macro_export]
macro_rules! lock_class {
    ($name:literal) => {{
        static CLASS: $crate::lockstat::LockClass = $crate::lockstat::LockClass::new($name);
        &CLASS
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(2), 2);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(4), 3);
        assert_eq!(bucket(1 << 20), 21);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for t in [0u64, 1, 2, 3, 7, 8, 1000, 1 << 37] {
            assert!(t <= bucket_end(bucket(t)), "{t}");
            if bucket(t) > 0 {
                assert!(t > bucket_end(bucket(t) - 1), "{t}");
            }
        }
    }

    #[test]
    fn microseconds_round_up() {
        assert_eq!(ticks_to_us_ceil(0, 1_000_000_000), 0);
        assert_eq!(ticks_to_us_ceil(1, 1_000_000_000), 1);
        assert_eq!(ticks_to_us_ceil(1000, 1_000_000_000), 1);
        assert_eq!(ticks_to_us_ceil(1001, 1_000_000_000), 2);
        assert_eq!(ticks_to_us_ceil(62_500, 62_500_000), 1000);
        assert_eq!(ticks_to_us_ceil(5, 0), 5_000_000);
    }

    static A: LockClass = LockClass::new("test_a");
    static B: LockClass = LockClass::new("test_b");

    #[test]
    fn p99_is_the_bucket_of_the_99th_percentile_capped_at_the_max() {
        // 990 short holds and 10 long ones: the 99th percentile is still short.
        for _ in 0..990 {
            A.record(5);
        }
        for _ in 0..10 {
            A.record(5000);
        }
        let s = A.summary();
        assert_eq!(s.holds, 1000);
        assert_eq!(s.max_ticks, 5000);
        assert_eq!(s.p99_ticks, bucket_end(bucket(5)));
        // One more long hold moves it into the long holds' bucket, capped at the max.
        A.record(5000);
        let s = A.summary();
        assert_eq!(s.p99_ticks, 5000);
        assert!(classes().any(|c| c.name() == "test_a"));
        A.reset();
        let s = A.summary();
        assert_eq!((s.holds, s.max_ticks, s.p99_ticks), (0, 0, 0));
    }

    #[test]
    fn a_class_registers_once() {
        B.record(1);
        B.record(2);
        assert_eq!(classes().filter(|c| c.name() == "test_b").count(), 1);
        assert_eq!(B.summary().holds, 2);
        let c: &'static LockClass = crate::lock_class!("test_macro");
        c.record(3);
        assert_eq!(c.name(), "test_macro");
        assert!(classes().any(|c| c.name() == "test_macro"));
    }
}
