//! BAR placement: a bump allocator over the host bridge's memory windows. Pure data, no
//! config space: [`PciHost::setup_bars`](super::PciHost::setup_bars) sizes the BARs, asks
//! here for each one (largest first), and programs what it gets.
//!
//! Rules (one [`BarAllocator::allocate`] call):
//! - a BAR gets a naturally aligned range of `max(size, 4 KiB)`, so two BARs never share a
//!   page and each can be mapped on its own;
//! - 64-bit BARs go to a MEM64 window and fall back to MEM32; 32-bit BARs go to MEM32 and
//!   end below 4 GiB (legacy type-1 BARs below 1 MiB), checked against the address, since
//!   the windows come from the untrusted DT;
//! - prefetchable BARs try prefetchable windows first; a non-prefetchable BAR never goes
//!   into a prefetchable window;
//! - space is never given back: a caller that fails half-way restores a clone taken before.
//!
//! Windows that are empty or wrap around the address space are kept (so indices match the
//! caller's list) but never used.

use alloc::vec::Vec;
use core::fmt;

use log::warn;
use virtio_drivers::transport::pci::bus::MemoryBarType;

use super::{Space, Window};

/// Smallest range given to a memory BAR: one page, so that BARs never share a page.
pub const MIN_BAR_ALLOC_BYTES: u64 = 4096;
pub(super) const LIMIT_4GIB: u64 = 1 << 32;
const LIMIT_1MIB: u64 = 1 << 20;

/// Why a BAR could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocError {
    /// The device reported a size that is zero or not a power of two.
    SizeNotPowerOfTwo,
    /// No window of a type this BAR may live in.
    NoWindow,
    /// Suitable windows exist but none has room (or the BAR is bigger than all of them).
    OutOfSpace,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SizeNotPowerOfTwo => f.write_str("size is not a power of two"),
            Self::NoWindow => f.write_str("no suitable window"),
            Self::OutOfSpace => f.write_str("out of window space"),
        }
    }
}

/// Where a memory BAR may be decoded (its type bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarWidth {
    /// Legacy type 1: must end below 1 MiB.
    Below1MiB,
    /// Type 0: anywhere below 4 GiB.
    Bits32,
    /// Type 2: anywhere (two BAR slots).
    Bits64,
}

impl From<MemoryBarType> for BarWidth {
    fn from(t: MemoryBarType) -> Self {
        match t {
            MemoryBarType::Width32 => Self::Bits32,
            MemoryBarType::Below1MiB => Self::Below1MiB,
            MemoryBarType::Width64 => Self::Bits64,
        }
    }
}

/// A memory BAR to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRequest {
    /// The BAR's size; must be a power of two.
    pub size_bytes: u64,
    /// Where it may be decoded.
    pub width: BarWidth,
    /// Whether it is prefetchable (and so may use prefetchable windows).
    pub prefetchable: bool,
}

/// A placed BAR: program `pci_addr`, map `cpu_addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The bus address to program into the BAR.
    pub pci_addr: u64,
    /// Where the CPU sees it: the address to map.
    pub cpu_addr: u64,
    /// Index into the windows given to [`BarAllocator::new`].
    pub window: usize,
}

#[derive(Debug, Clone)]
struct WindowState {
    window: Window,
    /// Bytes of the window handed out so far (bump pointer, from `pci_addr`).
    used_bytes: u64,
}

/// Bump allocator over the host bridge's memory windows.
///
/// Invariant: every allocation is naturally aligned on the bus (to `max(size, 4 KiB)`), lies
/// inside one window, and never overlaps another.
#[derive(Debug, Clone)]
pub struct BarAllocator {
    windows: Vec<WindowState>,
}

impl BarAllocator {
    /// Windows that are empty or wrap around the address space are kept (so indices match the
    /// input) but never used.
    pub fn new(windows: &[Window]) -> Self {
        let windows = windows
            .iter()
            .map(|&window| {
                let valid = window.size != 0
                    && window.pci_addr.checked_add(window.size).is_some()
                    && window.cpu_addr.checked_add(window.size).is_some();
                if !valid {
                    warn!("pci: ignoring window {window:x?}: empty or wraps");
                }
                WindowState {
                    window,
                    // An unusable window is "full".
                    used_bytes: if valid { 0 } else { window.size },
                }
            })
            .collect();
        Self { windows }
    }

    /// Places one BAR. Candidates, in order: for 64-bit BARs the MEM64 windows, then MEM32; for
    /// 32-bit BARs the MEM32 windows, below 4 GiB (1 MiB for legacy type 1). Prefetchable windows
    /// come first for prefetchable BARs and are never used for the others.
    pub fn allocate(&mut self, req: BarRequest) -> Result<Allocation, AllocError> {
        if !req.size_bytes.is_power_of_two() {
            return Err(AllocError::SizeNotPowerOfTwo);
        }
        let span = req.size_bytes.max(MIN_BAR_ALLOC_BYTES);
        self.allocate_span(span, span, req.width, req.prefetchable)
    }

    /// Places `size_bytes` aligned to `align_bytes` (a power of two) with the window rules of
    /// [`BarAllocator::allocate`]: a BAR is a span aligned to its size, a bridge window a span
    /// of whole MiB aligned to at least 1 MiB.
    pub fn allocate_span(
        &mut self,
        size_bytes: u64,
        align_bytes: u64,
        width: BarWidth,
        prefetchable: bool,
    ) -> Result<Allocation, AllocError> {
        if size_bytes == 0 || !align_bytes.is_power_of_two() {
            return Err(AllocError::SizeNotPowerOfTwo);
        }
        let (spaces, limit): (&[Space], u64) = match width {
            BarWidth::Bits64 => (&[Space::Mem64, Space::Mem32], u64::MAX),
            BarWidth::Bits32 => (&[Space::Mem32], LIMIT_4GIB),
            BarWidth::Below1MiB => (&[Space::Mem32], LIMIT_1MIB),
        };
        // Prefetchable requests try prefetchable windows first.
        let prefetch_order: &[bool] = if prefetchable {
            &[true, false]
        } else {
            &[false]
        };
        let mut any_candidate = false;
        for &space in spaces {
            for &prefetchable in prefetch_order {
                for (index, ws) in self.windows.iter_mut().enumerate() {
                    let w = ws.window;
                    if w.space != space || w.prefetchable != prefetchable {
                        continue;
                    }
                    any_candidate = true;
                    if let Some(pci_addr) = fit(ws, size_bytes, align_bytes, limit) {
                        ws.used_bytes = pci_addr - w.pci_addr + size_bytes;
                        return Ok(Allocation {
                            pci_addr,
                            cpu_addr: w.cpu_addr + (pci_addr - w.pci_addr),
                            window: index,
                        });
                    }
                }
            }
        }
        Err(if any_candidate {
            AllocError::OutOfSpace
        } else {
            AllocError::NoWindow
        })
    }

    /// Bytes of window `index` handed out so far, from its base (0 for an unknown index).
    pub fn used_bytes(&self, index: usize) -> u64 {
        self.windows.get(index).map_or(0, |ws| ws.used_bytes)
    }

    /// The CPU physical address of `size_bytes` at bus address `pci_addr`, if one memory window
    /// holds all of it.
    pub fn pci_to_cpu(&self, pci_addr: u64, size_bytes: u64) -> Option<u64> {
        let end = pci_addr.checked_add(size_bytes)?;
        self.windows
            .iter()
            .map(|ws| ws.window)
            .filter(|w| w.space != Space::Io)
            .find(|w| {
                pci_addr >= w.pci_addr
                    && w.pci_addr
                        .checked_add(w.size)
                        .is_some_and(|w_end| end <= w_end)
            })
            .map(|w| w.cpu_addr + (pci_addr - w.pci_addr))
    }
}

/// First `size_bytes` aligned to `align_bytes` (a power of two) free in `ws` and ending at or
/// below `limit`.
fn fit(ws: &WindowState, size_bytes: u64, align_bytes: u64, limit: u64) -> Option<u64> {
    let w = ws.window;
    let free = w.pci_addr.checked_add(ws.used_bytes)?;
    let start = free.checked_add(align_bytes - 1)? & !(align_bytes - 1);
    let end = start.checked_add(size_bytes)?;
    (end <= w.pci_addr + w.size && end <= limit).then_some(start)
}
