//! What the kernel tells about a device while its policy works: the [`Snapshot`] the worker
//! publishes, the [`Record`] `vmem` prints (the snapshot joined with the newest
//! configuration), the [`Pace`] of publishing and of progress lines during a long pass, and
//! the STATE spot check of `vmem state` ([`Vmem::query_state`]).
//!
//! # Two sources, one record
//! The policy sees the configuration only when it steps, and the worker steps it. The
//! snapshot says what the policy holds (its state and reason, the units it holds plugged,
//! what the unplug in progress moved and has left) as of its last step, plus whether it has
//! work pending. The record takes the sizes that move (`usable`, `plugged`, `requested`)
//! from the newest configuration, read outside the worker, and the rest from the snapshot.
//! Its state is the policy's, except that it is `busy` whenever the snapshot cannot answer
//! the newest configuration:
//! - an interrupt arrived that no finished pass has answered (`unanswered`), or
//! - the newest configuration's sizes differ from those of the policy's last step, or
//! - the policy said `ok` but has work pending (a mid-pass snapshot, a leftover reset, an
//!   unresolved UNPLUG, a `plugged_size` still to audit).
//!
//! A broken device stays broken. So `state=ok` means: the last step of a finished pass saw
//! exactly the configuration the device shows now and had nothing left to do; the
//! device's `plugged_size` is then the request, up to the plug unit (`reason=granularity`
//! when the request is not a multiple of it: `pending_kib` is the remainder below one
//! unit, which the policy will never plug).
//!
//! # Pace
//! During a pass the worker publishes a snapshot at most every [`PUBLISH_EVERY_NS`], and
//! once a resize has lasted [`PROGRESS_AFTER_NS`] it logs a progress line at most every
//! [`PROGRESS_EVERY_NS`] ([`ProgressLine`]). The final snapshot is published when the pass
//! ends.

use super::{Device, Progress, Reason, State, Vmem, MAX_BLOCKS_PER_REQUEST};
use core::fmt;
use hotmem_arch::addr::PhysRange;
use hotmem_drivers::virtio_mem::{BlockState, Config, Request, Response};

/// Shortest time between two snapshots published during a pass.
pub const PUBLISH_EVERY_NS: u64 = 100_000_000;
/// How long a resize runs before progress lines start.
pub const PROGRESS_AFTER_NS: u64 = 1_000_000_000;
/// Shortest time between two progress lines.
pub const PROGRESS_EVERY_NS: u64 = 1_000_000_000;

/// What the policy holds about one device after a step ([`Vmem::snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The configuration the last step read.
    pub cfg: Config,
    /// The policy's state.
    pub state: State,
    /// Why it is not converged.
    pub reason: Reason,
    /// Bytes of the units the policy holds plugged (online, or offline while an UNPLUG's
    /// outcome is asked for).
    pub guest_plugged: u64,
    /// Bytes moved out by the unplug in progress, or the last one (0 before any).
    pub moved: u64,
    /// Bytes still to unplug (0 when the policy is not unplugging).
    pub left: u64,
    /// Bytes still to plug (0 when the policy is not plugging).
    pub to_plug: u64,
    /// Whether the policy has work pending for the configuration it read.
    pub working: bool,
    /// What the current (or last) resize did so far.
    pub progress: Progress,
}

/// One `vmem` record: a snapshot joined with the newest configuration (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The device's configuration: the fixed fields from the snapshot, `usable_region_size`,
    /// `plugged_size` and `requested_size` from the newest read.
    pub cfg: Config,
    /// `state=`.
    pub state: State,
    /// `reason=`.
    pub reason: Reason,
    /// `guest_plugged_kib=` in bytes.
    pub guest_plugged: u64,
    /// `moved_kib=` in bytes.
    pub moved: u64,
    /// `left_kib=` in bytes.
    pub left: u64,
    /// `id=vmemN`: the device's id, never reused while the kernel runs (0 until
    /// [`Record::device`] sets it).
    pub id: usize,
    /// `pci=BB:DD.F`, the last key of the record (`None` until [`Record::device`] sets it;
    /// printed as `-`).
    pub pci: Option<PciAddr>,
}

/// A PCI function's address, printed `BB:DD.F` (hex bus and device, function digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAddr {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

impl Record {
    /// The record of `snap` under the newest configuration `live` (`None` when it could not
    /// be read: the snapshot's is used), `unanswered` when an interrupt arrived that no
    /// finished pass answered.
    pub fn new(snap: &Snapshot, live: Option<&Config>, unanswered: bool) -> Record {
        let mut cfg = snap.cfg;
        if let Some(l) = live {
            cfg.usable_region_size = l.usable_region_size;
            cfg.plugged_size = l.plugged_size;
            cfg.requested_size = l.requested_size;
        }
        let stale = unanswered
            || cfg.usable_region_size != snap.cfg.usable_region_size
            || cfg.plugged_size != snap.cfg.plugged_size
            || cfg.requested_size != snap.cfg.requested_size;
        let (state, reason) = match snap.state {
            State::Broken => (State::Broken, snap.reason),
            _ if stale => (State::Busy, Reason::None),
            State::Ok if snap.working => (State::Busy, Reason::None),
            s => (s, snap.reason),
        };
        Record {
            cfg,
            state,
            reason,
            guest_plugged: snap.guest_plugged,
            moved: snap.moved,
            left: snap.left,
            id: 0,
            pci: None,
        }
    }

    /// The record of device `vmem{id}` at PCI address `pci`.
    pub fn device(self, id: usize, pci: PciAddr) -> Record {
        Record {
            id,
            pci: Some(pci),
            ..self
        }
    }

    /// The `pci=` value: `BB:DD.F`, or `-` when unknown.
    pub fn pci_text(&self) -> alloc::string::String {
        use alloc::string::ToString;
        self.pci.map_or_else(|| "-".into(), |p| p.to_string())
    }

    /// `pending_kib=` in bytes: distance between the requested and the plugged size.
    pub fn pending(&self) -> u64 {
        self.cfg.requested_size.abs_diff(self.cfg.plugged_size)
    }

    /// Whether `vmem wait` is done with this device: converged (`ok`), stalled or broken.
    pub fn settled(&self) -> bool {
        self.state != State::Busy
    }
}

/// A progress line of a long resize (module doc), logged as
/// `vmem0: unplug 1.2 of 3.0 GiB done, 300 MiB migrated` or `vmem0: plug 1.2 of 3.0 GiB done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressLine {
    /// The device (`vmemN`).
    pub id: usize,
    /// Unplugging (else plugging).
    pub unplug: bool,
    /// Bytes done in this resize.
    pub done: u64,
    /// Bytes the resize covers: done plus what is left.
    pub total: u64,
    /// Bytes of used pages moved (unplug only).
    pub migrated: u64,
}

impl Snapshot {
    /// The progress line for this snapshot, if a resize is under way.
    pub fn progress_line(&self, id: usize) -> Option<ProgressLine> {
        let p = &self.progress;
        let (unplug, done, left) = if self.left > 0 {
            (true, p.unplugged_bytes, self.left)
        } else if self.to_plug > 0 {
            (false, p.plugged_bytes, self.to_plug)
        } else {
            return None;
        };
        Some(ProgressLine {
            id,
            unplug,
            done,
            total: done + left,
            migrated: p.migrated_bytes,
        })
    }
}

/// `bytes` in GiB with one decimal, rounded down.
struct Gib(u64);

impl fmt::Display for Gib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = ((u128::from(self.0) * 10) >> 30) as u64;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}

impl fmt::Display for ProgressLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.unplug { "unplug" } else { "plug" };
        write!(
            f,
            "vmem{}: {what} {} of {} GiB done",
            self.id,
            Gib(self.done),
            Gib(self.total)
        )?;
        if self.unplug {
            write!(f, ", {} MiB migrated", self.migrated >> 20)?;
        }
        Ok(())
    }
}

/// When a pass publishes a snapshot and logs progress (module doc). One per device per pass.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    next_publish: u64,
    next_line: u64,
}

impl Pace {
    /// The pace of a pass starting at `now` (ns).
    pub fn new(now: u64) -> Pace {
        Pace {
            next_publish: now + PUBLISH_EVERY_NS,
            next_line: 0,
        }
    }

    /// Whether to publish a snapshot now (then not again for [`PUBLISH_EVERY_NS`]).
    pub fn publish_due(&mut self, now: u64) -> bool {
        let due = now >= self.next_publish;
        if due {
            self.next_publish = now + PUBLISH_EVERY_NS;
        }
        due
    }

    /// Whether to log a progress line now, for a resize that started at `started` (ns):
    /// once it ran [`PROGRESS_AFTER_NS`], then every [`PROGRESS_EVERY_NS`].
    pub fn line_due(&mut self, now: u64, started: Option<u64>) -> bool {
        let due = started.is_some_and(|t0| now >= t0 + PROGRESS_AFTER_NS) && now >= self.next_line;
        if due {
            self.next_line = now + PROGRESS_EVERY_NS;
        }
        due
    }
}

/// Why `vmem state` has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryError {
    /// No such device.
    NoDevice,
    /// The range is empty.
    Empty,
    /// The range does not start and end on block boundaries.
    Unaligned,
    /// The range is not inside the usable region.
    OutsideUsable,
    /// More blocks than one request covers ([`MAX_BLOCKS_PER_REQUEST`]).
    TooManyBlocks,
    /// The device answered BUSY.
    DeviceBusy,
    /// The device is disabled.
    DeviceBroken,
    /// The device failed the request or answered something else than a state.
    DeviceError,
}

impl QueryError {
    /// The reason `vmem state: FAIL <reason>` prints.
    pub fn name(self) -> &'static str {
        match self {
            QueryError::NoDevice => "no_device",
            QueryError::Empty => "empty",
            QueryError::Unaligned => "unaligned",
            QueryError::OutsideUsable => "outside_usable",
            QueryError::TooManyBlocks => "too_many_blocks",
            QueryError::DeviceBusy => "device_busy",
            QueryError::DeviceBroken => "device_broken",
            QueryError::DeviceError => "device_error",
        }
    }
}

/// What `vmem state` found: the device's STATE and the policy's bitmap over one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateReport {
    /// The range asked about.
    pub range: PhysRange,
    /// What the device answered.
    pub device: BlockState,
    /// What the policy holds (plugged units: online, or offline pending an UNPLUG outcome).
    pub guest: BlockState,
}

/// The name `vmem state` prints for a block state.
pub fn block_state_name(s: BlockState) -> &'static str {
    match s {
        BlockState::Plugged => "plugged",
        BlockState::Unplugged => "unplugged",
        BlockState::Mixed => "mixed",
    }
}

impl Vmem {
    /// What the policy holds about the device now (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        let target = self.target_units();
        let held = self.nr_plugged;
        let working = self.state != State::Broken
            && (self.startup_reset
                || !self.pending.is_empty()
                || self.cfg.plugged_size != self.plugged_bytes()
                || held != target);
        Snapshot {
            cfg: self.cfg,
            state: self.state,
            reason: self.reason,
            guest_plugged: self.plugged_bytes(),
            moved: self.moved_bytes,
            left: held.saturating_sub(target) as u64 * self.unit,
            to_plug: target.saturating_sub(held) as u64 * self.unit,
            working,
            progress: self.progress,
        }
    }

    /// What the policy holds over `range`: plugged when every unit it touches is held
    /// plugged, unplugged when none is, else mixed.
    pub fn guest_state(&self, range: PhysRange) -> BlockState {
        let first = ((range.base - self.cfg.addr) / self.unit) as usize;
        let end = (range.base + range.size - self.cfg.addr).div_ceil(self.unit) as usize;
        let units = &self.plugged[first..end.min(self.plugged.len())];
        if units.iter().all(|&p| p) {
            BlockState::Plugged
        } else if units.iter().any(|&p| p) {
            BlockState::Mixed
        } else {
            BlockState::Unplugged
        }
    }

    /// Asks the device STATE over `range` (block-aligned, inside the usable region of the
    /// last configuration read, at most [`MAX_BLOCKS_PER_REQUEST`] blocks) and puts the
    /// answer next to the policy's bitmap. Changes nothing in the policy: the caller runs it
    /// between steps.
    pub fn query_state<D: Device>(
        &self,
        dev: &mut D,
        range: PhysRange,
    ) -> Result<StateReport, QueryError> {
        let c = &self.cfg;
        if self.state == State::Broken {
            return Err(QueryError::DeviceBroken);
        }
        if range.size == 0 {
            return Err(QueryError::Empty);
        }
        if range.base % c.block_size != 0 || range.size % c.block_size != 0 {
            return Err(QueryError::Unaligned);
        }
        let inside = range.base >= c.addr
            && range
                .base
                .checked_add(range.size)
                .is_some_and(|end| end <= c.addr + c.usable_region_size);
        if !inside {
            return Err(QueryError::OutsideUsable);
        }
        let nb_blocks = range.size / c.block_size;
        if nb_blocks > MAX_BLOCKS_PER_REQUEST {
            return Err(QueryError::TooManyBlocks);
        }
        let req = Request::State {
            addr: range.base,
            nb_blocks: nb_blocks as u16,
        };
        let device = match dev.request(req) {
            Ok(Response::AckState(s)) => s,
            Ok(Response::Busy) => return Err(QueryError::DeviceBusy),
            Ok(r) => {
                log::warn!("vmem{}: {req:?} answered {r:?}", self.id);
                return Err(QueryError::DeviceError);
            }
            Err(e) => {
                log::warn!("vmem{}: {req:?} failed: {e:?}", self.id);
                return Err(QueryError::DeviceError);
            }
        };
        Ok(StateReport {
            range,
            device,
            guest: self.guest_state(range),
        })
    }
}
