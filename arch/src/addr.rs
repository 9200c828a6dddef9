//! Addresses and physical ranges: the words every crate of the kernel uses for "where in
//! memory", defined here at the bottom of the crate stack so that the device tree, the
//! drivers, the hotplug policy, the memory model and the page-table code name them alike.
//!
//! - [`PhysAddr`]: a physical byte address. The memory model re-exports it (as
//!   `hotmem::mm::PhysAddr`) and turns it into its page frame numbers with `Pfn::down` /
//!   `Pfn::up`. `Pfn` stays in the model: most of what it does is about the model's
//!   sections and subsections, and those methods could not follow it here. So the
//!   conversion lives with the type it produces rather than as a method of this one.
//! - [`VirtAddr`]: a virtual byte address, where the page-table walker places a mapping.
//! - [`PhysRange`]: the half-open byte range `[base, base + size)`: RAM and reservations
//!   from the device tree, device registers, PCI windows, a virtio-mem region and the units
//!   the hotplug policy plugs, what the linear map maps.
//!
//! `PhysRange`'s fields are plain `u64` bytes, not a [`PhysAddr`]: the range as a whole is
//! the typed value, and nearly every user computes with the bytes inside it (unit and block
//! offsets, section numbers, alignment, comparison with a device's `u64` fields), so a
//! wrapped `base` would only put `.0` at those uses. It also keeps a range built as
//! `PhysRange { base, size }` the same expression it was before this type existed.
//!
//! Overflow: a value does not promise that `base + size` fits in 64 bits, because the
//! device tree's device ranges are kept as the tree gives them. [`PhysRange::new`] is the
//! checked constructor (the end must fit). [`PhysRange::end`] saturates at `u64::MAX`, and
//! [`contains`](PhysRange::contains) and [`overlaps`](PhysRange::overlaps) use that end,
//! so a range that would pass 2^64 reaches at most byte `u64::MAX - 1`: the same cut the
//! device tree applies to memory ranges.
//!
//! Plain values: no state, no locks, no hardware; host-tested below.
#![forbid(unsafe_code)]

/// A physical address in bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(pub u64);

/// A virtual address in bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(pub u64);

/// A half-open physical range `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhysRange {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl PhysRange {
    /// `[base, base + size)`, or `None` when the end does not fit in 64 bits.
    pub const fn new(base: u64, size: u64) -> Option<PhysRange> {
        match base.checked_add(size) {
            Some(_) => Some(PhysRange { base, size }),
            None => None,
        }
    }

    /// One past the last byte (`u64::MAX` for a range that would pass it).
    pub const fn end(self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(self) -> bool {
        self.size == 0
    }

    /// Whether the byte at `addr` lies inside.
    pub const fn contains(self, addr: u64) -> bool {
        self.base <= addr && addr < self.end()
    }

    /// Whether the two ranges share a byte (an empty range shares none).
    pub const fn overlaps(self, other: PhysRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.base < other.end() && other.base < self.end()
    }
}

/// `Debug` and `Display` for single-field newtypes (`struct T(pub X)`), each from one format
/// string applied to the field: `fmt_newtype! { T: debug "T({:#x})", display "{:#x}"; }`. Used
/// for the address types here and the page, section and node numbers of the memory model.
#[macro_export]
macro_rules! fmt_newtype {
    ($($ty:ident: debug $debug:literal, display $display:literal;)*) => {$(
        impl core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, $debug, self.0)
            }
        }
        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, $display, self.0)
            }
        }
    )*};
}

fmt_newtype! {
    PhysAddr: debug "PhysAddr({:#x})", display "{:#x}";
    VirtAddr: debug "VirtAddr({:#x})", display "{:#x}";
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn r(base: u64, size: u64) -> PhysRange {
        PhysRange { base, size }
    }

    #[test]
    fn checked_construction() {
        assert_eq!(PhysRange::new(GIB, GIB), Some(r(GIB, GIB)));
        assert_eq!(
            PhysRange::new(u64::MAX - 4096, 4096),
            Some(r(u64::MAX - 4096, 4096))
        );
        assert_eq!(PhysRange::new(u64::MAX - 4096, 4097), None);
        assert_eq!(PhysRange::new(u64::MAX, 0), Some(r(u64::MAX, 0)));
        assert_eq!(PhysRange::new(1, u64::MAX), None);
    }

    #[test]
    fn end_saturates() {
        assert_eq!(r(GIB, GIB).end(), 2 * GIB);
        assert_eq!(r(u64::MAX - 1, 8).end(), u64::MAX);
        assert!(r(GIB, 0).is_empty());
        assert!(!r(GIB, 1).is_empty());
    }

    #[test]
    fn contains_is_half_open() {
        let a = r(GIB, 4096);
        assert!(!a.contains(GIB - 1));
        assert!(a.contains(GIB));
        assert!(a.contains(GIB + 4095));
        assert!(!a.contains(GIB + 4096));
        assert!(!r(GIB, 0).contains(GIB), "an empty range holds nothing");
        // A range built past 2^64 stops below u64::MAX.
        let top = r(u64::MAX - 1, 8);
        assert!(top.contains(u64::MAX - 1));
        assert!(!top.contains(u64::MAX));
    }

    #[test]
    fn overlaps_is_symmetric_and_half_open() {
        let a = r(GIB, GIB);
        let cases = [
            (r(0, GIB), false),          // touches below
            (r(2 * GIB, GIB), false),    // touches above
            (r(GIB - 1, 2), true),       // straddles the base
            (r(2 * GIB - 1, 2), true),   // straddles the end
            (r(GIB + 4096, 4096), true), // inside
            (r(0, 4 * GIB), true),       // around
            (r(GIB + 4096, 0), false),   // empty inside
            (r(u64::MAX - 1, 8), false), // saturated end, far above
            (r(GIB, u64::MAX), true),    // saturated end, same base
        ];
        for (b, want) in cases {
            assert_eq!(a.overlaps(b), want, "{a:?} vs {b:?}");
            assert_eq!(b.overlaps(a), want, "{b:?} vs {a:?}");
        }
        assert!(!r(GIB, 0).overlaps(r(GIB, 0)));
    }

    #[test]
    fn formats() {
        assert_eq!(
            format!("{:?}", PhysAddr(0x4000_0000)),
            "PhysAddr(0x40000000)"
        );
        assert_eq!(format!("{}", PhysAddr(0x4000_0000)), "0x40000000");
        assert_eq!(
            format!("{:?}", VirtAddr(0xffff_0000_4000_0000)),
            "VirtAddr(0xffff000040000000)"
        );
        assert_eq!(format!("{}", VirtAddr(0x1000)), "0x1000");
        assert_eq!(
            format!("{:?}", r(16, 32)),
            "PhysRange { base: 16, size: 32 }"
        );
    }
}
