//! Per-CPU basics: identity (MPIDR, index in TPIDR_EL1), interrupt masking, an IRQ-safe
//! spin lock that measures how long it is held, waiting.
//!
//! Hold times: every [`IrqSpinLock`] belongs to a [`LockClass`] (named with
//! [`lock_class!`](crate::lock_class) and [`IrqSpinLock::with_class`]; `"other"` without).
//! The holder notes the counter once it has the lock, and the release records the ticks
//! since then in the class ([`crate::lockstat`]), or in the one its guard was given
//! ([`IrqSpinGuard::count_in`]). IRQs are masked from before the lock is taken until it is
//! released, so the hold is the masked time minus the spinning. A hold that crosses a
//! context switch ([`IrqSpinGuard::into_raw`], [`IrqSpinLock::adopt`]) is one hold.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, Writeable, DAIF, MPIDR_EL1, TPIDR_EL1};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::lockstat::LockClass;
use crate::timer;

/// The class of locks made with [`IrqSpinLock::new`].
static OTHER: LockClass = LockClass::new("other");

/// MPIDR affinity bits (Aff3, Aff2, Aff1, Aff0): the value the DT's cpu `reg` holds.
pub fn mpidr_affinity() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// Records this CPU's index (its position in the DT's cpu list).
pub fn set_index(idx: usize) {
    TPIDR_EL1.set(idx as u64);
}

/// This CPU's index (0 on the boot CPU).
pub fn index() -> usize {
    TPIDR_EL1.get() as usize
}

/// Masks IRQs on this CPU and returns the previous DAIF value.
pub fn irq_save() -> u64 {
    let daif = DAIF.get();
    // SAFETY: setting the I bit (DAIFSet #2) only masks IRQs on this CPU.
    unsafe { core::arch::asm!("msr daifset, #2", options(nomem, nostack)) };
    daif
}

/// Restores a DAIF value from [`irq_save`].
pub fn irq_restore(daif: u64) {
    DAIF.set(daif);
}

/// DAIF.I: set while IRQs are masked (also the bit of SPSR_EL1 for the interrupted context).
pub const DAIF_I: u64 = 1 << 7;

/// Unmasks IRQs on this CPU.
pub fn irq_enable() {
    // SAFETY: clearing the I bit only unmasks IRQs; the vectors and GIC are set up first.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nomem, nostack)) };
}

/// Whether IRQs are unmasked on this CPU.
pub fn irqs_enabled() -> bool {
    DAIF.get() & DAIF_I == 0
}

/// Waits for an interrupt (returns at once if one is pending).
pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
}

/// Instruction synchronization barrier (full system).
pub fn isb() {
    barrier::isb(barrier::SY);
}

/// Cleans the cache lines of `[va, va + len)` to the point of coherency, for data read by a
/// CPU whose MMU and caches are still off.
pub fn clean_dcache_range(va: u64, len: u64) {
    let mut line = va & !63;
    while line < va + len {
        // SAFETY: `dc cvac` on a mapped address only writes back a cache line.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) line, options(nostack)) };
        line += 64;
    }
    barrier::dsb(barrier::SY);
}

/// A spin lock that masks IRQs on the local CPU while held, so it can be taken from both
/// thread and interrupt context without deadlocking against itself. Its holds are measured
/// in its [`LockClass`] (see the module doc).
pub struct IrqSpinLock<T> {
    locked: AtomicBool,
    class: &'static LockClass,
    /// Counter value when the current holder took the lock (written only by the holder).
    since: AtomicU64,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialised by `locked` (acquire/release), like a mutex.
unsafe impl<T: Send> Sync for IrqSpinLock<T> {}
// SAFETY: the lock owns its data.
unsafe impl<T: Send> Send for IrqSpinLock<T> {}

/// Holder of an [`IrqSpinLock`]: derefs to the data; dropping it unlocks and restores the
/// CPU's previous IRQ mask.
pub struct IrqSpinGuard<'a, T> {
    lock: &'a IrqSpinLock<T>,
    daif: u64,
    /// Where this hold is recorded: the lock's class unless [`IrqSpinGuard::count_in`].
    class: &'static LockClass,
}

impl<T> IrqSpinLock<T> {
    /// An unlocked lock holding `v`, in the class `"other"`.
    pub const fn new(v: T) -> Self {
        IrqSpinLock {
            locked: AtomicBool::new(false),
            class: &OTHER,
            since: AtomicU64::new(0),
            data: UnsafeCell::new(v),
        }
    }

    /// The same lock with its holds counted in `class` (see
    /// [`lock_class!`](crate::lock_class)): `IrqSpinLock::new(v).with_class(lock_class!("mm"))`.
    pub const fn with_class(mut self, class: &'static LockClass) -> Self {
        self.class = class;
        self
    }

    /// Masks IRQs on this CPU, then spins until the lock is free.
    pub fn lock(&self) -> IrqSpinGuard<'_, T> {
        let daif = irq_save();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        self.since.store(timer::counter(), Ordering::Relaxed);
        IrqSpinGuard {
            lock: self,
            daif,
            class: self.class,
        }
    }

    /// Takes the lock if it is free (IRQs masked while held); `None`, with the IRQ mask
    /// unchanged, if it is not.
    pub fn try_lock(&self) -> Option<IrqSpinGuard<'_, T>> {
        let daif = irq_save();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.since.store(timer::counter(), Ordering::Relaxed);
            Some(IrqSpinGuard {
                lock: self,
                daif,
                class: self.class,
            })
        } else {
            irq_restore(daif);
            None
        }
    }

    /// Forcibly releases the lock (panic path only: the holder will never run again).
    ///
    /// # Safety
    /// No guard of this lock may be used afterwards.
    pub unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl<'a, T> IrqSpinGuard<'a, T> {
    /// Records this hold in `class` instead of the lock's own: for a hold known to be
    /// long that is not on a run-time path (a diagnostic walk), so that the lock's figures
    /// show the run-time holds and this one is still shown under its own name.
    pub fn count_in(&mut self, class: &'static LockClass) {
        self.class = class;
    }

    /// Keeps the lock held but forgets the guard (IRQs stay masked); returns the DAIF value
    /// the guard would have restored. Used by the scheduler, which holds its lock across a
    /// context switch and releases it on the other side with [`IrqSpinLock::adopt`].
    pub fn into_raw(self) -> u64 {
        let daif = self.daif;
        core::mem::forget(self);
        daif
    }
}

impl<T> IrqSpinLock<T> {
    /// A guard for a lock that this CPU holds without one (after [`IrqSpinGuard::into_raw`],
    /// possibly by another thread on this CPU); dropping it restores `daif`.
    ///
    /// # Safety
    /// The lock must be held, its previous guard turned into raw with `into_raw`, and no
    /// other guard of it may exist; IRQs must be masked on this CPU.
    pub unsafe fn adopt(&self, daif: u64) -> IrqSpinGuard<'_, T> {
        debug_assert!(self.locked.load(Ordering::Relaxed));
        IrqSpinGuard {
            lock: self,
            daif,
            class: self.class,
        }
    }
}

impl<T> Deref for IrqSpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while `locked` is held by us.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for IrqSpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while `locked` is held by us, and `&mut self`
        // makes this the only reference derived from it.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for IrqSpinGuard<'_, T> {
    fn drop(&mut self) {
        let held = timer::counter().wrapping_sub(self.lock.since.load(Ordering::Relaxed));
        self.lock.locked.store(false, Ordering::Release);
        irq_restore(self.daif);
        self.class.record(held);
    }
}

/// Physical address bits this CPU implements (ID_AA64MMFR0_EL1.PARange).
pub fn pa_bits() -> u32 {
    use aarch64_cpu::registers::ID_AA64MMFR0_EL1;
    crate::layout::parange_bits(ID_AA64MMFR0_EL1.get() & 0xf)
}
