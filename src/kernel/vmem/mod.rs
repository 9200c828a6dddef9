//! Kernel glue of virtio-mem: one [`hotmem::vmem::Vmem`] policy per device, driven by the
//! worker task against the real driver and the real memory model.
//!
//! Rooms, bottom up (each imports only those before it):
//! - `hal`: the virtio `Hal` (DMA memory from the model, MMIO mappings);
//! - `memory`: the policy's `HotplugMemory` over the model and the linear map, and the boot
//!   options that shape it;
//! - `transport`: the PCI transport under the driver, with fault injection's torn
//!   configuration reads;
//! - `msix`: MSI-X or INTx for each device (vectors, the handler's half, configuration
//!   changes without the ISR);
//! - `device`: the device list, the live configuration readers and interrupt counts, the
//!   interrupt handler, the convergence work, the status snapshots for `vmem`, and the
//!   worker's side of `vmem wait` and `vmem state`;
//! - `probe`: PCI bring-up, which fills the device list;
//! - `slots`: PCIe native hotplug: each hotplug port's slot machine, devices added to and
//!   released from the device list at run time.
//!
//! Flow: an interrupt (or a back-off deadline, or memory freed by a command) schedules the
//! work; the worker acknowledges the interrupts and steps every device's policy until it
//! is idle or waits for a time, publishing snapshots at a bounded rate on the way and
//! answering a `vmem state` query between steps; after the pass the final snapshots are
//! published and only then is a finished resize logged, so whoever waits for the
//! `resized to` line finds the new state in `vmem`.
//!
//! Locks, in the order a pass takes them: `DEVICES` only to take the list out and put it
//! back (`device`); then, per policy call, the memory-model lock, the page-table lock while
//! mapping (before or after the model's lock, never inside it) and the migration locks
//! (`migrate`); `STATUS` only to swap the snapshots and `QUERY` only to copy or store a
//! query, both between policy steps. No interrupt handler takes any of them (the handler
//! counts interrupts in atomics and wakes the worker).

mod device;
mod hal;
mod memory;
mod msix;
mod probe;
mod slots;
mod transport;

pub use device::{query_state, records, wait, CONVERGE};
pub use memory::configure;
pub use slots::SLOTS;

/// Finds and starts every virtio-mem device behind the DT's PCIe host bridge, then hands
/// the bridge to the hotplug slots.
pub fn probe(info: &hotmem::dt::BootInfo, pa_bits: u32) {
    if let Some(probed) = probe::probe(info, pa_bits) {
        slots::start(probed);
    }
}
