//! Interrupt handler registry: drivers register a handler per GIC INTID; the IRQ vector
//! acknowledges the interrupt at the GIC, calls the handler, and signals end of interrupt.
//!
//! The table is lock-free (one `AtomicUsize` per INTID holding a `fn` pointer) so the IRQ
//! path never takes a lock. Registration happens before the INTID is enabled at the GIC;
//! re-registering replaces the handler. Handlers run with IRQs masked on the current CPU and
//! must not block.
//!
//! INTIDs with a slot: SGIs, PPIs and SPIs (0..[`MAX_INTID`]) and the first [`MAX_LPIS`]
//! LPIs (from [`FIRST_LPI`]); each slot also counts how often its INTID was dispatched
//! (with or without a handler), summed over the CPUs, for the `irqs` listing.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// INTIDs 0..MAX_INTID are SGIs (0-15), PPIs (16-31) and SPIs (32-1019).
pub const MAX_INTID: usize = 1024;

/// First LPI INTID (GICv3).
pub const FIRST_LPI: u32 = 8192;
/// LPIs with a slot: `FIRST_LPI .. FIRST_LPI + MAX_LPIS`.
pub const MAX_LPIS: usize = 1024;
const SLOTS: usize = MAX_INTID + MAX_LPIS;

/// A handler gets the INTID it was registered for.
pub type Handler = fn(intid: u32);

static HANDLERS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static COUNTS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// The slot of `intid`, if it has one.
fn slot(intid: u32) -> Option<usize> {
    let i = intid as usize;
    match intid.checked_sub(FIRST_LPI) {
        Some(lpi) if (lpi as usize) < MAX_LPIS => Some(MAX_INTID + lpi as usize),
        Some(_) => None,
        None => (i < MAX_INTID).then_some(i),
    }
}
static SPURIOUS: AtomicU64 = AtomicU64::new(0);
static UNHANDLED: AtomicU64 = AtomicU64::new(0);

/// Why a handler could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqError {
    /// The INTID is outside the table.
    BadIntid(u32),
    /// The INTID already has a handler ([`register_if_free`]).
    Taken(u32),
}

/// Registers `handler` for `intid`.
pub fn register(intid: u32, handler: Handler) -> Result<(), IrqError> {
    let slot = slot(intid).ok_or(IrqError::BadIntid(intid))?;
    HANDLERS[slot].store(handler as usize, Ordering::Release);
    Ok(())
}

/// Registers `handler` for `intid` only if it has none: a line shared with another source
/// (a device behind a bridge shares its INTx with the bridge's) keeps its handler.
pub fn register_if_free(intid: u32, handler: Handler) -> Result<(), IrqError> {
    let slot = slot(intid).ok_or(IrqError::BadIntid(intid))?;
    HANDLERS[slot]
        .compare_exchange(0, handler as usize, Ordering::AcqRel, Ordering::Acquire)
        .map(drop)
        .map_err(|_| IrqError::Taken(intid))
}

/// Removes the handler of `intid`.
pub fn unregister(intid: u32) {
    if let Some(slot) = slot(intid) {
        HANDLERS[slot].store(0, Ordering::Release);
    }
}

/// Calls the handler of `intid`; returns false (and counts it) when none is registered.
pub fn dispatch(intid: u32) -> bool {
    let slot = slot(intid);
    if let Some(s) = slot {
        COUNTS[s].fetch_add(1, Ordering::Relaxed);
    }
    let f = slot.map_or(0, |s| HANDLERS[s].load(Ordering::Acquire));
    if f == 0 {
        UNHANDLED.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    // A non-zero slot only ever holds a `Handler` stored by `register`; a `fn` pointer
    // round-trips through `usize` on every target we build for.
    let handler: Handler = unsafe_fn_from_usize(f);
    handler(intid);
    true
}

fn unsafe_fn_from_usize(f: usize) -> Handler {
    // SAFETY: `f` was produced by `handler as usize` in `register` from a valid `Handler`,
    // and function pointers and `usize` have the same size on all supported targets.
    unsafe { core::mem::transmute::<usize, Handler>(f) }
}

/// How often `intid` was dispatched (0 for an INTID without a slot).
pub fn count(intid: u32) -> u64 {
    slot(intid).map_or(0, |s| COUNTS[s].load(Ordering::Relaxed))
}

/// Counts a spurious acknowledge (INTID 1020-1023).
pub fn note_spurious() {
    SPURIOUS.fetch_add(1, Ordering::Relaxed);
}

/// (spurious, unhandled) counters.
pub fn counters() -> (u64, u64) {
    (
        SPURIOUS.load(Ordering::Relaxed),
        UNHANDLED.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    static SEEN: AtomicU32 = AtomicU32::new(0);
    fn h(intid: u32) {
        SEEN.store(intid, Ordering::SeqCst);
    }

    #[test]
    fn register_dispatch() {
        assert!(!dispatch(77));
        register(77, h).unwrap();
        assert!(dispatch(77));
        assert_eq!(SEEN.load(Ordering::SeqCst), 77);
        unregister(77);
        assert!(!dispatch(77));
        assert_eq!(register(5000, h), Err(IrqError::BadIntid(5000)));
        assert_eq!(count(77), 3);
        // LPIs have slots from 8192 on.
        let lpi = FIRST_LPI + 1;
        register(lpi, h).unwrap();
        assert!(dispatch(lpi));
        assert_eq!((SEEN.load(Ordering::SeqCst), count(lpi)), (lpi, 1));
        let past = FIRST_LPI + MAX_LPIS as u32;
        assert_eq!(register(past, h), Err(IrqError::BadIntid(past)));
        assert!(!dispatch(past));
        assert_eq!(count(past), 0);
    }

    static OTHER_SEEN: AtomicUsize = AtomicUsize::new(0);
    fn other(intid: u32) {
        OTHER_SEEN.store(intid as usize, Ordering::SeqCst);
    }

    #[test]
    fn a_taken_line_keeps_its_handler() {
        register(78, h).unwrap();
        assert_eq!(register_if_free(78, other), Err(IrqError::Taken(78)));
        assert!(dispatch(78));
        assert_eq!(
            OTHER_SEEN.load(Ordering::SeqCst),
            0,
            "the first handler ran"
        );
        unregister(78);
        assert_eq!(register_if_free(78, other), Ok(()));
        unregister(78);
    }
}
