//! PCIe ECAM host bridge (`pci-host-ecam-generic`): enumerate functions, place BARs, route INTx.
//!
//! # Model
//!
//! The kernel parses the host bridge node of the device tree and hands this module plain data:
//! the ECAM mapping, the bus range, the `ranges` windows ([`Window`]) and the `interrupt-map`
//! ([`IrqMap`]). Config space is reached through virtio-drivers' [`PciRoot`] over any
//! [`ConfigurationAccess`]; in the kernel that is [`Ecam`], the only code here that dereferences
//! MMIO, and in host tests a fake config space.
//!
//! - **Enumeration** ([`PciHost::enumerate`], `enumerate.rs`): depth-first from the root
//!   bus through type-1 headers (PCI-to-PCI bridges, PCIe root ports): each bridge gets the
//!   next bus number as secondary, its subordinate after the scan below it; hotplug-capable
//!   ports (PCI Express capability, Slot Capabilities HPC) keep at least one bus. Nothing
//!   programs bridges under `-kernel`, so we number every bus. Every BAR is sized on the way.
//! - **Windows and BARs** (`window.rs`, over [`BarAllocator`]): bridge windows are sized
//!   bottom-up (whole MiB, hotplug ports at least their reservation: 1 MiB non-prefetchable
//!   and 1 MiB 64-bit prefetchable, or QEMU's reserve hints, `caps.rs`), then everything is
//!   placed top-down, the root bus in the host bridge's `ranges`, each secondary bus in its
//!   bridge's windows, and decoding is enabled (MEMORY | BUS_MASTER, plus IO on bridges).
//!   Each memory BAR gets a naturally aligned range of at least one 4 KiB page (two BARs
//!   never share a page, so each can be mapped on its own). 64-bit BARs go to a MEM64 window
//!   and fall back to MEM32; 32-bit BARs go to MEM32 and always end below 4 GiB (also checked
//!   against the address, since the DT is not trusted). A non-prefetchable BAR never goes
//!   into a prefetchable window. I/O BARs are not supported: they are skipped with a warning,
//!   and I/O windows stay closed. Windows are bump-allocated and space is never given back.
//!   [`PciHost::setup_bars`] places one function on its own (a device that appeared behind a
//!   hotplug port, or a function on the root bus).
//! - **INTx routing** ([`route_intx`], [`swizzle_intx`]): a pin is swizzled at every bridge
//!   (`(pin - 1 + device) % 4 + 1`) up to the root bus, then `(phys.hi, pin) &
//!   interrupt-map-mask` of the root-bus device is looked up in the map. On QEMU `virt` the
//!   map lists all 4 slots x 4 pins; device 1 INTA is INTID 36.
//! - **Records** ([`PciHost::functions`], [`PciHost::bars`], [`PciHost::bridges`]): per
//!   function its address (the requester ID), IDs, capability list, INTx route, parent
//!   bridge and BAR assignments; per forwarding bridge its buses and windows.
//!
//! Everything read from config space is untrusted: absent functions, BARs whose size is not a
//! power of two, BARs bigger than any window, BARs that do not hold their address, bridges
//! that do not hold their bus numbers or loop back to a scanned bus, windows that do not fit
//! and unknown header types are [`PciError`]s or warnings that disable the function or bridge
//! concerned, never panics; the rest goes on.
//!
//! # What the caller maps
//!
//! - ECAM, as Device memory, before [`PciHost::new_ecam`]: 1 MiB per bus from `bus_start`,
//!   for every bus the bridges may be given (the kernel maps the whole `bus-range`).
//! - BARs: [`PciHost::virtio_transport`] calls [`Hal::mmio_phys_to_virt`] with the *PCI bus
//!   address* read back from the BAR, plus the capability offset. On QEMU `virt` bus and CPU
//!   addresses are equal; elsewhere the `Hal` can translate with [`PciHost::pci_to_cpu`]. Each
//!   [`BarAssignment`] carries both addresses.
//!
//! # Files
//!
//! This file holds the inputs, the errors, INTx routing, the records and [`PciHost`] with
//! single-function BAR setup; `enumerate.rs` the depth-first scan and bus numbers;
//! `window.rs` bridge window sizing, placement and registers; `caps.rs` capability lists,
//! hotplug slots and QEMU's reserve hints; `bar_alloc.rs` the pure allocator; `ecam.rs` the
//! MMIO config access. Their public items are re-exported here.

use alloc::vec::Vec;
use core::fmt;

use log::{debug, info, warn};
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, HeaderType, PciError as BusError,
    PciRoot, Status,
};
use virtio_drivers::transport::pci::{PciTransport, VirtioPciError};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::Hal;

mod bar_alloc;
pub mod caps;
mod ecam;
mod enumerate;
pub mod msix;
mod port;
pub mod slot;
mod window;

pub use bar_alloc::{
    AllocError, Allocation, BarAllocator, BarRequest, BarWidth, MIN_BAR_ALLOC_BYTES,
};
pub use caps::{Capability, HotplugSlot, ReserveHints};
pub use ecam::{Ecam, ECAM_BUS_BYTES};
pub use enumerate::{HOTPLUG_BUSES, MAX_BRIDGE_DEPTH};
pub use window::{BridgeState, HOTPLUG_MEM_BYTES, HOTPLUG_PREF_BYTES, WINDOW_ALIGN};

const VENDOR_ABSENT: u16 = 0xffff;
const REG_ID: u8 = 0x00;
const REG_HEADER: u8 = 0x0c;
/// Interrupt line (byte 0) and interrupt pin (byte 1).
pub(crate) const REG_INTERRUPT: u8 = 0x3c;

// ---------------------------------------------------------------------------------------------
// Inputs (mirrors of the kernel's DT types)
// ---------------------------------------------------------------------------------------------

/// Address space of a host bridge window (`ranges` phys.hi bits 25:24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// I/O space (code 1); BARs are never placed here.
    Io,
    /// 32-bit memory space (code 2).
    Mem32,
    /// 64-bit memory space (code 3).
    Mem64,
}

/// One `ranges` entry of the host bridge: `size` bytes at `pci_addr` on the bus appear at
/// `cpu_addr` for the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Which address space the window is in.
    pub space: Space,
    /// Prefetchable (`ranges` phys.hi bit 30): only prefetchable BARs are placed here.
    pub prefetchable: bool,
    /// First bus address.
    pub pci_addr: u64,
    /// First CPU physical address (where `pci_addr` appears).
    pub cpu_addr: u64,
    /// Length in bytes.
    pub size: u64,
}

/// One `interrupt-map` entry, its parent already resolved to a GIC INTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqMapEntry {
    /// Child unit address, high cell (`bus << 16 | device << 11 | function << 8`).
    pub child_hi: u32,
    /// INTx pin, 1 = INTA .. 4 = INTD.
    pub pin: u32,
    /// The GIC INTID this pin raises.
    pub intid: u32,
}

/// The host bridge's `interrupt-map` and `interrupt-map-mask` (phys.hi and pin cells). Without an
/// `interrupt-map-mask` in the DT, pass all ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IrqMap {
    /// Mask applied to `phys.hi` (the bus/device/function cell) before lookup.
    pub mask_hi: u32,
    /// Mask applied to the pin before lookup.
    pub mask_pin: u32,
    /// The map, searched in order; the first match wins.
    pub entries: Vec<IrqMapEntry>,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors of the host bridge driver; one variant per cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PciError {
    /// The ECAM address passed by the caller is null or not 4-byte aligned.
    InvalidEcam,
    /// No function answers at this address (vendor ID 0xffff).
    NotPresent(DeviceFunction),
    /// The function's header type has no BAR layout we know.
    UnsupportedHeader {
        /// The function.
        df: DeviceFunction,
        /// Its header type (config 0x0e, without the multi-function bit).
        header: u8,
    },
    /// A BAR has an invalid type (reserved type, or 64-bit in the last slot).
    InvalidBarType {
        /// The function.
        df: DeviceFunction,
        /// The BAR's index.
        bar: u8,
    },
    /// A BAR could not be placed.
    Bar {
        /// The function.
        df: DeviceFunction,
        /// The BAR's index.
        bar: u8,
        /// The size the BAR reported, in bytes.
        size: u64,
        /// Why the allocator refused it.
        cause: AllocError,
    },
    /// A BAR did not hold the address we programmed.
    BarReadback {
        /// The function.
        df: DeviceFunction,
        /// The BAR's index.
        bar: u8,
        /// The bus address written.
        wrote: u64,
        /// What the BAR read back (`u64::MAX` when it no longer reads as a memory BAR).
        read: u64,
    },
    /// [`PciHost::virtio_transport`] before [`PciHost::setup_bars`].
    BarsNotAssigned(DeviceFunction),
    /// A bridge did not hold the bus numbers written to it.
    BusNumbers {
        /// The bridge.
        bridge: DeviceFunction,
        /// The secondary bus written.
        wrote: u8,
        /// What it read back.
        read: u8,
    },
    /// A bridge's secondary bus reads back as a bus already scanned.
    BusLoop {
        /// The bridge.
        bridge: DeviceFunction,
        /// The bus it names.
        secondary: u8,
    },
    /// No bus number left in the host's range for this bridge.
    OutOfBusNumbers(DeviceFunction),
    /// This bridge sits deeper than [`MAX_BRIDGE_DEPTH`].
    BridgeTooDeep(DeviceFunction),
    /// A bridge window could not be placed in the bus above it.
    BridgeWindow {
        /// The bridge.
        bridge: DeviceFunction,
        /// The prefetchable window (else the non-prefetchable one).
        prefetchable: bool,
        /// Its size in bytes.
        size: u64,
        /// Why the allocator refused it.
        cause: AllocError,
    },
    /// No forwarding bridge leads to this function's bus.
    NoBridge(DeviceFunction),
    /// virtio-drivers could not build a transport (not virtio, missing capabilities, ...).
    Transport(VirtioPciError),
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidEcam => f.write_str("ECAM address null or misaligned"),
            Self::NotPresent(df) => write!(f, "{df}: no function"),
            Self::UnsupportedHeader { df, header } => {
                write!(f, "{df}: unsupported header type {header:#04x}")
            }
            Self::InvalidBarType { df, bar } => write!(f, "{df}: BAR{bar} has an invalid type"),
            Self::Bar {
                df,
                bar,
                size,
                cause,
            } => write!(f, "{df}: BAR{bar} ({size:#x} bytes): {cause}"),
            Self::BarReadback {
                df,
                bar,
                wrote,
                read,
            } => write!(f, "{df}: BAR{bar} wrote {wrote:#x}, read back {read:#x}"),
            Self::BarsNotAssigned(df) => write!(f, "{df}: BARs not assigned"),
            Self::BusNumbers {
                bridge,
                wrote,
                read,
            } => write!(
                f,
                "{bridge}: bridge wrote secondary bus {wrote}, read back {read}"
            ),
            Self::BusLoop { bridge, secondary } => write!(
                f,
                "{bridge}: bridge secondary bus {secondary} already scanned (bus-number loop)"
            ),
            Self::OutOfBusNumbers(df) => write!(f, "{df}: no bus number left for the bridge"),
            Self::BridgeTooDeep(df) => {
                write!(f, "{df}: bridge nested deeper than {MAX_BRIDGE_DEPTH}")
            }
            Self::BridgeWindow {
                bridge,
                prefetchable,
                size,
                cause,
            } => write!(
                f,
                "{bridge}: {} window ({size:#x} bytes): {cause}",
                if *prefetchable {
                    "prefetchable"
                } else {
                    "memory"
                }
            ),
            Self::NoBridge(df) => write!(f, "{df}: no forwarding bridge to its bus"),
            Self::Transport(e) => write!(f, "virtio transport: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// INTx routing (pure)
// ---------------------------------------------------------------------------------------------

/// The GIC INTID that INTx `pin` (1 = INTA .. 4 = INTD) of `bus:device.function` raises, from
/// the host bridge's `interrupt-map`. `None` for pin 0 (no interrupt), pins above 4, or no entry.
pub fn route_intx(map: &IrqMap, bus: u8, device: u8, function: u8, pin: u8) -> Option<u32> {
    if !(1..=4).contains(&pin) {
        return None;
    }
    let hi =
        (u32::from(bus) << 16) | (u32::from(device & 0x1f) << 11) | (u32::from(function & 7) << 8);
    let key = (hi & map.mask_hi, u32::from(pin) & map.mask_pin);
    map.entries
        .iter()
        .find(|e| (e.child_hi & map.mask_hi, e.pin & map.mask_pin) == key)
        .map(|e| e.intid)
}

/// The pin a bridge sees for INTx `pin` of device `device` on its secondary bus (the
/// PCI-to-PCI Bridge spec's swizzle: `(pin - 1 + device) % 4 + 1`); pins outside 1..=4 pass
/// through unchanged (and route nowhere).
pub fn swizzle_intx(pin: u8, device: u8) -> u8 {
    if !(1..=4).contains(&pin) {
        return pin;
    }
    (pin - 1 + device % 4) % 4 + 1
}

// ---------------------------------------------------------------------------------------------
// Host bridge
// ---------------------------------------------------------------------------------------------

/// Config access whose clones may also write, as long as no two accesses run at once.
///
/// # Safety
///
/// Implementers guarantee that a value made by `unsafe_clone` may read and write any register
/// while the original lives, provided accesses are not concurrent: each access is
/// self-contained (no cached state, no multi-step protocol). [`PciHost`] uses one clone for
/// the bridge and slot registers virtio-drivers' `PciRoot` has no setter for, and only under
/// `&mut self`, so its accesses never overlap those of its `PciRoot`.
pub unsafe trait WritableClone: ConfigurationAccess {
    /// Writes the 16-bit register at `reg` (2-byte aligned) alone, leaving its dword's other
    /// half unwritten (Slot Status must be cleared without writing Slot Control, whose every
    /// write is a command).
    fn write_u16(&mut self, df: DeviceFunction, reg: u8, value: u16);
}

/// Bus numbers of a bridge (its primary bus is the bus it sits on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeBuses {
    /// The bus right behind it.
    pub secondary: u8,
    /// The last bus behind it.
    pub subordinate: u8,
}

/// One function found by [`PciHost::enumerate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// Where it answers.
    pub df: DeviceFunction,
    /// Config 0x00.
    pub vendor_id: u16,
    /// Config 0x02.
    pub device_id: u16,
    /// Base class (config 0x0b).
    pub class: u8,
    /// Subclass (config 0x0a).
    pub subclass: u8,
    /// Standard function, PCI-to-PCI bridge, ... (config 0x0e).
    pub header_type: HeaderType,
    /// The virtio device type, for virtio vendor/device IDs.
    pub virtio: Option<DeviceType>,
    /// Config 0x3d: 0 = none, 1 = INTA .. 4 = INTD.
    pub interrupt_pin: u8,
    /// GIC INTID of that pin: swizzled through the bridges above, then the `interrupt-map`.
    pub intid: Option<u32>,
    /// The bridge whose secondary bus this function is on (`None` on the root bus).
    pub parent: Option<DeviceFunction>,
    /// Its capability list (MSI-X, PCI Express, vendor-specific, ...).
    pub capabilities: Vec<Capability>,
    /// The buses behind it, for a bridge that was given bus numbers.
    pub bridge: Option<BridgeBuses>,
    /// Its hotplug slot, for a hotplug-capable port.
    pub hotplug: Option<HotplugSlot>,
}

/// One programmed BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarAssignment {
    /// BAR index 0..5 (the low half for 64-bit BARs).
    pub bar: u8,
    /// Its type bits.
    pub width: BarWidth,
    /// Whether the BAR is prefetchable.
    pub prefetchable: bool,
    /// Its size as the device reported it (a power of two).
    pub size_bytes: u64,
    /// Address programmed into the BAR.
    pub pci_addr: u64,
    /// Where the CPU sees it: map this.
    pub cpu_addr: u64,
}

impl BarAssignment {
    fn new(bar: u8, req: &BarRequest, a: &Allocation) -> BarAssignment {
        BarAssignment {
            bar,
            width: req.width,
            prefetchable: req.prefetchable,
            size_bytes: req.size_bytes,
            pci_addr: a.pci_addr,
            cpu_addr: a.cpu_addr,
        }
    }
}

/// An ECAM host bridge: config access, the BAR allocators and the INTx map, and the records
/// of what [`PciHost::enumerate`] found and assigned.
pub struct PciHost<C: ConfigurationAccess + WritableClone = Ecam> {
    root: PciRoot<C>,
    /// Second handle on the same config space, for reads only (IDs, header, capabilities,
    /// bridge registers), as `unsafe_clone` requires.
    reader: C,
    /// Third handle, for the bridge and slot registers `PciRoot` has no setter for; used only
    /// under `&mut self` ([`WritableClone`]).
    writer: C,
    bus_start: u8,
    bus_end: u8,
    /// The host bridge's windows and the allocator over them (the root bus's BARs and
    /// bridge windows).
    windows: Vec<Window>,
    allocator: BarAllocator,
    irq_map: IrqMap,
    assigned: Vec<(DeviceFunction, Vec<BarAssignment>)>,
    functions: Vec<PciFunction>,
    bridges: Vec<BridgeState>,
}

impl PciHost<Ecam> {
    /// A host bridge over an ECAM mapping of `ecam_size_bytes` at `ecam_va` for buses
    /// `bus_start..=bus_end` (buses the mapping does not cover are not scanned).
    ///
    /// # Safety
    ///
    /// As [`Ecam::new`]: `ecam_va .. ecam_va + ecam_size_bytes` is the host bridge's ECAM,
    /// starting at `bus_start`, mapped as Device memory for the life of the returned value and
    /// never accessed through references.
    pub unsafe fn new_ecam(
        ecam_va: *mut u8,
        ecam_size_bytes: usize,
        bus_start: u8,
        bus_end: u8,
        windows: &[Window],
        irq_map: IrqMap,
    ) -> Result<Self, PciError> {
        // SAFETY: the caller gives `Ecam::new`'s contract.
        let ecam = unsafe { Ecam::new(ecam_va, ecam_size_bytes, bus_start) }?;
        let last_mapped = usize::from(bus_start) + ecam.nr_buses.max(1) - 1;
        let bus_end_mapped = u8::try_from(last_mapped).unwrap_or(u8::MAX).min(bus_end);
        if bus_end_mapped < bus_end {
            warn!("pci: ECAM mapping covers buses {bus_start}..={bus_end_mapped} of ..={bus_end}");
        }
        Ok(Self::new(ecam, bus_start, bus_end_mapped, windows, irq_map))
    }
}

impl<C: ConfigurationAccess + WritableClone> PciHost<C> {
    /// A host bridge over any config access (a fake one in tests).
    pub fn new(access: C, bus_start: u8, bus_end: u8, windows: &[Window], irq_map: IrqMap) -> Self {
        // SAFETY: `reader` is used only for reads (see the field doc).
        let reader = unsafe { access.unsafe_clone() };
        // SAFETY: `C: WritableClone`, and `writer` is used only under `&mut self`, never while
        // `root` is in use (see the field doc).
        let writer = unsafe { access.unsafe_clone() };
        for w in windows {
            info!(
                "pci: window {:?}{} bus {:#x} cpu {:#x} size {:#x}",
                w.space,
                if w.prefetchable { " pref" } else { "" },
                w.pci_addr,
                w.cpu_addr,
                w.size
            );
        }
        Self {
            root: PciRoot::new(access),
            reader,
            writer,
            bus_start,
            bus_end,
            windows: windows.to_vec(),
            allocator: BarAllocator::new(windows),
            irq_map,
            assigned: Vec::new(),
            functions: Vec::new(),
            bridges: Vec::new(),
        }
    }

    /// The functions the last [`PciHost::enumerate`] found (requester ID = `df`, its
    /// capabilities, its INTx route); their BARs are in [`PciHost::bars`].
    pub fn functions(&self) -> &[PciFunction] {
        &self.functions
    }

    /// The BARs assigned to `df`, if it was enabled.
    pub fn bars(&self, df: DeviceFunction) -> Option<&[BarAssignment]> {
        self.assigned
            .iter()
            .find(|(d, _)| *d == df)
            .map(|(_, b)| b.as_slice())
    }

    /// The bridges that forward, with their windows.
    pub fn bridges(&self) -> &[BridgeState] {
        &self.bridges
    }

    /// The CPU physical address of bus range `pci_addr .. + size_bytes` (for the `Hal`).
    pub fn pci_to_cpu(&self, pci_addr: u64, size_bytes: u64) -> Option<u64> {
        self.allocator.pci_to_cpu(pci_addr, size_bytes)
    }

    /// Sizes, places and programs every memory BAR of `df`, then enables memory decoding and
    /// bus mastering. Calling it again for the same function returns the first assignment
    /// (which [`PciHost::enumerate`] may have made). BARs come from the host bridge's windows
    /// on the root bus, else from the windows of the bridge whose secondary bus holds `df`.
    ///
    /// On error decoding stays off and space already taken for this function is given back.
    pub fn setup_bars(&mut self, df: DeviceFunction) -> Result<Vec<BarAssignment>, PciError> {
        if let Some((_, bars)) = self.assigned.iter().find(|(d, _)| *d == df) {
            return Ok(bars.clone());
        }
        let requests = self.size_bars(df)?;
        let alloc = self.allocator_for(df)?;
        let snapshot = alloc.clone();
        let placed = place(alloc, df, requests);
        let programmed = placed.and_then(|bars| self.program_bars(df, bars, Command::empty()));
        if programmed.is_err() {
            *self.allocator_for(df)? = snapshot;
        }
        programmed
    }

    /// The allocator BARs on `df`'s bus come from.
    fn allocator_for(&mut self, df: DeviceFunction) -> Result<&mut BarAllocator, PciError> {
        if df.bus == self.bus_start {
            return Ok(&mut self.allocator);
        }
        self.bridges
            .iter_mut()
            .find(|b| b.buses.secondary == df.bus)
            .map(|b| &mut b.allocator)
            .ok_or(PciError::NoBridge(df))
    }

    /// Turns decoding off and sizes every memory BAR of `df` (2 on a bridge, 6 otherwise).
    pub(super) fn size_bars(
        &mut self,
        df: DeviceFunction,
    ) -> Result<Vec<(u8, BarRequest)>, PciError> {
        if self.reader.read_word(df, REG_ID) as u16 == VENDOR_ABSENT {
            return Err(PciError::NotPresent(df));
        }
        let header = (self.reader.read_word(df, REG_HEADER) >> 16) as u8 & 0x7f;
        let nr_bars = match HeaderType::from(header) {
            HeaderType::Standard => 6,
            HeaderType::PciPciBridge => 2,
            _ => return Err(PciError::UnsupportedHeader { df, header }),
        };

        // 1. Decoding off while BARs are sized and moved.
        let (_, command) = self.root.get_status_command(df);
        self.root
            .set_command(df, command - (Command::IO_SPACE | Command::MEMORY_SPACE));

        // 2. Size.
        let mut requests: Vec<(u8, BarRequest)> = Vec::new();
        let mut bar = 0;
        while bar < nr_bars {
            let info = self.bar_info(df, bar)?;
            let this = bar;
            bar += if info.as_ref().is_some_and(BarInfo::takes_two_entries) {
                2
            } else {
                1
            };
            match info {
                None => {}
                Some(BarInfo::IO { size, .. }) => {
                    warn!("pci: {df}: BAR{this} is I/O ({size:#x} bytes): unsupported, skipped");
                }
                Some(BarInfo::Memory {
                    address_type,
                    prefetchable,
                    size,
                    ..
                }) => {
                    debug!("pci: {df}: BAR{this} {address_type:?} pref={prefetchable} {size:#x}");
                    requests.push((
                        this,
                        BarRequest {
                            size_bytes: size,
                            width: address_type.into(),
                            prefetchable,
                        },
                    ));
                }
            }
        }
        Ok(requests)
    }

    /// Programs placed BARs, checks that each holds its address, then enables memory decoding,
    /// bus mastering and `extra` (I/O forwarding on bridges), and records the assignment.
    pub(super) fn program_bars(
        &mut self,
        df: DeviceFunction,
        mut bars: Vec<BarAssignment>,
        extra: Command,
    ) -> Result<Vec<BarAssignment>, PciError> {
        bars.sort_by_key(|b| b.bar);
        // 4. Program and check that each BAR holds its address.
        for b in &bars {
            match b.width {
                BarWidth::Bits64 => self.root.set_bar_64(df, b.bar, b.pci_addr),
                // The allocator keeps 32-bit BARs below 4 GiB.
                BarWidth::Bits32 | BarWidth::Below1MiB => {
                    self.root.set_bar_32(df, b.bar, b.pci_addr as u32)
                }
            }
        }
        for b in &bars {
            let read = match self.bar_info(df, b.bar)? {
                Some(BarInfo::Memory { address, .. }) => address,
                _ => u64::MAX,
            };
            if read != b.pci_addr {
                return Err(PciError::BarReadback {
                    df,
                    bar: b.bar,
                    wrote: b.pci_addr,
                    read,
                });
            }
            info!(
                "pci: {df}: BAR{} {:?}{} {:#x} bytes at bus {:#x} cpu {:#x}",
                b.bar,
                b.width,
                if b.prefetchable { " pref" } else { "" },
                b.size_bytes,
                b.pci_addr,
                b.cpu_addr
            );
        }

        // 5. Decode memory, allow DMA.
        let (_, command) = self.root.get_status_command(df);
        let command =
            (command - Command::IO_SPACE) | Command::MEMORY_SPACE | Command::BUS_MASTER | extra;
        self.root.set_command(df, command);
        debug!("pci: {df}: command {command:?}");
        self.assigned.push((df, bars.clone()));
        Ok(bars)
    }

    fn bar_info(&mut self, df: DeviceFunction, bar: u8) -> Result<Option<BarInfo>, PciError> {
        self.root.bar_info(df, bar).map_err(|e| match e {
            BusError::InvalidBarType => PciError::InvalidBarType { df, bar },
        })
    }

    /// The virtio transport of `df`, whose BARs [`PciHost::setup_bars`] has assigned.
    /// virtio-drivers calls `H::mmio_phys_to_virt` with bus addresses inside those BARs.
    pub fn virtio_transport<H: Hal>(
        &mut self,
        df: DeviceFunction,
    ) -> Result<PciTransport, PciError> {
        if !self.assigned.iter().any(|(d, _)| *d == df) {
            return Err(PciError::BarsNotAssigned(df));
        }
        PciTransport::new::<H, C>(&mut self.root, df).map_err(PciError::Transport)
    }

    /// The status and command registers of `df`.
    pub fn status_command(&self, df: DeviceFunction) -> (Status, Command) {
        self.root.get_status_command(df)
    }
}

/// Places `requests` (largest first, all or nothing) for `df`.
fn place(
    alloc: &mut BarAllocator,
    df: DeviceFunction,
    mut requests: Vec<(u8, BarRequest)>,
) -> Result<Vec<BarAssignment>, PciError> {
    requests.sort_by_key(|r| core::cmp::Reverse(r.1.size_bytes));
    requests
        .into_iter()
        .map(|(bar, req)| {
            alloc
                .allocate(req)
                .map(|a| BarAssignment::new(bar, &req, &a))
                .map_err(|cause| PciError::Bar {
                    df,
                    bar,
                    size: req.size_bytes,
                    cause,
                })
        })
        .collect()
}

fn pin_name(pin: u8) -> char {
    (b'A' + pin.saturating_sub(1)) as char
}

#[cfg(test)]
mod tests;
