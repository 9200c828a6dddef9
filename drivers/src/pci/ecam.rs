//! ECAM config access: the one place in the PCI driver that dereferences MMIO.
//!
//! [`Ecam`] is a base pointer and the bus range its mapping covers; config word
//! `(bus, device, function, reg)` sits at `(bus - bus_start) << 20 | device << 15 |
//! function << 12 | reg` (PCIe ECAM layout, 4 KiB per function). Every access is a single
//! aligned volatile 32-bit load or store. An address outside the mapping, an invalid
//! device/function or a misaligned register reads as all ones (an absent function) and a
//! write there is dropped, so untrusted bus numbers never reach memory outside the
//! mapping. The address contract is on [`Ecam::new`], which is `unsafe`.

use core::ptr::NonNull;

use log::debug;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

use super::PciError;

/// ECAM config space per bus (32 devices x 8 functions x 4 KiB).
pub const ECAM_BUS_BYTES: usize = 1 << 20;

/// Memory-mapped ECAM config space covering `nr_buses` buses from `bus_start`. Accesses outside
/// it read as all ones (like an absent function) and writes there are dropped.
#[derive(Debug)]
pub struct Ecam {
    base: NonNull<u8>,
    bus_start: u8,
    /// Buses the mapping covers, from `bus_start`.
    pub(super) nr_buses: usize,
}

// SAFETY: `Ecam` is a pointer to device memory that any CPU may access; it has no thread
// affinity. Exclusive access for writes is enforced by `&mut self` in `ConfigurationAccess`.
unsafe impl Send for Ecam {}

impl Ecam {
    /// Wraps an ECAM mapping of `size_bytes` whose first byte is the config space of
    /// `bus_start:00.0`. Buses beyond the mapping (or beyond bus 255) are treated as empty.
    ///
    /// # Safety
    ///
    /// `base .. base + size_bytes` must be mapped as Device memory onto the host bridge's ECAM
    /// region, stay mapped for as long as this value (and any `unsafe_clone` of it) lives, and
    /// not be accessed through Rust references.
    pub unsafe fn new(base: *mut u8, size_bytes: usize, bus_start: u8) -> Result<Self, PciError> {
        let base = NonNull::new(base).ok_or(PciError::InvalidEcam)?;
        if base.as_ptr() as usize % 4 != 0 {
            return Err(PciError::InvalidEcam);
        }
        let nr_buses = (size_bytes / ECAM_BUS_BYTES).min(256 - usize::from(bus_start));
        Ok(Self {
            base,
            bus_start,
            nr_buses,
        })
    }

    /// Byte offset of a config word, if it is inside the mapping.
    fn offset(&self, df: DeviceFunction, reg: u8) -> Option<usize> {
        let bus_index = usize::from(df.bus.checked_sub(self.bus_start)?);
        (bus_index < self.nr_buses && df.valid() && reg % 4 == 0).then(|| {
            (bus_index << 20)
                | (usize::from(df.device) << 15)
                | (usize::from(df.function) << 12)
                | usize::from(reg)
        })
    }
}

// SAFETY: every access is one aligned volatile 32-bit load or store of its own, with no state
// kept between accesses, so clones may write as long as accesses do not overlap.
unsafe impl super::WritableClone for Ecam {
    fn write_u16(&mut self, df: DeviceFunction, reg: u8, value: u16) {
        let Some(offset) = self.offset(df, reg & !3).filter(|_| reg % 2 == 0) else {
            debug!("pci: dropped config write {df} +{reg:#x}");
            return;
        };
        let offset = offset + usize::from(reg & 2);
        // SAFETY: as in `read_word`: the dword is in bounds and mapped Device memory without
        // references; `offset` is 2-byte aligned inside it, so a volatile u16 store is one
        // 16-bit config write.
        unsafe {
            self.base
                .as_ptr()
                .add(offset)
                .cast::<u16>()
                .write_volatile(value)
        }
    }
}

impl ConfigurationAccess for Ecam {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        let Some(offset) = self.offset(df, reg) else {
            return u32::MAX;
        };
        // SAFETY: 1. `offset` < nr_buses MiB <= the mapped size (`offset()`), and it is 4-byte
        // aligned as is `base`, so the pointer is in bounds and aligned for a u32.
        // 2. `new`'s contract: the range is mapped Device memory not aliased by references, so
        // a volatile 32-bit load is a single config read.
        unsafe { self.base.as_ptr().add(offset).cast::<u32>().read_volatile() }
    }

    fn write_word(&mut self, df: DeviceFunction, reg: u8, data: u32) {
        let Some(offset) = self.offset(df, reg) else {
            debug!("pci: dropped config write {df} +{reg:#x}");
            return;
        };
        // SAFETY: as in `read_word`: in bounds, aligned, mapped Device memory without references.
        unsafe {
            self.base
                .as_ptr()
                .add(offset)
                .cast::<u32>()
                .write_volatile(data)
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        Self {
            base: self.base,
            bus_start: self.bus_start,
            nr_buses: self.nr_buses,
        }
    }
}
