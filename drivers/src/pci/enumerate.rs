//! Depth-first enumeration: find every function, number the buses behind bridges, size BARs.
//!
//! [`PciHost::enumerate`] scans the root bus; each type-1 header (PCI-to-PCI bridge, PCIe
//! root port) gets the next free bus number as its secondary bus, with the subordinate bus
//! temporarily set to the end of the host's range so that config cycles reach everything
//! below it while it is scanned; after the scan below it, the subordinate bus is the last
//! bus used there, raised to keep room for a hotplug port's reservation. The result is a tree
//! of [`Node`]s with every BAR sized (decoding off); `window.rs` then sizes the bridge windows
//! bottom-up and places everything top-down.
//!
//! Untrusted headers: a bridge that does not hold the bus numbers written to it, whose
//! secondary bus names a bus already scanned (a loop), that needs a bus number beyond the
//! range, or that sits deeper than [`MAX_BRIDGE_DEPTH`] is disabled (bus numbers cleared, so
//! it forwards nothing) with an error; a function with an unknown header type is listed but
//! never enabled; a function whose BARs cannot be sized stays disabled. The rest goes on.

use alloc::vec::Vec;
use log::{error, info, warn};
use virtio_drivers::transport::pci::bus::{
    ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType,
};
use virtio_drivers::transport::pci::virtio_device_type;

use super::caps::{self, HotplugSlot, ReserveHints};
use super::window::Needs;
use super::{
    pin_name, route_intx, swizzle_intx, BarRequest, BridgeBuses, PciError, PciFunction, PciHost,
    WritableClone, REG_INTERRUPT,
};

/// Deepest bridge nesting followed (the root bus is depth 0).
pub const MAX_BRIDGE_DEPTH: usize = 16;
/// Primary (7:0), secondary (15:8) and subordinate (23:16) bus numbers of a type-1 header.
pub(super) const REG_BUS_NUMBERS: u8 = 0x18;
/// Bus numbers a hotplug port keeps behind it without a `bus-reserve` hint.
pub const HOTPLUG_BUSES: u8 = 1;

/// One function found by the scan, with its sized BARs.
pub(super) struct Node {
    pub(super) df: DeviceFunction,
    /// The sized memory BARs; empty when disabled.
    pub(super) bars: Vec<(u8, BarRequest)>,
    /// False when sizing failed or the header is unknown: never enabled.
    pub(super) ok: bool,
    pub(super) bridge: Option<BridgeNode>,
    /// The windows it asks of its bus (bridges only; set by the sizing in `window.rs`).
    pub(super) needs: Needs,
}

/// A bridge found by the scan.
pub(super) struct BridgeNode {
    pub(super) buses: BridgeBuses,
    /// The functions on its secondary bus.
    pub(super) children: Vec<Node>,
    /// Whether the prefetchable window decodes 64-bit addresses.
    pub(super) pref64: bool,
    pub(super) hotplug: Option<HotplugSlot>,
    pub(super) hints: Option<ReserveHints>,
}

/// Scan state: the next free bus number and the buses already scanned.
struct Scan {
    next_bus: u16,
    seen: [bool; 256],
    /// Bridges from the root bus down to the bus being scanned.
    chain: Vec<DeviceFunction>,
}

impl<C: ConfigurationAccess + WritableClone> PciHost<C> {
    /// Every function reachable from the root bus, depth-first through bridges: assigns bus
    /// numbers, sizes all BARs, sizes and programs the bridge windows, places every BAR and
    /// enables decoding (see the module docs of `enumerate.rs` and `window.rs`). Failures are
    /// logged and disable only the function or bridge concerned. Returns the records of every
    /// function found (also kept: [`PciHost::functions`]).
    pub fn enumerate(&mut self) -> Vec<PciFunction> {
        self.functions.clear();
        self.bridges.clear();
        if self.bus_start > self.bus_end {
            return Vec::new();
        }
        let mut scan = Scan {
            next_bus: u16::from(self.bus_start) + 1,
            seen: [false; 256],
            chain: Vec::new(),
        };
        let nodes = self.scan_bus(self.bus_start, &mut scan);
        self.assign_root(nodes);
        self.functions.clone()
    }

    fn scan_bus(&mut self, bus: u8, scan: &mut Scan) -> Vec<Node> {
        scan.seen[usize::from(bus)] = true;
        let found: Vec<_> = self.root.enumerate_bus(bus).collect();
        let mut nodes = Vec::with_capacity(found.len());
        for (df, dfi) in found {
            let mut f = self.describe(df, &dfi, &scan.chain);
            info!(
                "pci: {df} {:04x}:{:04x} class {:02x}.{:02x} {:?} virtio {:?} pin {} intid {:?}",
                f.vendor_id,
                f.device_id,
                f.class,
                f.subclass,
                f.header_type,
                f.virtio,
                f.interrupt_pin,
                f.intid
            );
            let mut node = Node {
                df,
                bars: Vec::new(),
                ok: false,
                bridge: None,
                needs: Needs::default(),
            };
            match f.header_type {
                HeaderType::Standard | HeaderType::PciPciBridge => match self.size_bars(df) {
                    Ok(bars) => {
                        node.bars = bars;
                        node.ok = true;
                    }
                    Err(e) => error!("pci: {e}; function disabled"),
                },
                other => {
                    let e = PciError::UnsupportedHeader {
                        df,
                        header: header_code(other),
                    };
                    error!("pci: {e}; function disabled");
                }
            }
            if node.ok && f.header_type == HeaderType::PciPciBridge {
                match self.scan_bridge(df, &f, scan) {
                    Ok(b) => {
                        f.bridge = Some(b.buses);
                        f.hotplug = b.hotplug;
                        node.bridge = Some(b);
                    }
                    Err(e) => {
                        error!("pci: {e}; bridge disabled");
                        self.close_bridge(df);
                        node.ok = false;
                        node.bars.clear();
                    }
                }
            }
            self.functions.push(f);
            nodes.push(node);
        }
        nodes
    }

    fn scan_bridge(
        &mut self,
        df: DeviceFunction,
        f: &PciFunction,
        scan: &mut Scan,
    ) -> Result<BridgeNode, PciError> {
        if scan.chain.len() >= MAX_BRIDGE_DEPTH {
            return Err(PciError::BridgeTooDeep(df));
        }
        let secondary = u8::try_from(scan.next_bus)
            .ok()
            .filter(|&b| b <= self.bus_end)
            .ok_or(PciError::OutOfBusNumbers(df))?;
        let primary = df.bus;
        self.writer.write_word(
            df,
            REG_BUS_NUMBERS,
            bus_numbers(primary, secondary, self.bus_end),
        );
        let read = self.reader.read_word(df, REG_BUS_NUMBERS);
        let (read_primary, read_secondary) = (read as u8, (read >> 8) as u8);
        if (read_primary, read_secondary) != (primary, secondary) {
            // Forward nothing: secondary and subordinate 0.
            self.writer
                .write_word(df, REG_BUS_NUMBERS, u32::from(primary));
            return Err(if scan.seen[usize::from(read_secondary)] {
                PciError::BusLoop {
                    bridge: df,
                    secondary: read_secondary,
                }
            } else {
                PciError::BusNumbers {
                    bridge: df,
                    wrote: secondary,
                    read: read_secondary,
                }
            });
        }
        scan.next_bus += 1;
        let hotplug = caps::hotplug_slot(&self.reader, df, &f.capabilities);
        let hints = caps::reserve_hints(&self.reader, df, f.vendor_id, &f.capabilities);
        scan.chain.push(df);
        let children = self.scan_bus(secondary, scan);
        scan.chain.pop();
        // Keep the hotplug reservation: `buses` numbers from the secondary on.
        let reserve_buses = match (hotplug, hints.and_then(|h| h.buses)) {
            (Some(_), Some(n)) => n.max(1),
            (Some(_), None) => u32::from(HOTPLUG_BUSES),
            (None, _) => 1,
        };
        let reserved_last = (u32::from(secondary) + reserve_buses - 1).min(u32::from(self.bus_end));
        let used_last = u32::from(scan.next_bus - 1);
        let subordinate = used_last.max(reserved_last) as u8;
        scan.next_bus = u16::from(subordinate) + 1;
        self.writer.write_word(
            df,
            REG_BUS_NUMBERS,
            bus_numbers(primary, secondary, subordinate),
        );
        if hotplug.is_some() && u32::from(subordinate - secondary) + 1 < reserve_buses {
            warn!("pci: {df}: only buses {secondary}..={subordinate} left for the hotplug slot");
        }
        Ok(BridgeNode {
            buses: BridgeBuses {
                secondary,
                subordinate,
            },
            children,
            pref64: self.pref_window_is_64bit(df),
            hotplug,
            hints,
        })
    }

    /// The record of one function; its INTx is routed through the bridges in `chain`.
    pub(super) fn describe(
        &self,
        df: DeviceFunction,
        dfi: &DeviceFunctionInfo,
        chain: &[DeviceFunction],
    ) -> PciFunction {
        let interrupt_pin = (self.reader.read_word(df, REG_INTERRUPT) >> 8) as u8;
        let intid = match interrupt_pin {
            0 => None,
            1..=4 => {
                let intid = self.route_through(df, interrupt_pin, chain);
                if intid.is_none() {
                    warn!(
                        "pci: {df}: INT{} not in interrupt-map",
                        pin_name(interrupt_pin)
                    );
                }
                intid
            }
            _ => {
                warn!("pci: {df}: invalid interrupt pin {interrupt_pin}");
                None
            }
        };
        PciFunction {
            df,
            vendor_id: dfi.vendor_id,
            device_id: dfi.device_id,
            class: dfi.class,
            subclass: dfi.subclass,
            header_type: dfi.header_type,
            virtio: virtio_device_type(dfi),
            interrupt_pin,
            intid,
            parent: chain.last().copied(),
            capabilities: caps::capabilities(&self.reader, df),
            bridge: None,
            hotplug: None,
        }
    }

    /// INTx `pin` of `df` as the root bus sees it: swizzled at every bridge of `chain` (the
    /// nearest last), then looked up in the `interrupt-map` with the root-bus bridge's number.
    fn route_through(&self, df: DeviceFunction, pin: u8, chain: &[DeviceFunction]) -> Option<u32> {
        let (mut pin, mut at) = (pin, df);
        for &bridge in chain.iter().rev() {
            pin = swizzle_intx(pin, at.device);
            at = bridge;
        }
        route_intx(&self.irq_map, at.bus, at.device, at.function, pin)
    }
}

/// The bus-number register of a type-1 header (secondary latency timer 0).
fn bus_numbers(primary: u8, secondary: u8, subordinate: u8) -> u32 {
    u32::from(primary) | (u32::from(secondary) << 8) | (u32::from(subordinate) << 16)
}

fn header_code(h: HeaderType) -> u8 {
    match h {
        HeaderType::Standard => 0,
        HeaderType::PciPciBridge => 1,
        HeaderType::PciCardbusBridge => 2,
        HeaderType::Unrecognised(code) => code,
    }
}
