//! Capability lists (PCI Local Bus 3.0 §6.7): the walk, the PCI Express capability's slot
//! registers (PCIe Base 4.0 §7.5.3) and QEMU's resource-reserve hint on its bridges.
//!
//! The list is untrusted: the walk follows `next` pointers only inside the device-specific
//! part of config space (0x40..0x100, dword aligned), stops at a pointer it has seen and after
//! [`MAX_CAPS`] entries, so a looping or garbage list ends the walk instead of hanging it.
//!
//! QEMU's bridges (vendor 0x1b36) may carry a vendor-specific capability (ID 0x09) of type 1,
//! "resource reserve", whose fields say how much a firmware should keep free behind the bridge
//! for hotplug: at +4 the bus count (u32), +8 I/O bytes (u64), +16 non-prefetchable bytes
//! (u32), +20 32-bit prefetchable bytes (u32), +24 64-bit prefetchable bytes (u64); all ones
//! means "no hint". Those are the `bus-reserve`, `io-reserve`, `mem-reserve`,
//! `pref32-reserve` and `pref64-reserve` properties of `pcie-root-port`.

use alloc::vec::Vec;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

/// Most capabilities a function can hold in 192 bytes of 4-byte entries.
pub const MAX_CAPS: usize = 48;
const REG_STATUS_COMMAND: u8 = 0x04;
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);
const REG_CAP_PTR: u8 = 0x34;
/// Capability ID of the PCI Express capability.
pub const CAP_ID_PCIE: u8 = 0x10;
/// Capability ID of vendor-specific capabilities.
pub const CAP_ID_VENDOR: u8 = 0x09;
/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// PCI vendor ID of QEMU's own devices (Red Hat).
pub const VENDOR_REDHAT: u16 = 0x1b36;
const REDHAT_CAP_RESOURCE_RESERVE: u8 = 1;
const REDHAT_CAP_RESERVE_LEN: u8 = 32;

/// One entry of a function's capability list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Capability ID.
    pub id: u8,
    /// Config-space offset of its header.
    pub offset: u8,
}

/// The capability list of `df`, in list order (empty when the status register has no list).
pub fn capabilities<C: ConfigurationAccess>(cam: &C, df: DeviceFunction) -> Vec<Capability> {
    let mut caps = Vec::new();
    if cam.read_word(df, REG_STATUS_COMMAND) & STATUS_CAP_LIST == 0 {
        return caps;
    }
    let mut ptr = (cam.read_word(df, REG_CAP_PTR) & 0xfc) as u8;
    while ptr >= 0x40 && caps.len() < MAX_CAPS && !caps.iter().any(|c: &Capability| c.offset == ptr)
    {
        let header = cam.read_word(df, ptr);
        caps.push(Capability {
            id: header as u8,
            offset: ptr,
        });
        ptr = ((header >> 8) & 0xfc) as u8;
    }
    caps
}

/// Where a port's slot registers are (PCI Express capability, Slot Capabilities HPC set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotplugSlot {
    /// Offset of the PCI Express capability.
    pub pcie_cap: u8,
    /// Physical Slot Number (Slot Capabilities bits 31:19).
    pub slot_number: u16,
}

impl HotplugSlot {
    /// Offset of Slot Capabilities.
    pub fn slot_capabilities(&self) -> u8 {
        self.pcie_cap + 0x14
    }
    /// Offset of Slot Control (low half) and Slot Status (high half).
    pub fn slot_control(&self) -> u8 {
        self.pcie_cap + 0x18
    }
}

const PCIE_CAPS_SLOT_IMPLEMENTED: u32 = 1 << (16 + 8);
const SLOT_CAP_HPC: u32 = 1 << 6;

/// The hotplug slot of a port: its PCI Express capability says a slot is implemented and
/// its Slot Capabilities are Hot-Plug Capable.
pub fn hotplug_slot<C: ConfigurationAccess>(
    cam: &C,
    df: DeviceFunction,
    caps: &[Capability],
) -> Option<HotplugSlot> {
    let pcie = caps.iter().find(|c| c.id == CAP_ID_PCIE)?.offset;
    // The capability needs 0x1c bytes for the slot registers.
    if pcie > 0xff - 0x1c || cam.read_word(df, pcie) & PCIE_CAPS_SLOT_IMPLEMENTED == 0 {
        return None;
    }
    let slot_caps = cam.read_word(df, pcie + 0x14);
    (slot_caps & SLOT_CAP_HPC != 0).then_some(HotplugSlot {
        pcie_cap: pcie,
        slot_number: (slot_caps >> 19) as u16,
    })
}

/// QEMU's resource-reserve hints (`None` = no hint for that resource).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReserveHints {
    /// Bus numbers to keep behind the bridge (`bus-reserve`).
    pub buses: Option<u32>,
    /// Non-prefetchable memory bytes (`mem-reserve`).
    pub mem_bytes: Option<u64>,
    /// 32-bit prefetchable memory bytes (`pref32-reserve`).
    pub pref32_bytes: Option<u64>,
    /// 64-bit prefetchable memory bytes (`pref64-reserve`).
    pub pref64_bytes: Option<u64>,
}

/// The resource-reserve capability of a QEMU bridge, if it has one.
pub fn reserve_hints<C: ConfigurationAccess>(
    cam: &C,
    df: DeviceFunction,
    vendor_id: u16,
    caps: &[Capability],
) -> Option<ReserveHints> {
    if vendor_id != VENDOR_REDHAT {
        return None;
    }
    let at = caps
        .iter()
        .map(|c| c.offset)
        .filter(|&o| o <= 0xff - REDHAT_CAP_RESERVE_LEN + 1)
        .find(|&o| {
            let h = cam.read_word(df, o);
            h as u8 == CAP_ID_VENDOR
                && (h >> 16) as u8 >= REDHAT_CAP_RESERVE_LEN
                && (h >> 24) as u8 == REDHAT_CAP_RESOURCE_RESERVE
        })?;
    let u32_at = |off: u8| cam.read_word(df, at + off);
    let u64_at = |off: u8| u64::from(u32_at(off)) | (u64::from(u32_at(off + 4)) << 32);
    let hint32 = |v: u32| (v != u32::MAX).then_some(v);
    let hint64 = |v: u64| (v != u64::MAX).then_some(v);
    Some(ReserveHints {
        buses: hint32(u32_at(4)),
        mem_bytes: hint32(u32_at(16)).map(u64::from),
        pref32_bytes: hint32(u32_at(20)).map(u64::from),
        pref64_bytes: hint64(u64_at(24)),
    })
}
