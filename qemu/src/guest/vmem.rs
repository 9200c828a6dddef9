//! `vmem` and the resize log line as types, and the resize actions.
//!
//! `vmem` prints one line per virtio-mem device, in the guest's (PCI) order:
//!
//! ```text
//! id=vmem0 addr=0x140000000 region_kib=4194304 block_kib=2048 usable_kib=4194304
//!     plugged_kib=1048576 requested_kib=1048576 pending_kib=0 node=0 state=ok reason=none
//!     guest_plugged_kib=1048576 moved_kib=0 left_kib=0 pci=00:01.0
//! ```
//!
//! (one line on the console). `addr` is the guest physical start of the device region (QMP's
//! `memaddr`, the key that matches a line to QMP's device), `region_kib`, `block_kib` and `node`
//! the device's, `plugged_kib` and `requested_kib` the guest's view of QMP's `size` and
//! `requested-size`, `pending_kib` what is still to plug or unplug, `state` `ok`, `busy`,
//! `stalled` or `broken`, and `reason` why a device is not where it was asked to be (`none`
//! when it is). The keys after `reason` came later (older kernels lack them, so they are
//! `Option`s): `guest_plugged_kib` the guest's own accounting of what it holds plugged (its
//! bitmap, not the device's count), `moved_kib` what the unplug in progress (or the last one)
//! migrated, `left_kib` what it still has to unplug, `pci` the device's PCI address
//! (`BB:DD.F`; with `addr`, what identifies a device: `id=vmemN` is never reused, so a device
//! that leaves and comes back has a new id). The sizes that move (`usable_kib`,
//! `plugged_kib`, `requested_kib`) are read from the device when `vmem` runs, and `state=busy`
//! holds from the config change until the pass that answers it ends, so `state=ok` is never
//! the old request's. `vmem wait` ([`vmem_wait`]) prints the same lines once the devices are
//! settled, and `vmem state` ([`super::vmem_state`], in `state.rs`) compares the device's STATE with the guest's
//! view over a range. Until the guest has published a status (right after the prompt, before its
//! first convergence pass) `vmem` prints only [`NO_DEVICE`]; [`vmem_if_ready`] reports that as
//! `None`, [`vmem`] as an error.
//!
//! When a resize completes the kernel logs, once the status above already shows it,
//!
//! ```text
//! [INFO] vmem0: resized to 4096 MiB (requested 4096 MiB): plugged 4096 MiB, unplugged 0 MiB,
//!     migrated 0 MiB, 1 requests, 170000 us
//! ```
//!
//! ([`ResizeLog`]; one line; `migrated` is missing in older kernels). A resize is a QMP
//! `qom-set vmN requested-size` ([`resize`]); [`wait_resize_log`] waits for its log line.

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::qmp::Qmp;
use crate::record::{parse_records, Record};

/// What `vmem` prints before the guest has published any device status.
pub const NO_DEVICE: &str = "vmem: no virtio-mem device";
/// Pause between scans of the console transcript for a resize log line.
const LOG_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// One device's line of `vmem`. Displays as the record the guest printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmemLine {
    /// `vmemN`, the guest's name for the device.
    pub id: String,
    /// Guest physical start of the device region.
    pub addr: u64,
    /// Size of the region: the most the device can plug.
    pub region_kib: u64,
    /// The device's block size.
    pub block_kib: u64,
    /// What the device may plug now (whole blocks, at least the request).
    pub usable_kib: u64,
    /// Plugged now.
    pub plugged_kib: u64,
    /// The request the guest has seen.
    pub requested_kib: u64,
    /// Still to plug or unplug.
    pub pending_kib: u64,
    /// NUMA node of the region.
    pub node: u64,
    /// `ok`, `busy`, `stalled` or `broken`.
    pub state: String,
    /// Why the device is not at its request (`none` when it is, or is on its way).
    pub reason: String,
    /// What the guest holds plugged by its own accounting (newer kernels).
    pub guest_plugged_kib: Option<u64>,
    /// Migrated by the unplug in progress, or the last one (newer kernels).
    pub moved_kib: Option<u64>,
    /// Still to unplug in the unplug in progress (newer kernels).
    pub left_kib: Option<u64>,
    /// `pci=BB:DD.F` (`None` on older kernels).
    pub pci: Option<String>,
    record: Record,
}

impl VmemLine {
    /// The typed view of one `vmem` record.
    pub fn from_record(record: &Record) -> Result<VmemLine> {
        Ok(VmemLine {
            id: record.str("id")?.to_string(),
            addr: record.u64("addr")?,
            region_kib: record.u64("region_kib")?,
            block_kib: record.u64("block_kib")?,
            usable_kib: record.u64("usable_kib")?,
            plugged_kib: record.u64("plugged_kib")?,
            requested_kib: record.u64("requested_kib")?,
            pending_kib: record.u64("pending_kib")?,
            node: record.u64("node")?,
            state: record.str("state")?.to_string(),
            reason: record.str("reason")?.to_string(),
            guest_plugged_kib: optional_u64(record, "guest_plugged_kib")?,
            moved_kib: optional_u64(record, "moved_kib")?,
            left_kib: optional_u64(record, "left_kib")?,
            pci: record.get("pci").map(str::to_string),
            record: record.clone(),
        })
    }

    /// Nothing pending and `state=ok`: the guest is done with the request it has seen.
    pub fn converged(&self) -> bool {
        self.pending_kib == 0 && self.state == "ok"
    }
}

/// `key`'s number, `None` when the record lacks the key (an error when it is not a number).
fn optional_u64(record: &Record, key: &str) -> Result<Option<u64>> {
    match record.get(key) {
        None => Ok(None),
        Some(_) => record.u64(key).map(Some),
    }
}

impl fmt::Display for VmemLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

/// What `vmem` printed once the guest has a status. Displays as its lines, one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vmem {
    /// One line per device, in the order printed.
    pub devices: Vec<VmemLine>,
}

impl Vmem {
    /// Parses `vmem` output lines; `None` when the guest printed [`NO_DEVICE`].
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Option<Vmem>> {
        if let [only] = lines {
            if only.as_ref() == NO_DEVICE {
                return Ok(None);
            }
        }
        let devices = parse_records(lines)?
            .iter()
            .map(VmemLine::from_record)
            .collect::<Result<_>>()?;
        Ok(Some(Vmem { devices }))
    }

    /// The line of the device whose region starts at `addr` (QMP's `memaddr`).
    pub fn by_addr(&self, addr: u64) -> Option<&VmemLine> {
        self.devices.iter().find(|d| d.addr == addr)
    }

    /// The line of the device at PCI address `pci` (`01:00.0`).
    pub fn by_pci(&self, pci: &str) -> Option<&VmemLine> {
        self.devices.iter().find(|d| d.pci.as_deref() == Some(pci))
    }

    /// The line with `id=<id>` (`vmem0`, ...).
    pub fn by_id(&self, id: &str) -> Option<&VmemLine> {
        self.devices.iter().find(|d| d.id == id)
    }
}

impl fmt::Display for Vmem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::write_lines(f, &self.devices)
    }
}

/// Runs `vmem`; `None` while the guest prints [`NO_DEVICE`].
pub fn vmem_if_ready(console: &mut Console, deadline: impl Into<Deadline>) -> Result<Option<Vmem>> {
    Vmem::parse(&console.command("vmem", deadline)?.lines)
}

/// Runs `vmem`, which must show the devices' status.
pub fn vmem(console: &mut Console, deadline: impl Into<Deadline>) -> Result<Vmem> {
    vmem_if_ready(console, deadline)?
        .ok_or_else(|| Error::Protocol(format!("`vmem` printed `{NO_DEVICE}`")))
}

/// Runs `vmem wait [vmemN] <timeout_ms>` and returns the lines it printed (the records, then
/// `vmem wait: timeout after … ms` if it timed out) and whether it timed out. `device` is the
/// guest's index (`vmemN`), all devices when `None`. The console deadline must outlast
/// `timeout_ms`.
pub fn vmem_wait(
    console: &mut Console,
    device: Option<usize>,
    timeout_ms: u64,
    deadline: impl Into<Deadline>,
) -> Result<(Vmem, bool)> {
    let cmd = match device {
        Some(d) => format!("vmem wait vmem{d} {timeout_ms}"),
        None => format!("vmem wait {timeout_ms}"),
    };
    let mut lines = console.command(&cmd, deadline)?.lines;
    let timed_out = lines
        .last()
        .is_some_and(|l| l.starts_with("vmem wait: timeout after "));
    if timed_out {
        lines.pop();
    }
    let vmem = Vmem::parse(&lines)?
        .ok_or_else(|| Error::Protocol(format!("`{cmd}` printed `{NO_DEVICE}`")))?;
    Ok((vmem, timed_out))
}

/// `qom-set vm<device> requested-size <bytes>` over QMP: asks the guest to resize virtio-mem
/// device `device` (the machine's order, [`Machine::virtio_mem_id`]).
pub fn resize(
    qmp: &mut Qmp,
    device: usize,
    bytes: u64,
    deadline: impl Into<Deadline>,
) -> Result<()> {
    qmp.set_requested_size(&Machine::virtio_mem_id(device), bytes, deadline)
}

/// The kernel's log line after a completed resize (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeLog {
    /// Guest device index (`vmemN`, PCI order).
    pub device: u32,
    /// Plugged size after the resize.
    pub size_mib: u64,
    /// The request it converged to.
    pub requested_mib: u64,
    /// Plugged during the resize.
    pub plugged_mib: u64,
    /// Unplugged during the resize.
    pub unplugged_mib: u64,
    /// Used memory moved out of unplugged blocks (0 when the line predates the field).
    pub migrated_mib: u64,
    /// Device requests sent (PLUG, UNPLUG, STATE, ...).
    pub requests: u64,
    /// Time the guest took, from the first step that saw the new request to convergence.
    pub us: u64,
}

impl ResizeLog {
    /// Parses one resize log line (anything before `vmemN:` is ignored, so the `[INFO] ` prefix
    /// and a prompt the log interrupted do not matter).
    pub fn parse(line: &str) -> Option<ResizeLog> {
        let at = line.find(": resized to ")?;
        let head = &line[..at];
        let device = head[head.rfind("vmem")? + 4..].parse().ok()?;
        let rest = &line[at + ": resized to ".len()..];
        let (size_mib, rest) = number_then(rest, " MiB (requested ")?;
        let (requested_mib, rest) = number_then(rest, " MiB): plugged ")?;
        let (plugged_mib, rest) = number_then(rest, " MiB, unplugged ")?;
        let (unplugged_mib, rest) = number_then(rest, " MiB, ")?;
        let (migrated_mib, rest) = match rest.strip_prefix("migrated ") {
            Some(r) => number_then(r, " MiB, ")?,
            None => (0, rest),
        };
        let (requests, rest) = number_then(rest, " requests, ")?;
        let (us, rest) = number_then(rest, " us")?;
        rest.trim().is_empty().then_some(ResizeLog {
            device,
            size_mib,
            requested_mib,
            plugged_mib,
            unplugged_mib,
            migrated_mib,
            requests,
            us,
        })
    }

    /// The first resize log line in `text` for guest device `device` that reached `size_mib`
    /// with exactly that much requested.
    pub fn find(text: &str, device: u32, size_mib: u64) -> Option<ResizeLog> {
        text.lines()
            .filter_map(|l| ResizeLog::parse(l.trim_end_matches('\r')))
            .find(|r| r.device == device && r.size_mib == size_mib && r.requested_mib == size_mib)
    }
}

/// A decimal number at the start of `text` followed by `sep`; the number and what follows `sep`.
fn number_then<'a>(text: &'a str, sep: &str) -> Option<(u64, &'a str)> {
    let (n, rest) = text.split_once(sep)?;
    Some((n.parse().ok()?, rest))
}

/// Waits for the log line of guest device `device` resized to `size_mib`, in the transcript from
/// byte `from` (a [`Console::position`] taken before the request). It scans the transcript, not
/// the console's cursor, because a command run meanwhile may have consumed the line. Fails at
/// once on a `PANIC:` line or when QEMU exited.
pub fn wait_resize_log(
    console: &mut Console,
    from: usize,
    device: u32,
    size_mib: u64,
    deadline: impl Into<Deadline>,
) -> Result<ResizeLog> {
    let deadline = deadline.into();
    let what = format!("the `vmem{device}: resized to {size_mib} MiB` log line");
    let started = Instant::now();
    loop {
        if let Some(log) = ResizeLog::find(&console.text_since(from), device, size_mib) {
            return Ok(log);
        }
        if let Some(line) = console.panic_line() {
            return Err(Error::GuestPanic { what, line });
        }
        if console.closed() {
            return Err(Error::QemuExited {
                what,
                status: None,
                stderr: String::new(),
            });
        }
        if deadline.expired() {
            return Err(Error::Timeout {
                what,
                waited: started.elapsed(),
            });
        }
        thread::sleep(LOG_POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "id=vmem0 addr=0x140000000 region_kib=4194304 block_kib=2048 \
                        usable_kib=4194304 plugged_kib=1048576 requested_kib=1048576 \
                        pending_kib=0 node=0 state=ok reason=none";

    #[test]
    fn vmem_lines_parse() {
        let second = LINE
            .replace("vmem0", "vmem1")
            .replace("0x140000000", "0x240000000")
            .replace("pending_kib=0", "pending_kib=2048")
            .replace("state=ok reason=none", "state=stalled reason=pinned");
        let v = Vmem::parse(&[LINE, second.as_str()]).unwrap().unwrap();
        assert_eq!(v.devices.len(), 2);
        let d = v.by_addr(0x1_4000_0000).unwrap();
        assert_eq!(
            (d.id.as_str(), d.plugged_kib, d.node, d.block_kib),
            ("vmem0", 1_048_576, 0, 2048)
        );
        assert!(d.converged());
        let s = v.by_id("vmem1").unwrap();
        assert_eq!((s.state.as_str(), s.reason.as_str()), ("stalled", "pinned"));
        assert!(!s.converged());
        assert_eq!(s.to_string(), second);
        assert_eq!(v.to_string(), format!("{LINE}\n{second}"));
        assert!(v.by_addr(0).is_none());
        assert_eq!(Vmem::parse(&[NO_DEVICE]).unwrap(), None);
        assert!(Vmem::parse(&[LINE.replace(" node=0", "")]).is_err());
        // Older kernels lack the appended keys; newer ones have them.
        assert_eq!(d.guest_plugged_kib, None);
        let newer = format!("{LINE} guest_plugged_kib=1048576 moved_kib=512 left_kib=0");
        let v = Vmem::parse(&[newer.as_str()]).unwrap().unwrap();
        let n = &v.devices[0];
        assert_eq!(
            (n.guest_plugged_kib, n.moved_kib, n.left_kib),
            (Some(1_048_576), Some(512), Some(0))
        );
        assert_eq!(n.to_string(), newer);
        assert_eq!(n.pci, None);
        // `pci=` last; a device is found by it.
        let with_pci = format!("{newer} pci=01:00.0");
        let v = Vmem::parse(&[with_pci.as_str()]).unwrap().unwrap();
        assert_eq!(v.devices[0].pci.as_deref(), Some("01:00.0"));
        assert_eq!(v.by_pci("01:00.0").map(|d| d.addr), Some(0x1_4000_0000));
        assert!(v.by_pci("00:01.0").is_none());
        assert!(Vmem::parse(&[format!("{LINE} moved_kib=x")]).is_err());
        assert!(Vmem::parse(&["vmem: something else"]).is_err());
    }

    const RESIZE_LINE: &str = "[INFO] vmem0: resized to 4096 MiB (requested 4096 MiB): plugged \
                               4096 MiB, unplugged 0 MiB, 1 requests, 170000 us";

    #[test]
    fn resize_log_parses() {
        assert_eq!(
            ResizeLog::parse(RESIZE_LINE),
            Some(ResizeLog {
                device: 0,
                size_mib: 4096,
                requested_mib: 4096,
                plugged_mib: 4096,
                unplugged_mib: 0,
                migrated_mib: 0,
                requests: 1,
                us: 170_000,
            })
        );
        let r = ResizeLog::parse(
            "[INFO] vmem0: resized to 1024 MiB (requested 1024 MiB): plugged 0 MiB, \
             unplugged 3072 MiB, migrated 512 MiB, 9 requests, 900000 us",
        )
        .unwrap();
        assert_eq!(
            (r.unplugged_mib, r.migrated_mib, r.requests),
            (3072, 512, 9)
        );
        // A log that interrupted the prompt, another device, an unplug.
        let r = ResizeLog::parse(
            "hotmem> [INFO] vmem12: resized to 0 MiB (requested 0 MiB): plugged 0 MiB, \
             unplugged 1024 MiB, 3 requests, 34 us",
        )
        .unwrap();
        assert_eq!(
            (r.device, r.size_mib, r.unplugged_mib, r.requests, r.us),
            (12, 0, 1024, 3, 34)
        );
    }

    #[test]
    fn resize_log_rejects_other_lines() {
        for line in [
            "[INFO] vmem0: unplugged 4 MiB left plugged from before",
            "[INFO] vmem0: resized to 4096 MiB (requested 4096 MiB)",
            "[INFO] vmem0: resized to x MiB (requested 4096 MiB): plugged 4096 MiB, unplugged 0 \
             MiB, 1 requests, 170000 us",
            "[INFO] vmem0: resized to 4096 MiB (requested 4096 MiB): plugged 4096 MiB, unplugged \
             0 MiB, 1 requests, 170000 us and more",
            "[INFO] dev: resized to 4096 MiB (requested 4096 MiB): plugged 4096 MiB, unplugged 0 \
             MiB, 1 requests, 170000 us",
        ] {
            assert_eq!(ResizeLog::parse(line), None, "{line}");
        }
    }

    #[test]
    fn find_resize_log_matches_device_and_size() {
        let text = format!(
            "mem\r\n[INFO] vmem1: resized to 4096 MiB (requested 4096 MiB): plugged 4096 MiB, \
             unplugged 0 MiB, 1 requests, 5 us\r\n[INFO] vmem0: resized to 1024 MiB (requested \
             1024 MiB): plugged 1024 MiB, unplugged 0 MiB, 1 requests, 6 us\r\nhotmem> \
             {RESIZE_LINE}\r\nhotmem> "
        );
        assert_eq!(ResizeLog::find(&text, 0, 4096).unwrap().us, 170_000);
        assert_eq!(ResizeLog::find(&text, 1, 4096).unwrap().us, 5);
        assert_eq!(ResizeLog::find(&text, 0, 1024).unwrap().us, 6);
        assert_eq!(ResizeLog::find(&text, 0, 2048), None);
    }
}
