//! The transport under the virtio-mem driver: the PCI transport, passed through, with the
//! configuration faults of fault injection (`inject config …`) applied where the driver reads
//! the configuration, so the driver's own checks meet them as they would meet a real device.
//!
//! - **torn**: when the plan says so at a read of the generation counter (the first look of a
//!   configuration read), the read's `requested_size` comes back changed and the next read of
//!   the counter (the read's last look) has moved on: exactly what a host updating the
//!   configuration mid-read looks like. The driver must notice and read again (and give up
//!   after a bounded number of attempts).
//! - **unaligned**: a read of `requested_size` comes back 4 KiB above the device's value, which
//!   is never a multiple of a block (blocks are at least 1 MiB); the driver must refuse it.
//!
//! - **MSI-X vectors**: when given [`Vectors`] ([`InjectTransport::with_vectors`]), each
//!   `queue_set` first programs `msix_config` and the queue's `queue_msix_vector` (after
//!   feature negotiation, before the queue is enabled: see `msix`).
//!
//! Everything else is forwarded unchanged. State: an offset added to the device's
//! generation (it only grows, so the counter never appears to go back) and whether a read is
//! being torn. Only the driver, owned by one thread at a time, calls it (see `device`).

use crate::kernel::inject;
use alloc::sync::Arc;
use core::cell::Cell;
use hotmem::inject::ConfigFault;
use hotmem_drivers::virtio_msix::Vectors;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Byte offset of `requested_size` in `struct virtio_mem_config` (virtio spec 5.15.4: le64
/// block_size, le16 node_id and 6 bytes of padding, le64 addr, region_size,
/// usable_region_size, plugged_size, requested_size). The driver reads it as two u32; the
/// faults change the low half.
const REQUESTED_SIZE_LO: usize = 48;
/// What a torn read's `requested_size` is off by: a plausible, block-aligned wrong size.
const TORN_DELTA: u32 = 2 << 20;
/// What an unaligned `requested_size` is off by: below any block size.
const UNALIGNED_DELTA: u32 = 4 << 10;

/// `T` with configuration faults injected (see the module doc).
pub(super) struct InjectTransport<T> {
    inner: T,
    generation_offset: Cell<u32>,
    tearing: Cell<bool>,
    vectors: Option<Arc<Vectors>>,
}

impl<T: Transport> InjectTransport<T> {
    /// Wraps `inner`; nothing is injected until the plan says so.
    pub(super) fn new(inner: T) -> Self {
        InjectTransport {
            inner,
            generation_offset: Cell::new(0),
            tearing: Cell::new(false),
            vectors: None,
        }
    }

    /// The same transport, programming `vectors` before each queue is enabled.
    pub(super) fn with_vectors(mut self, vectors: Option<Arc<Vectors>>) -> Self {
        self.vectors = vectors;
        self
    }
}

impl<T: Transport> Transport for InjectTransport<T> {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.inner.write_driver_features(driver_features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.inner.notify(queue)
    }
    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        if let Some(v) = &self.vectors {
            v.program(queue);
        }
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }

    fn read_config_generation(&self) -> u32 {
        if self.tearing.replace(false) {
            // The last look of a torn read: the host has moved on.
            self.generation_offset
                .set(self.generation_offset.get().wrapping_add(1));
        } else if inject::config(ConfigFault::Torn) {
            self.tearing.set(true);
        }
        self.inner
            .read_config_generation()
            .wrapping_add(self.generation_offset.get())
    }

    fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> Result<V> {
        let mut value: V = self.inner.read_config_space(offset)?;
        if offset == REQUESTED_SIZE_LO {
            if let Ok(lo) = <&mut [u8; 4]>::try_from(value.as_mut_bytes()) {
                let was = u32::from_le_bytes(*lo);
                if self.tearing.get() {
                    *lo = (was ^ TORN_DELTA).to_le_bytes();
                } else if inject::config(ConfigFault::Unaligned) {
                    *lo = was.wrapping_add(UNALIGNED_DELTA).to_le_bytes();
                }
            }
        }
        Ok(value)
    }

    fn write_config_space<V: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: V,
    ) -> Result<()> {
        self.inner.write_config_space(offset, value)
    }
}
