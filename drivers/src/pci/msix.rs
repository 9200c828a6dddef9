//! MSI-X of one PCI function (PCI Local Bus 3.0 / PCIe Base 6.8.2): find the capability,
//! program the table, mask, enable.
//!
//! Model: the capability (ID 0x11) in config space holds Message Control (table size - 1
//! in bits [10:0], Function Mask bit 14, MSI-X Enable bit 15), the table's BAR and offset
//! (BIR in bits [2:0] of the dword, offset in the rest) and the same for the pending-bit
//! array. The table lives in memory space: 16 bytes per vector (message address low,
//! high, message data, vector control with the mask in bit 0). A vector fires when the
//! function writes its data to its address; a masked vector (or a set Function Mask)
//! only sets its pending bit, delivered on unmask. Enabling MSI-X turns the function's
//! INTx off.
//!
//! This module knows nothing of how functions are found: it takes a
//! [`ConfigurationAccess`], a [`DeviceFunction`] (any bus, so a function behind a bridge
//! works unchanged) and, for the table, the CPU address where the caller mapped the BAR
//! (`table_bar` + `table_offset` say where in which BAR). States, as the caller drives
//! them: found ([`MsixCap::find`]) -> enabled with the function masked ([`enable`]) ->
//! entries written, each masked ([`MsixTable::write`]) -> entries unmasked and the function
//! unmasked -> running; [`disable`] goes back to INTx. The capability walk is bounded and
//! refuses pointers into the header or out of the 256-byte space, so a looping or broken
//! list is an error.

use hotmem_arch::mmio::Mmio;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::ReadWrite;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

/// Capability ID of MSI-X.
pub const CAP_MSIX: u8 = 0x11;
const REG_STATUS_COMMAND: u8 = 0x04;
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);
const REG_CAP_PTR: u8 = 0x34;
/// A list with more entries than fit in 192 bytes of dwords loops.
const MAX_CAPS: usize = 48;
const CTRL_ENABLE: u32 = 1 << 15;
const CTRL_FUNCTION_MASK: u32 = 1 << 14;
const ENTRY_BYTES: u64 = 16;

/// Why a function's MSI-X could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsixError {
    /// The capability list points into the header, out of config space, or loops.
    BadCapabilityList(DeviceFunction),
    /// The table's BIR is not a BAR (6 or 7), or the table does not fit in 32 bits.
    BadTable(DeviceFunction),
    /// A vector index beyond the table.
    NoSuchVector(u16),
}

/// Every capability of `df` as (config offset, ID), in list order.
pub fn capabilities(
    access: &impl ConfigurationAccess,
    df: DeviceFunction,
) -> Result<impl Iterator<Item = (u8, u8)>, MsixError> {
    let mut caps = [(0u8, 0u8); MAX_CAPS];
    let mut n = 0;
    if access.read_word(df, REG_STATUS_COMMAND) & STATUS_CAP_LIST != 0 {
        let mut ptr = access.read_word(df, REG_CAP_PTR) as u8 & 0xfc;
        while ptr != 0 {
            if ptr < 0x40 || n == MAX_CAPS {
                return Err(MsixError::BadCapabilityList(df));
            }
            let head = access.read_word(df, ptr);
            caps[n] = (ptr, head as u8);
            n += 1;
            ptr = (head >> 8) as u8 & 0xfc;
        }
    }
    Ok(caps.into_iter().take(n))
}

/// The MSI-X capability of one function, as read from config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixCap {
    /// The function.
    pub df: DeviceFunction,
    /// Config offset of the capability.
    pub offset: u8,
    /// Vectors in the table.
    pub table_size: u16,
    /// The BAR holding the table.
    pub table_bar: u8,
    /// The table's offset in that BAR.
    pub table_offset: u32,
}

impl MsixCap {
    /// The function's MSI-X capability, `None` when it has none.
    pub fn find(
        access: &impl ConfigurationAccess,
        df: DeviceFunction,
    ) -> Result<Option<MsixCap>, MsixError> {
        let Some((offset, _)) = capabilities(access, df)?.find(|&(_, id)| id == CAP_MSIX) else {
            return Ok(None);
        };
        let ctrl = access.read_word(df, offset) >> 16;
        let table = access.read_word(df, offset + 4);
        let table_bar = (table & 7) as u8;
        if table_bar > 5 {
            return Err(MsixError::BadTable(df));
        }
        Ok(Some(MsixCap {
            df,
            offset,
            table_size: (ctrl & 0x7ff) as u16 + 1,
            table_bar,
            table_offset: table & !7,
        }))
    }

    /// Bytes of the table (to map).
    pub fn table_bytes(&self) -> u64 {
        u64::from(self.table_size) * ENTRY_BYTES
    }
}

fn set_control(access: &mut impl ConfigurationAccess, cap: &MsixCap, set: u32, clear: u32) {
    let word = access.read_word(cap.df, cap.offset);
    let ctrl = ((word >> 16) | set) & !clear;
    access.write_word(cap.df, cap.offset, (word & 0xffff) | (ctrl << 16));
}

/// Enables MSI-X (INTx off), with the whole function masked when `function_masked`.
pub fn enable(access: &mut impl ConfigurationAccess, cap: &MsixCap, function_masked: bool) {
    let mask = if function_masked {
        CTRL_FUNCTION_MASK
    } else {
        0
    };
    set_control(access, cap, CTRL_ENABLE | mask, CTRL_FUNCTION_MASK & !mask);
}

/// Disables MSI-X: the function is back on INTx.
pub fn disable(access: &mut impl ConfigurationAccess, cap: &MsixCap) {
    set_control(access, cap, 0, CTRL_ENABLE | CTRL_FUNCTION_MASK);
}

/// Whether MSI-X is enabled and the function not masked.
pub fn is_running(access: &impl ConfigurationAccess, cap: &MsixCap) -> bool {
    let ctrl = access.read_word(cap.df, cap.offset) >> 16;
    ctrl & (CTRL_ENABLE | CTRL_FUNCTION_MASK) == CTRL_ENABLE
}

/// An MSI: write `data` to `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// The doorbell (ITS GITS_TRANSLATER, v2m MSI_SETSPI_NS), a bus address.
    pub address: u64,
    /// The EventID (ITS) or the SPI's INTID (v2m).
    pub data: u32,
}

/// One table entry's four dwords: address low, address high, data, vector control.
pub fn entry_words(msg: MsiMessage, masked: bool) -> [u32; 4] {
    [
        msg.address as u32,
        (msg.address >> 32) as u32,
        msg.data,
        masked as u32,
    ]
}

register_structs! {
    /// One MSI-X table entry.
    MsixEntry {
        (0x0 => addr_lo: ReadWrite<u32>),
        (0x4 => addr_hi: ReadWrite<u32>),
        (0x8 => data: ReadWrite<u32>),
        (0xc => ctrl: ReadWrite<u32>),
        (0x10 => @END),
    }
}

/// A function's mapped MSI-X table.
pub struct MsixTable {
    va: usize,
    size: u16,
}

impl MsixTable {
    /// The table of `cap`, mapped at `va` (the BAR's mapping plus `table_offset`).
    ///
    /// # Safety
    /// `va .. va + cap.table_bytes()` must be a live Device mapping of the table, mapped for
    /// as long as the returned value is used, and only written through it.
    pub unsafe fn new(va: usize, cap: &MsixCap) -> MsixTable {
        MsixTable {
            va,
            size: cap.table_size,
        }
    }

    fn entry(&self, vector: u16) -> Result<Mmio<MsixEntry>, MsixError> {
        if vector >= self.size {
            return Err(MsixError::NoSuchVector(vector));
        }
        // SAFETY: inside the table (checked above), which `new`'s contract maps.
        Ok(unsafe { Mmio::new(self.va + usize::from(vector) * 16) })
    }

    /// Writes `msg` into `vector`, leaving it masked (mask first, so a half-written entry
    /// never fires).
    pub fn write(&self, vector: u16, msg: MsiMessage) -> Result<(), MsixError> {
        let e = self.entry(vector)?;
        let [lo, hi, data, ctrl] = entry_words(msg, true);
        e.ctrl.set(e.ctrl.get() | ctrl);
        e.addr_lo.set(lo);
        e.addr_hi.set(hi);
        e.data.set(data);
        Ok(())
    }

    /// Masks or unmasks `vector`.
    pub fn set_masked(&self, vector: u16, masked: bool) -> Result<(), MsixError> {
        let e = self.entry(vector)?;
        let ctrl = e.ctrl.get() & !1;
        e.ctrl.set(ctrl | masked as u32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// One function's 256 bytes of config space.
    struct Fake(RefCell<[u32; 64]>);

    impl ConfigurationAccess for Fake {
        fn read_word(&self, _df: DeviceFunction, reg: u8) -> u32 {
            self.0.borrow()[usize::from(reg / 4)]
        }
        fn write_word(&mut self, _df: DeviceFunction, reg: u8, data: u32) {
            self.0.borrow_mut()[usize::from(reg / 4)] = data;
        }
        unsafe fn unsafe_clone(&self) -> Self {
            Fake(RefCell::new(*self.0.borrow()))
        }
    }

    const DF: DeviceFunction = DeviceFunction {
        bus: 1,
        device: 0,
        function: 0,
    };

    /// A virtio-pci-like function: vendor capability at 0x40, MSI-X at 0x98 (2 vectors,
    /// table in BAR1 at 0).
    fn function() -> Fake {
        let mut r = [0u32; 64];
        r[1] = STATUS_CAP_LIST;
        r[0x34 / 4] = 0x40;
        r[0x40 / 4] = 0x9809;
        r[0x98 / 4] = 0x0001_0000 | u32::from(CAP_MSIX);
        r[0x9c / 4] = 1;
        Fake(RefCell::new(r))
    }

    #[test]
    fn finds_the_capability_and_enables() {
        let mut f = function();
        assert_eq!(
            capabilities(&f, DF).unwrap().collect::<Vec<_>>(),
            [(0x40, 0x09), (0x98, CAP_MSIX)]
        );
        let cap = MsixCap::find(&f, DF).unwrap().unwrap();
        assert_eq!(
            (cap.offset, cap.table_size, cap.table_bar, cap.table_offset),
            (0x98, 2, 1, 0)
        );
        assert_eq!(cap.table_bytes(), 32);
        enable(&mut f, &cap, true);
        assert!(!is_running(&f, &cap));
        assert_eq!(f.read_word(DF, 0x98) >> 16, 0xc001);
        enable(&mut f, &cap, false);
        assert!(is_running(&f, &cap));
        // The capability ID and next pointer are untouched.
        assert_eq!(f.read_word(DF, 0x98) & 0xffff, u32::from(CAP_MSIX));
        disable(&mut f, &cap);
        assert_eq!(f.read_word(DF, 0x98) >> 16, 1);
    }

    #[test]
    fn broken_lists_are_errors() {
        let f = function();
        // A loop back onto itself.
        f.0.borrow_mut()[0x98 / 4] |= 0x98 << 8;
        assert_eq!(MsixCap::find(&f, DF), Err(MsixError::BadCapabilityList(DF)));
        // A pointer into the header.
        let f = function();
        f.0.borrow_mut()[0x34 / 4] = 0x10;
        assert!(MsixCap::find(&f, DF).is_err());
        // No capability list at all.
        let f = function();
        f.0.borrow_mut()[1] = 0;
        assert_eq!(MsixCap::find(&f, DF), Ok(None));
        // A BIR that is no BAR.
        let f = function();
        f.0.borrow_mut()[0x9c / 4] = 7;
        assert_eq!(MsixCap::find(&f, DF), Err(MsixError::BadTable(DF)));
    }

    #[test]
    fn table_entry_encoding() {
        let its = MsiMessage {
            address: 0x0809_0040,
            data: 1,
        };
        assert_eq!(entry_words(its, true), [0x0809_0040, 0, 1, 1]);
        let high = MsiMessage {
            address: 0x40_0809_0040,
            data: 81,
        };
        assert_eq!(entry_words(high, false), [0x0809_0040, 0x40, 81, 0]);
    }
}
