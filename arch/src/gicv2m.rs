//! GICv2m: MSIs as SPIs, for a GIC without an ITS.
//!
//! Model (Arm Server Base System Architecture, appendix "GICv2m"): a v2m frame owns a
//! contiguous range of SPIs. A function signals one by writing its INTID to the frame's
//! MSI_SETSPI_NS register (frame + 0x040); the SPI becomes pending at the distributor as
//! an edge, so it is configured edge-triggered and has no line to deassert. MSI_TYPER
//! (frame + 0x008) says which SPIs: first INTID in bits [25:16], count in bits [9:0]. The
//! DT's `arm,msi-base-spi` / `arm,msi-num-spis`, when present, win over it (as they do
//! for Linux), for frames whose MSI_TYPER is wrong.
//!
//! [`V2m`] is the frame's SPI allocator: INTIDs are handed out upwards and never reused.
//! It touches no hardware except for reading MSI_TYPER in [`V2m::probe`]; enabling the
//! SPI is [`crate::gic::enable`] with [`crate::gic::Trigger::Edge`].

/// Offset of MSI_SETSPI_NS, the doorbell.
pub const MSI_SETSPI_NS: u64 = 0x040;

#[cfg(target_os = "none")]
tock_registers::register_structs! {
    /// The start of a v2m frame.
    V2mRegs {
        (0x000 => _reserved0),
        (0x008 => typer: tock_registers::registers::ReadOnly<u32>),
        (0x00c => @END),
    }
}

/// Decodes MSI_TYPER into (first INTID, count); `None` when the range is empty or not
/// inside the SPIs (32..1020).
pub fn decode_typer(v: u32) -> Option<(u32, u32)> {
    let first = (v >> 16) & 0x3ff;
    let count = v & 0x3ff;
    (count > 0 && first >= 32 && first + count <= 1020).then_some((first, count))
}

/// One v2m frame's SPIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2m {
    doorbell_pa: u64,
    next: u32,
    end: u32,
}

impl V2m {
    /// A frame at physical `pa` whose SPIs are `first .. first + count`.
    pub fn new(pa: u64, first: u32, count: u32) -> V2m {
        V2m {
            doorbell_pa: pa + MSI_SETSPI_NS,
            next: first,
            end: first.saturating_add(count),
        }
    }

    /// Reads MSI_TYPER of the frame mapped at `va` (physical `pa`) unless `spis` (from
    /// the DT) is given; `None` when neither names a usable range.
    ///
    /// # Safety
    /// `va` must be a live Device mapping of the v2m frame's first 4 KiB.
    #[cfg(target_os = "none")]
    pub unsafe fn probe(va: usize, pa: u64, spis: Option<(u32, u32)>) -> Option<V2m> {
        let (first, count) = match spis {
            Some(s) => s,
            None => {
                use tock_registers::interfaces::Readable;
                // SAFETY: the caller maps the frame; MSI_TYPER is a read-only register.
                let regs = unsafe { crate::mmio::Mmio::<V2mRegs>::new(va) };
                decode_typer(regs.typer.get())?
            }
        };
        Some(V2m::new(pa, first, count))
    }

    /// The doorbell an MSI writes its INTID (the MSI data) to.
    pub fn doorbell(&self) -> u64 {
        self.doorbell_pa
    }

    /// The next free SPI INTID, `None` when the frame has no more.
    pub fn alloc(&mut self) -> Option<u32> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typer_and_allocation() {
        // QEMU's frame: INTIDs 80.. (SPI 48), 64 of them.
        assert_eq!(decode_typer(80 << 16 | 64), Some((80, 64)));
        assert_eq!(decode_typer(80 << 16), None);
        assert_eq!(decode_typer(16 << 16 | 4), None);
        assert_eq!(decode_typer(1000 << 16 | 64), None);
        let mut v = V2m::new(0x0802_0000, 80, 2);
        assert_eq!(v.doorbell(), 0x0802_0040);
        assert_eq!(
            (v.alloc(), v.alloc(), v.alloc()),
            (Some(80), Some(81), None)
        );
    }
}
