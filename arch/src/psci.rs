//! PSCI (Arm DEN 0022) calls over HVC or SMC, as the DT's `/psci` `method` says.

use core::sync::atomic::{AtomicU8, Ordering};

const PSCI_VERSION: u64 = 0x8400_0000;
const CPU_ON_64: u64 = 0xc400_0003;
const SYSTEM_OFF: u64 = 0x8400_0008;
const SYSTEM_RESET: u64 = 0x8400_0009;

/// The conduit of PSCI calls (the DT's `/psci` `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `hvc #0`: handled by a hypervisor.
    Hvc,
    /// `smc #0`: handled by secure firmware.
    Smc,
}

/// PSCI return codes (negative values of the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciError {
    /// NOT_SUPPORTED (-1).
    NotSupported,
    /// INVALID_PARAMETERS (-2).
    InvalidParameters,
    /// DENIED (-3).
    Denied,
    /// ALREADY_ON (-4).
    AlreadyOn,
    /// ON_PENDING (-5).
    OnPending,
    /// INTERNAL_FAILURE (-6).
    InternalFailure,
    /// NOT_PRESENT (-7).
    NotPresent,
    /// DISABLED (-8).
    Disabled,
    /// INVALID_ADDRESS (-9).
    InvalidAddress,
    /// Any other negative value.
    Unknown(i64),
    /// No method configured (the DT has no `/psci`).
    NoMethod,
}

static METHOD: AtomicU8 = AtomicU8::new(0);

/// Selects the conduit for every later call.
pub fn set_method(m: Method) {
    METHOD.store(if m == Method::Hvc { 1 } else { 2 }, Ordering::Release);
}

/// One call through the conduit instruction `$insn` (`"hvc #0"` or `"smc #0"`), per the SMC
/// calling convention: x0-x3 carry the function id and arguments, x0 the result, and the
/// firmware may clobber x4-x17. Expands to an `asm!`: use it inside an `unsafe` block.
macro_rules! conduit_call {
    ($insn:literal, $func:expr, $a1:expr, $a2:expr, $a3:expr) => {{
        let ret: i64;
        core::arch::asm!($insn, inout("x0") $func => ret, inout("x1") $a1 => _,
            inout("x2") $a2 => _, inout("x3") $a3 => _, out("x4") _, out("x5") _,
            out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _,
            out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _, options(nostack));
        ret
    }};
}

fn call(func: u64, a1: u64, a2: u64, a3: u64) -> Result<i64, PsciError> {
    let ret = match METHOD.load(Ordering::Acquire) {
        // SAFETY: a PSCI call per the SMC calling convention; x0-x3 are arguments, x0 the
        // result, and the firmware may clobber x4-x17 only where marked.
        1 => unsafe { conduit_call!("hvc #0", func, a1, a2, a3) },
        // SAFETY: as above, through the secure monitor.
        2 => unsafe { conduit_call!("smc #0", func, a1, a2, a3) },
        _ => return Err(PsciError::NoMethod),
    };
    if ret >= 0 {
        return Ok(ret);
    }
    Err(match ret {
        -1 => PsciError::NotSupported,
        -2 => PsciError::InvalidParameters,
        -3 => PsciError::Denied,
        -4 => PsciError::AlreadyOn,
        -5 => PsciError::OnPending,
        -6 => PsciError::InternalFailure,
        -7 => PsciError::NotPresent,
        -8 => PsciError::Disabled,
        -9 => PsciError::InvalidAddress,
        e => PsciError::Unknown(e),
    })
}

/// (major, minor) PSCI version.
pub fn version() -> Result<(u16, u16), PsciError> {
    let v = call(PSCI_VERSION, 0, 0, 0)? as u64;
    Ok(((v >> 16) as u16, v as u16))
}

/// Starts CPU `mpidr` at physical address `entry_pa` with `context` in x0.
pub fn cpu_on(mpidr: u64, entry_pa: u64, context: u64) -> Result<(), PsciError> {
    call(CPU_ON_64, mpidr, entry_pa, context).map(|_| ())
}

/// Powers the machine off (QEMU exits with status 0). Spins if PSCI is unavailable.
pub fn system_off() -> ! {
    let _ = call(SYSTEM_OFF, 0, 0, 0);
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Resets the machine.
pub fn system_reset() -> ! {
    let _ = call(SYSTEM_RESET, 0, 0, 0);
    loop {
        aarch64_cpu::asm::wfe();
    }
}
