//! Bridge windows: size them bottom-up, place everything top-down, program the registers.
//!
//! # Sizing
//!
//! Every bus has *items*: the memory BARs of its functions (a bridge's own BARs, such as a
//! root port's BAR0 with its MSI-X table, decode on the bus the bridge sits on) and the
//! memory and prefetchable windows of its bridges. Items are placed in one order everywhere:
//! alignment first, then size, largest first. A bridge's windows are sized by placing its
//! secondary bus's items, in that order, into two stand-in windows at address 0 with the
//! [`BarAllocator`] the real placement uses (one non-prefetchable 32-bit, one prefetchable,
//! 64-bit when the bridge decodes 64-bit prefetchable addresses): the bytes used, rounded up
//! to [`WINDOW_ALIGN`], are the window's size, and the largest item alignment (at least
//! 1 MiB) is its alignment. A real window at such an alignment, filled in the same order,
//! gives every item the same offset, so the placement below always fits. The stand-ins are
//! as big as the host's biggest window of that kind: an item that does not fit there can
//! never be placed, so its function is disabled and the bus is sized again without it.
//!
//! A hotplug-capable port's windows are at least its reservation: QEMU's `mem-reserve` and
//! `pref64-reserve` (or `pref32-reserve`) hints when the port has them, else
//! [`HOTPLUG_MEM_BYTES`] and [`HOTPLUG_PREF_BYTES`]; the bus reservation is in `enumerate.rs`.
//! The window registers hold whole MiB, so sizes and bases are multiples of 1 MiB.
//!
//! # Placement
//!
//! The root bus's items come from the host bridge's windows, a bridge's secondary bus's
//! items from the bridge's windows (a [`BarAllocator`] over them, kept in [`BridgeState`] so
//! a device added later behind a hotplug port is placed in the reservation). An item that
//! does not fit disables its function (a bridge: windows closed, nothing forwarded, nothing
//! below it enabled), with an error naming it; the others go on.
//!
//! I/O: no I/O BAR is ever placed (`PciHost::setup_bars`), so every I/O window is closed
//! (base above limit). A closed memory window is base 0xfff0_0000 above limit 0x000f_ffff
//! (the reset value 0/0 would decode the first MiB). Bridges that forward get
//! MEMORY | IO | BUS_MASTER in their command register.

use alloc::vec::Vec;
use log::{error, info};
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, DeviceFunction};

use super::enumerate::{BridgeNode, Node};
use super::{
    AllocError, Allocation, BarAllocator, BarAssignment, BarRequest, BarWidth, BridgeBuses,
    PciError, PciHost, Space, Window, WritableClone, MIN_BAR_ALLOC_BYTES,
};

/// Granule and minimum alignment of bridge memory windows (the registers hold MiB).
pub const WINDOW_ALIGN: u64 = 1 << 20;
/// Non-prefetchable memory a hotplug port keeps without a `mem-reserve` hint.
pub const HOTPLUG_MEM_BYTES: u64 = 1 << 20;
/// Prefetchable memory a hotplug port keeps without a `pref64-reserve` hint.
pub const HOTPLUG_PREF_BYTES: u64 = 1 << 20;

const REG_IO_BASE_LIMIT: u8 = 0x1c;
const REG_MEM_BASE_LIMIT: u8 = 0x20;
const REG_PREF_BASE_LIMIT: u8 = 0x24;
const REG_PREF_BASE_UPPER: u8 = 0x28;
const REG_PREF_LIMIT_UPPER: u8 = 0x2c;
const REG_IO_UPPER: u8 = 0x30;
const PREF_TYPE_64: u32 = 1;

/// A request for bus address space: a BAR or a bridge window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) size: u64,
    pub(super) align: u64,
    pub(super) width: BarWidth,
    pub(super) prefetchable: bool,
}

impl Span {
    fn of_bar(r: &BarRequest) -> Span {
        let span = r.size_bytes.max(MIN_BAR_ALLOC_BYTES);
        Span {
            size: span,
            align: span,
            width: r.width,
            prefetchable: r.prefetchable,
        }
    }
}

/// The windows a bridge asks of the bus above it (`None` = closed).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Needs {
    pub(super) mem: Option<Span>,
    pub(super) pref: Option<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Bar(u8),
    Mem,
    Pref,
}

/// One item of a bus: what it is, whose (index into the bus's nodes), how big.
#[derive(Debug, Clone, Copy)]
struct Item {
    node: usize,
    what: What,
    span: Span,
}

/// A bridge that forwards: its buses, its windows, and the allocator placing BARs behind it.
#[derive(Debug, Clone)]
pub struct BridgeState {
    /// The bridge.
    pub df: DeviceFunction,
    /// Its bus numbers.
    pub buses: BridgeBuses,
    /// Its windows as placed (memory first, then prefetchable; closed ones left out).
    pub windows: Vec<Window>,
    /// Its hotplug slot, if it is a hotplug-capable port.
    pub hotplug: Option<super::caps::HotplugSlot>,
    pub(super) allocator: BarAllocator,
}

/// The items of one bus in placement order (alignment, then size, largest first).
fn items(nodes: &[Node]) -> Vec<Item> {
    let mut items = Vec::new();
    for (i, n) in nodes.iter().enumerate().filter(|(_, n)| n.ok) {
        for (bar, req) in &n.bars {
            items.push(Item {
                node: i,
                what: What::Bar(*bar),
                span: Span::of_bar(req),
            });
        }
        for (what, span) in [(What::Mem, n.needs.mem), (What::Pref, n.needs.pref)] {
            if let Some(span) = span {
                items.push(Item {
                    node: i,
                    what,
                    span,
                });
            }
        }
    }
    items.sort_by_key(|it| core::cmp::Reverse((it.span.align, it.span.size)));
    items
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to).saturating_mul(to)
}

impl<C: ConfigurationAccess + WritableClone> PciHost<C> {
    /// Sizes every bridge window below `nodes` (bottom-up), then places the root bus in the
    /// host bridge's windows (top-down).
    pub(super) fn assign_root(&mut self, mut nodes: Vec<Node>) {
        self.size_bus(&mut nodes);
        let mut host = core::mem::replace(&mut self.allocator, BarAllocator::new(&[]));
        self.place_bus(nodes, &mut host);
        self.allocator = host;
    }

    /// Records the windows every bridge in `nodes` needs, sizing the buses below them first.
    fn size_bus(&mut self, nodes: &mut [Node]) {
        for n in nodes.iter_mut() {
            n.needs = match n.bridge.as_mut() {
                Some(b) if n.ok => self.size_bridge(n.df, b),
                _ => Needs::default(),
            };
        }
    }

    fn size_bridge(&mut self, df: DeviceFunction, b: &mut BridgeNode) -> Needs {
        self.size_bus(&mut b.children);
        let bound32 = self.largest_window(&[Space::Mem32]);
        let bound = self.largest_window(&[Space::Mem32, Space::Mem64]);
        let pref_space = if b.pref64 { Space::Mem64 } else { Space::Mem32 };
        let stand_ins = [
            window(Space::Mem32, false, bound32),
            window(pref_space, true, if b.pref64 { bound } else { bound32 }),
        ];
        // Place, drop what can never fit, place again (each round disables at least one).
        let (mut mem, mut pref) = loop {
            let mut sim = BarAllocator::new(&stand_ins);
            let mut align = [WINDOW_ALIGN; 2];
            let mut failed = None;
            for it in items(&b.children) {
                match sim.allocate_span(
                    it.span.size,
                    it.span.align,
                    it.span.width,
                    it.span.prefetchable,
                ) {
                    Ok(a) => align[a.window] = align[a.window].max(it.span.align),
                    Err(cause) => {
                        failed = Some((it, cause));
                        break;
                    }
                }
            }
            match failed {
                Some((it, cause)) => {
                    let child = &mut b.children[it.node];
                    error!(
                        "pci: {}; function disabled",
                        item_error(child.df, it, cause)
                    );
                    child.ok = false;
                    child.bars.clear();
                }
                None => {
                    let size = |i: usize| round_up(sim.used_bytes(i), WINDOW_ALIGN);
                    break ((size(0), align[0]), (size(1), align[1]));
                }
            }
        };
        if let Some(slot) = b.hotplug {
            let hints = b.hints.unwrap_or_default();
            let mem_reserve = hints.mem_bytes.unwrap_or(HOTPLUG_MEM_BYTES);
            let pref_hint = if b.pref64 {
                hints.pref64_bytes.or(hints.pref32_bytes)
            } else {
                hints.pref32_bytes
            };
            let pref_reserve = pref_hint.unwrap_or(HOTPLUG_PREF_BYTES);
            mem.0 = mem.0.max(round_up(mem_reserve, WINDOW_ALIGN));
            pref.0 = pref.0.max(round_up(pref_reserve, WINDOW_ALIGN));
            info!(
                "pci: {df}: hotplug slot {}: reserved buses {}..={}, mem {} KiB, pref{} {} KiB{}",
                slot.slot_number,
                b.buses.secondary,
                b.buses.subordinate,
                mem.0 >> 10,
                if b.pref64 { "64" } else { "32" },
                pref.0 >> 10,
                if b.hints.is_some() {
                    " (QEMU reserve hints)"
                } else {
                    ""
                }
            );
        }
        let span = |(size, align): (u64, u64), width, prefetchable| {
            (size != 0).then_some(Span {
                size,
                align,
                width,
                prefetchable,
            })
        };
        Needs {
            mem: span(mem, BarWidth::Bits32, false),
            pref: span(
                pref,
                if b.pref64 {
                    BarWidth::Bits64
                } else {
                    BarWidth::Bits32
                },
                true,
            ),
        }
    }

    fn largest_window(&self, spaces: &[Space]) -> u64 {
        self.windows
            .iter()
            .filter(|w| spaces.contains(&w.space))
            .map(|w| w.size)
            .max()
            .unwrap_or(0)
    }

    /// Places the items of one bus from `alloc`, then programs each function and bridge
    /// whose items all fit, and goes down into the bridges.
    fn place_bus(&mut self, nodes: Vec<Node>, alloc: &mut BarAllocator) {
        let items = items(&nodes);
        let mut got: Vec<(Item, Allocation)> = Vec::with_capacity(items.len());
        let mut failed = alloc::vec![false; nodes.len()];
        for it in items {
            if failed[it.node] {
                continue;
            }
            let s = it.span;
            match alloc.allocate_span(s.size, s.align, s.width, s.prefetchable) {
                Ok(a) => got.push((it, a)),
                Err(cause) => {
                    let what = if nodes[it.node].bridge.is_some() {
                        "bridge"
                    } else {
                        "function"
                    };
                    error!(
                        "pci: {}; {what} disabled",
                        item_error(nodes[it.node].df, it, cause)
                    );
                    failed[it.node] = true;
                }
            }
        }
        for (i, node) in nodes.into_iter().enumerate() {
            let df = node.df;
            if !node.ok || failed[i] {
                if node.bridge.is_some() {
                    self.close_bridge(df);
                }
                continue;
            }
            let mine = || got.iter().filter(move |(it, _)| it.node == i);
            let bars: Vec<BarAssignment> = mine()
                .filter_map(|(it, a)| match it.what {
                    What::Bar(bar) => {
                        let req = node.bars.iter().find(|(b, _)| *b == bar)?.1;
                        Some(BarAssignment::new(bar, &req, a))
                    }
                    _ => None,
                })
                .collect();
            let Some(bridge) = node.bridge else {
                if let Err(e) = self.program_bars(df, bars, Command::empty()) {
                    error!("pci: {e}; function disabled");
                }
                continue;
            };
            let window_of = |what| {
                mine()
                    .find(|(it, _)| it.what == what)
                    .map(|(it, a)| (a.pci_addr, a.cpu_addr, it.span.size))
            };
            let (mem, pref) = (window_of(What::Mem), window_of(What::Pref));
            self.program_windows(df, mem, pref, bridge.pref64);
            if let Err(e) = self.program_bars(df, bars, Command::IO_SPACE) {
                error!("pci: {e}; bridge disabled");
                self.close_bridge(df);
                continue;
            }
            let pref_space = if bridge.pref64 {
                Space::Mem64
            } else {
                Space::Mem32
            };
            let windows: Vec<Window> = [(Space::Mem32, false, mem), (pref_space, true, pref)]
                .into_iter()
                .filter_map(|(space, prefetchable, w)| {
                    w.map(|(pci_addr, cpu_addr, size)| Window {
                        space,
                        prefetchable,
                        pci_addr,
                        cpu_addr,
                        size,
                    })
                })
                .collect();
            let mut child = BarAllocator::new(&windows);
            self.place_bus(bridge.children, &mut child);
            self.bridges.push(BridgeState {
                df,
                buses: bridge.buses,
                windows,
                hotplug: bridge.hotplug,
                allocator: child,
            });
        }
    }

    /// Programs a bridge's windows (`None` closes one) and closes its I/O window.
    fn program_windows(
        &mut self,
        df: DeviceFunction,
        mem: Option<(u64, u64, u64)>,
        pref: Option<(u64, u64, u64)>,
        pref64: bool,
    ) {
        let regs = |w: Option<(u64, u64, u64)>| match w {
            Some((base, _, size)) => (base, base + size - 1),
            None => (0xfff0_0000, 0x000f_ffff),
        };
        let (mem_base, mem_limit) = regs(mem);
        let (pref_base, pref_limit) = regs(pref);
        let half = |a: u64| ((a >> 16) & 0xfff0) as u32;
        let pref_type = if pref64 { PREF_TYPE_64 } else { 0 };
        let w = &mut self.writer;
        w.write_word(df, REG_IO_BASE_LIMIT, 0x00f0);
        w.write_word(df, REG_IO_UPPER, 0);
        w.write_word(
            df,
            REG_MEM_BASE_LIMIT,
            half(mem_base) | (half(mem_limit) << 16),
        );
        w.write_word(
            df,
            REG_PREF_BASE_LIMIT,
            (half(pref_base) | pref_type) | ((half(pref_limit) | pref_type) << 16),
        );
        if pref64 {
            w.write_word(df, REG_PREF_BASE_UPPER, (pref_base >> 32) as u32);
            w.write_word(df, REG_PREF_LIMIT_UPPER, (pref_limit >> 32) as u32);
        }
        let show = |w: Option<(u64, u64, u64)>| w.map(|(base, _, size)| (base, base + size));
        info!(
            "pci: {df}: windows mem {:x?} pref {:x?} (bus addresses, end exclusive), io closed",
            show(mem),
            show(pref)
        );
    }

    /// A bridge that must forward nothing: windows closed, decoding and mastering off.
    pub(super) fn close_bridge(&mut self, df: DeviceFunction) {
        let pref64 = self.pref_window_is_64bit(df);
        self.program_windows(df, None, None, pref64);
        let (_, command) = self.root.get_status_command(df);
        self.root.set_command(
            df,
            command - (Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER),
        );
    }

    /// Whether the bridge's prefetchable window decodes 64-bit addresses (type bits 3:0).
    pub(super) fn pref_window_is_64bit(&self, df: DeviceFunction) -> bool {
        self.reader.read_word(df, REG_PREF_BASE_LIMIT) & 0xf == PREF_TYPE_64
    }
}

fn window(space: Space, prefetchable: bool, size: u64) -> Window {
    Window {
        space,
        prefetchable,
        pci_addr: 0,
        cpu_addr: 0,
        size,
    }
}

fn item_error(df: DeviceFunction, it: Item, cause: AllocError) -> PciError {
    match it.what {
        What::Bar(bar) => PciError::Bar {
            df,
            bar,
            size: it.span.size,
            cause,
        },
        What::Mem | What::Pref => PciError::BridgeWindow {
            bridge: df,
            prefetchable: it.what == What::Pref,
            size: it.span.size,
            cause,
        },
    }
}
