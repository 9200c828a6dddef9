//! Hotplug ports at run time: their slot registers, and the functions behind them coming
//! and going. The slot logic itself is the pure machine of `slot.rs`; this is the config
//! access it needs and the bookkeeping of [`PciHost`].
//!
//! - Slot Status is cleared with a 16-bit write of the bits to clear (RW1C) that leaves Slot
//!   Control unwritten: a Slot Control write is a command and raises Command Completed.
//! - A device that appears behind a port ([`PciHost::scan_slot`]) is enumerated on the
//!   port's secondary bus only; its BARs come from the port's windows (the reservation made
//!   at boot), its INTx is swizzled through the port. A bridge behind a hotplug slot is not
//!   supported: it is listed, left disabled, and logged.
//! - When the slot empties ([`PciHost::clear_slot`]) the records of everything behind the
//!   port are dropped and the port's windows are whole again for the next device.

use alloc::vec::Vec;
use log::{error, info};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, HeaderType};

use super::{slot, BarAllocator, PciError, PciFunction, PciHost, WritableClone};

impl<C: ConfigurationAccess + WritableClone> PciHost<C> {
    /// The hotplug ports found by [`PciHost::enumerate`] (forwarding, hotplug-capable).
    pub fn hotplug_ports(&self) -> Vec<DeviceFunction> {
        self.bridges
            .iter()
            .filter(|b| b.hotplug.is_some())
            .map(|b| b.df)
            .collect()
    }

    fn slot_offset(&self, port: DeviceFunction) -> Option<u8> {
        let b = self.bridges.iter().find(|b| b.df == port)?;
        Some(b.hotplug?.slot_control())
    }

    /// Slot Control and Slot Status of a hotplug port.
    pub fn slot_registers(&self, port: DeviceFunction) -> Option<(u16, u16)> {
        let at = self.slot_offset(port)?;
        let v = self.reader.read_word(port, at);
        Some((v as u16, (v >> 16) as u16))
    }

    /// Clears Slot Status event bits (RW1C), without writing Slot Control.
    pub fn clear_slot_status(&mut self, port: DeviceFunction, bits: u16) {
        if let Some(at) = self.slot_offset(port) {
            self.writer
                .write_u16(port, at + 2, bits & slot::status::EVENTS);
        }
    }

    /// Writes Slot Control (a command: the port answers with Command Completed).
    pub fn write_slot_control(&mut self, port: DeviceFunction, value: u16) {
        if let Some(at) = self.slot_offset(port) {
            self.writer.write_u16(port, at, value);
        }
    }

    /// The bridges from the root bus down to `port` (inclusive), by the parent links.
    fn chain_to(&self, port: DeviceFunction) -> Vec<DeviceFunction> {
        let mut chain = alloc::vec![port];
        let mut at = port;
        while let Some(parent) = self
            .functions
            .iter()
            .find(|f| f.df == at)
            .and_then(|f| f.parent)
        {
            if chain.contains(&parent) || chain.len() > super::MAX_BRIDGE_DEPTH {
                break;
            }
            chain.push(parent);
            at = parent;
        }
        chain.reverse();
        chain
    }

    /// Enumerates what appeared behind hotplug `port`: each function on its secondary bus is
    /// recorded and, when it is a plain function, given BARs from the port's windows and
    /// enabled. Returns the records of the functions found (the enabled ones have
    /// [`PciHost::bars`]).
    pub fn scan_slot(&mut self, port: DeviceFunction) -> Result<Vec<PciFunction>, PciError> {
        let secondary = self
            .bridges
            .iter()
            .find(|b| b.df == port && b.hotplug.is_some())
            .map(|b| b.buses.secondary)
            .ok_or(PciError::NoBridge(port))?;
        let chain = self.chain_to(port);
        let found: Vec<_> = self.root.enumerate_bus(secondary).collect();
        let mut records = Vec::with_capacity(found.len());
        for (df, dfi) in found {
            let f = self.describe(df, &dfi, &chain);
            info!(
                "pci: {df} {:04x}:{:04x} behind hotplug port {port}: virtio {:?} intid {:?}",
                f.vendor_id, f.device_id, f.virtio, f.intid
            );
            if f.header_type == HeaderType::Standard {
                if let Err(e) = self.setup_bars(df) {
                    error!("pci: {e}; function disabled");
                }
            } else {
                error!(
                    "pci: {df}: {:?} behind a hotplug slot is not supported; disabled",
                    f.header_type
                );
            }
            self.functions.push(f.clone());
            records.push(f);
        }
        Ok(records)
    }

    /// Forgets everything behind hotplug `port` (the slot is empty now): records and BAR
    /// assignments of its buses go, and its windows are whole again.
    pub fn clear_slot(&mut self, port: DeviceFunction) {
        let Some(b) = self.bridges.iter_mut().find(|b| b.df == port) else {
            return;
        };
        let (first, last) = (b.buses.secondary, b.buses.subordinate);
        b.allocator = BarAllocator::new(&b.windows);
        let behind = |df: &DeviceFunction| (first..=last).contains(&df.bus);
        self.functions.retain(|f| !behind(&f.df));
        self.assigned.retain(|(df, _)| !behind(df));
    }
}
