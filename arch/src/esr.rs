//! Exception syndrome decoding and the trap frame, as plain data (host-testable).
//!
//! The vectors in `exception.rs` save a [`TrapFrame`] on the stack and pass it to Rust. The
//! frame's layout is shared with the assembly: the offsets are `const`-asserted below.

use core::fmt;

/// Everything the vectors save: general registers, the interrupted context, FP/SIMD state
/// (the kernel's Rust code may use q registers anywhere, e.g. in memcpy).
#[repr(C, align(16))]
#[derive(Clone)]
pub struct TrapFrame {
    /// General registers x0..=x30.
    pub x: [u64; 31],
    /// Stack pointer at the time of the exception.
    pub sp: u64,
    /// ELR_EL1: where the interrupted context resumes.
    pub elr: u64,
    /// SPSR_EL1: the interrupted context's PSTATE.
    pub spsr: u64,
    /// FP status register.
    pub fpsr: u64,
    /// FP control register.
    pub fpcr: u64,
    /// FP/SIMD registers q0..=q31.
    pub q: [u128; 32],
}

/// Size of a [`TrapFrame`], used by the vector assembly.
pub const FRAME_SIZE: usize = 800;
/// Offset of [`TrapFrame::sp`], used by the vector assembly.
pub const FRAME_SP: usize = 248;
/// Offset of [`TrapFrame::elr`], used by the vector assembly.
pub const FRAME_ELR: usize = 256;
/// Offset of [`TrapFrame::fpsr`], used by the vector assembly.
pub const FRAME_FPSR: usize = 272;
/// Offset of [`TrapFrame::q`], used by the vector assembly.
pub const FRAME_Q: usize = 288;
const _: () = assert!(core::mem::size_of::<TrapFrame>() == FRAME_SIZE);
const _: () = assert!(core::mem::offset_of!(TrapFrame, sp) == FRAME_SP);
const _: () = assert!(core::mem::offset_of!(TrapFrame, elr) == FRAME_ELR);
const _: () = assert!(core::mem::offset_of!(TrapFrame, fpsr) == FRAME_FPSR);
const _: () = assert!(core::mem::offset_of!(TrapFrame, q) == FRAME_Q);

/// Which vector was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum VectorKind {
    /// Synchronous exception (abort, SVC, trapped instruction, ...).
    Sync = 0,
    /// IRQ.
    Irq = 1,
    /// FIQ.
    Fiq = 2,
    /// System error.
    SError = 3,
}

impl VectorKind {
    /// The kind of vector entry `i` (its position within a group of four).
    pub fn from_index(i: u64) -> VectorKind {
        match i & 3 {
            0 => VectorKind::Sync,
            1 => VectorKind::Irq,
            2 => VectorKind::Fiq,
            _ => VectorKind::SError,
        }
    }
}

/// A decoded ESR_EL1 value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    /// Exception class, ESR[31:26].
    pub fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }
    /// Instruction-specific syndrome, ESR[24:0].
    pub fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }
    /// Data abort taken from EL1 (the kernel itself).
    pub fn is_data_abort_same_el(self) -> bool {
        self.ec() == 0x25
    }
    /// Instruction or data abort, from either EL.
    pub fn is_abort(self) -> bool {
        matches!(self.ec(), 0x20 | 0x21 | 0x24 | 0x25)
    }
    /// Data abort caused by a write (ISS.WnR).
    pub fn is_write(self) -> bool {
        matches!(self.ec(), 0x24 | 0x25) && (self.iss() >> 6) & 1 == 1
    }
    /// Fault status code of an abort (DFSC/IFSC).
    pub fn fault_status(self) -> u8 {
        (self.iss() & 0x3f) as u8
    }
    /// Human-readable name of the exception class.
    pub fn class_name(self) -> &'static str {
        match self.ec() {
            0x00 => "Unknown reason",
            0x01 => "WFI/WFE trapped",
            0x07 => "SVE/SIMD/FP access trapped",
            0x0e => "Illegal execution state",
            0x15 => "SVC (AArch64)",
            0x16 => "HVC (AArch64)",
            0x17 => "SMC (AArch64)",
            0x18 => "MSR/MRS/system instruction trapped",
            0x19 => "SVE access trapped",
            0x20 => "Instruction Abort (lower EL)",
            0x21 => "Instruction Abort (current EL)",
            0x22 => "PC alignment fault",
            0x24 => "Data Abort (lower EL)",
            0x25 => "Data Abort (current EL)",
            0x26 => "SP alignment fault",
            0x2c => "FP exception (AArch64)",
            0x2f => "SError",
            0x30 | 0x31 => "Breakpoint",
            0x32 | 0x33 => "Software step",
            0x34 | 0x35 => "Watchpoint",
            0x3c => "BRK instruction",
            _ => "Reserved/unhandled class",
        }
    }
    /// Human-readable name of an abort's fault status.
    pub fn fault_name(self) -> &'static str {
        match self.fault_status() {
            0x00..=0x03 => "address size fault",
            0x04..=0x07 => "translation fault",
            0x09..=0x0b => "access flag fault",
            0x0d..=0x0f => "permission fault",
            0x10 => "synchronous external abort",
            0x21 => "alignment fault",
            0x30 => "TLB conflict abort",
            _ => "other fault",
        }
    }
    /// Translation table level of an address-size/translation/access/permission fault.
    pub fn fault_level(self) -> Option<u8> {
        match self.fault_status() {
            0x00..=0x0f => Some(self.fault_status() & 3),
            _ => None,
        }
    }
}

impl fmt::Display for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ESR=0x{:08x} EC=0x{:02x} ({})",
            self.0,
            self.ec(),
            self.class_name()
        )?;
        if self.is_abort() {
            write!(f, " {}", self.fault_name())?;
            if let Some(l) = self.fault_level() {
                write!(f, " level {l}")?;
            }
            if matches!(self.ec(), 0x24 | 0x25) {
                write!(f, ", {}", if self.is_write() { "write" } else { "read" })?;
            }
        }
        Ok(())
    }
}

/// The multi-line dump printed for an unexpected exception: one `Display` line per row so
/// the console can print it line by line.
pub struct Dump<'a> {
    /// The vector taken.
    pub kind: VectorKind,
    /// ESR_EL1 at the exception.
    pub esr: Esr,
    /// FAR_EL1 at the exception (the faulting address of an abort).
    pub far: u64,
    /// The saved registers.
    pub frame: &'a TrapFrame,
}

impl Dump<'_> {
    /// Number of lines [`Dump::line`] produces.
    pub const LINES: usize = 3 + 8;

    /// Writes line `i` (0-based) of the dump.
    pub fn line(&self, i: usize, f: &mut impl fmt::Write) -> fmt::Result {
        let fr = self.frame;
        match i {
            0 => write!(f, "Unexpected exception: {:?} on the current EL", self.kind),
            1 => write!(f, "  {}", self.esr),
            2 => write!(
                f,
                "  FAR=0x{:016x} ELR=0x{:016x} SPSR=0x{:08x} SP=0x{:016x}",
                self.far, fr.elr, fr.spsr, fr.sp
            ),
            3..=10 => {
                let r = (i - 3) * 4;
                write!(f, " ")?;
                for j in r..(r + 4).min(31) {
                    write!(f, " x{:<2}=0x{:016x}", j, fr.x[j])?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_data_abort() {
        // EC 0x25, ISS: WnR=0, DFSC=0x06 (translation fault level 2)
        let esr = Esr((0x25 << 26) | (1 << 25) | 0x06);
        assert!(esr.is_data_abort_same_el());
        let s = format!("{esr}");
        assert!(s.contains("Data Abort (current EL)"), "{s}");
        assert!(s.contains("translation fault level 2"), "{s}");
        assert!(s.contains("read"), "{s}");
        let w = Esr((0x25 << 26) | (1 << 6) | 0x0f);
        assert!(format!("{w}").contains("permission fault level 3, write"));
    }

    #[test]
    fn dump_has_all_registers() {
        let mut frame = TrapFrame {
            x: [0; 31],
            sp: 0,
            elr: 0xffff_ffff_8008_1234,
            spsr: 0x3c5,
            fpsr: 0,
            fpcr: 0,
            q: [0; 32],
        };
        frame.x[30] = 0xabcdef;
        let d = Dump {
            kind: VectorKind::Sync,
            esr: Esr(0x9600_0006),
            far: 0xdead_0000,
            frame: &frame,
        };
        let mut all = String::new();
        for i in 0..Dump::LINES {
            d.line(i, &mut all).unwrap();
            all.push('\n');
        }
        assert!(all.contains("FAR=0x00000000dead0000"));
        assert!(all.contains("ELR=0xffffffff80081234"));
        assert!(all.contains("x30=0x0000000000abcdef"));
        assert!(all.contains("x0 ="));
    }
}
