//! The guest as the host sees it: what its shell commands and log lines say, as types, and the
//! actions on it that the benchmark, the stress runner and the integration tests share.
//!
//! Every status command prints `key=value` records ([`crate::Record`]); this module gives the
//! ones the host reasons about a type each, so a field is parsed (and a missing or garbled one
//! noticed) in one place:
//! - [`mod@mem`]: `mem`, one [`MemLine`] per node and zone and the `node=all` total ([`Mem`]);
//!   `check` ([`check`]: exactly `check: ok`); the boot line `mm: ... init N us`
//!   ([`parse_mm_init_us`]);
//! - [`mod@vmem`]: `vmem`, one [`VmemLine`] per virtio-mem device ([`Vmem`]); the log line
//!   `vmemN: resized to ...` of a finished resize ([`ResizeLog`]); the resize itself, a QMP
//!   `qom-set vmN requested-size` ([`resize`]), and the wait for its log line
//!   ([`wait_resize_log`]);
//! - [`mod@sections`]: `sections`, one [`SectionLine`] per present section ([`Sections`]), and
//!   what a section-aligned range of them holds present and online ([`Held`]);
//! - [`mod@state`]: `vmem state <vmemN> <addr> <size>`, the device's STATE over a range next
//!   to the guest's bitmap ([`VmemState`]), and whether `help` lists it ([`has_vmem_state`]);
//! - [`hog`]: the `hog: started ...`, `hog: tasks=...` and `hog: stopped ...` lines
//!   ([`HogLine`]) and the actions start, status, wait for a verify round, stop;
//! - [`locks`]: `locks`, one [`LockHolds`] per lock class ([`parse_locks`]);
//! - [`mod@inject`]: the fault-injection plan `inject` prints ([`InjectPlan`]) and the actions
//!   arm and disarm.
//!
//! The actions take the [`Console`] (and the [`crate::Qmp`] where QMP is involved) rather than a
//! whole [`crate::Qemu`], so a caller can run them on one thread while another polls QMP. Each
//! returns an [`Error`] that says what the guest printed instead of what was expected; the
//! tests turn it into a panic, the runners into a failed step. What a caller does with the
//! values (the oracle of a test, the stress runner's excuses for a stall, the benchmark's
//! timings) stays with the caller.
//!
//! The shell contract behind the parsing (echo, CRLF, prompt, log lines starting with `[`) is
//! [`crate::console`]'s; a command whose output is one line is read with [`one_line`].

pub mod hog;
pub mod inject;
pub mod locks;
pub mod mem;
pub mod sections;
pub mod state;
pub mod vmem;

pub use hog::{
    hog_clean, hog_start, hog_status, hog_stop, wait_hog, HogLine, HogStarted, HogStatus,
    HogStopped,
};
pub use inject::{inject_arm, inject_off, inject_plan, InjectPlan};
pub use locks::{parse_locks, LockHolds};
pub use mem::{check, mem, parse_mm_init_us, Limits, Mem, MemLine, MemNode};
pub use sections::{sections, Held, SectionLine, Sections};
pub use state::{has_vmem_state, vmem_state, StateLine, VmemState};
pub use vmem::{
    resize, vmem, vmem_if_ready, vmem_wait, wait_resize_log, ResizeLog, Vmem, VmemLine, NO_DEVICE,
};

use std::fmt;
use std::time::Duration;

use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// Deadline of one shell command that a wait here sends on its own (the 30 s every caller gives
/// a command).
pub const COMMAND: Duration = Duration::from_secs(30);

/// Runs `cmd` and returns its only output line; any other number of lines is an error that
/// shows them.
pub fn one_line(console: &mut Console, cmd: &str, deadline: impl Into<Deadline>) -> Result<String> {
    let out = console.command(cmd, deadline)?;
    match <[String; 1]>::try_from(out.lines) {
        Ok([line]) => Ok(line),
        Err(lines) => Err(Error::Protocol(format!(
            "`{cmd}`: want one line, got {lines:?}"
        ))),
    }
}

/// Waits for the guest to boot again after a reset (QMP `system_reset`, `reboot`): its boot
/// banner (`... booting`), then a fresh prompt, both within `deadline`.
pub fn wait_reboot(console: &mut Console, deadline: impl Into<Deadline>) -> Result<()> {
    let deadline = deadline.into();
    console.wait_for("booting", deadline)?;
    console.wait_for_prompt(deadline)?;
    Ok(())
}

/// Writes `lines` one per line (no newline after the last): how a parsed command output
/// displays, the same text the guest printed.
fn write_lines<T: fmt::Display>(f: &mut fmt::Formatter<'_>, lines: &[T]) -> fmt::Result {
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            f.write_str("\n")?;
        }
        line.fmt(f)?;
    }
    Ok(())
}
