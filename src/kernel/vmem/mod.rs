//! Kernel glue of virtio-mem: one [`hotmem::vmem::Vmem`] policy per device, driven by the
//! worker task against the real driver and the real memory model.
//!
//! Rooms, bottom up (each imports only those before it):
//! - `hal`: the virtio `Hal` (DMA memory from the model, MMIO mappings);
//! - `memory`: the policy's `HotplugMemory` over the model and the linear map, and the boot
//!   options that shape it;
//! - `transport`: the PCI transport under the driver, with fault injection's torn
//!   configuration reads;
//! - `device`: the device list, the interrupt handler, the convergence work and the status
//!   snapshot for `vmem`;
//! - `probe`: PCI bring-up, which fills the device list.
//!
//! Flow: an interrupt (or a back-off deadline, or memory freed by a command) schedules the
//! work; the worker acknowledges the interrupts and steps every device's policy until it
//! is idle or waits for a time; after the pass the status snapshot is replaced and only
//! then is a finished resize logged, so whoever waits for the `resized to` line finds the
//! new state in `vmem`.
//!
//! Locks, in the order a pass takes them: `DEVICES` only to take the list out and put it
//! back (`device`); then, per policy call, the memory-model lock, the page-table lock while
//! mapping (before or after the model's lock, never inside it) and the migration locks
//! (`migrate`); `STATUS` only to replace the snapshot. No interrupt handler takes any of
//! them.

mod device;
mod hal;
mod memory;
mod probe;
mod transport;

pub use device::{status, CONVERGE};
pub use memory::configure;
pub use probe::probe;
