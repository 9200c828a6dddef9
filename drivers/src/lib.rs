//! Device drivers for hotmem: the PL011 UART, the PCI host bridge (with MSI-X), virtio-mem
//! and the MSI-X vectors of virtio-pci devices.
//!
//! Drivers know their device and nothing of the kernel's policy: they take virtual
//! addresses and callbacks from the kernel and report what the device said.
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

extern crate alloc;

pub mod pci;
pub mod pl011;
pub mod virtio_mem;
pub mod virtio_msix;

#[cfg(test)]
mod test_hal;
