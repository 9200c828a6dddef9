//! The hotplug policy of one virtio-mem device: how the kernel converges the device's plugged
//! memory to the requested size, and what that means for the memory model.
//!
//! The driver (`hotmem_drivers::virtio_mem`) only speaks the protocol. This module decides
//! which blocks to plug or unplug, in what order, how to react to each response, and when
//! memory is added, onlined, offlined and removed. It is plain logic over two traits —
//! [`Device`] (the driver) and [`HotplugMemory`] (the memory model plus the linear map) — so
//! host tests run it against a fake device and the real memory model.
//!
//! Files: this one holds the policy state, its step and the plug path; `unplug.rs` the
//! unplug path (victim choice, offline, UNPLUG); `reconcile.rs` what happens when the
//! device's answers and the policy's view part (ERROR, a `plugged_size` that disagrees);
//! `types.rs` the traits and the data it exchanges with the kernel glue; `status.rs` what
//! the kernel publishes and prints about a device while it works (snapshot, `vmem` record,
//! progress, the STATE spot check); `model.rs` the
//! memory-model half of [`HotplugMemory`]; `tests.rs` (fakes in `tests/fake.rs`, the error
//! paths in `tests/errors.rs`) the policy against a fake device and the real model.
//!
//! # Units
//! The device plugs blocks of `block_size` (1 MiB .. 1 GiB and more). The memory model works
//! in 2 MiB subsections (pageblocks). We plug, online, offline and unplug in **units** of
//! `max(block_size, 2 MiB)`: with 1 MiB blocks a unit is two blocks sent in one request (as
//! Linux does, so a pageblock is never half plugged); with blocks of a section or more, a unit
//! spans whole sections. A requested size that is not a multiple of the unit is approached
//! from below and the rest reported as pending.
//!
//! # Validation at probe ([`Vmem::new`])
//! The driver checked what the spec promises (block-aligned region, sizes in bounds, no
//! overlap). The policy adds what the kernel needs, once: the region's address and size are
//! multiples of the unit (with 1 MiB blocks a region may start at an odd MiB, and no unit of
//! it would fill whole pageblocks), and the device's node is one the kernel supports, i.e.
//! one the memory model can hold (`node_id < MAX_NODES`; every such node may receive plugged
//! memory, including one the device tree gives neither memory nor CPUs, as QEMU's memory-only
//! nodes; the driver reports node 0 when ACPI_PXM is not negotiated). Otherwise the device is
//! broken from the start, with [`Reason::UnalignedRegion`] or [`Reason::UnsupportedNode`],
//! and never sent a request; the other devices are not affected.
//!
//! # Life of a unit
//! ```text
//!   unplugged --PLUG ack--> plugged --add+online--> online (zone chosen by the memory side)
//!      ^                                                |
//!      |                          offline (isolated, free) <--+ (every page moved out)
//!      |                                |
//!      +---- UNPLUG ack <-- down (sections removed, linear map unmapped)
//!                             |  ^
//!            UNPLUG ERROR --> pending: stays down until STATE says what the device holds
//! ```
//! Unplugged units are never read or written: memory is added to the linear map only after
//! the device acknowledged the PLUG (or STATE said plugged), and it is taken down (its
//! sections removed from the model, its linear map unmapped) *before* the UNPLUG that names
//! it is sent, so nothing, not even the teardown, reads memory the device may already have
//! taken back. NACK or BUSY to an UNPLUG leave the device unchanged, so the unit is added
//! and onlined again at once — after checking that `plugged_size` did not move, else it is
//! treated as ERROR. After ERROR the unit stays down until STATE answers (`reconcile.rs`).
//!
//! # Convergence ([`Vmem::step`])
//! Each call re-reads the configuration and does at most one request (a few when reconciling),
//! then says whether to call again at once, at a time (back-off), or to wait for the next
//! config-change interrupt. In order:
//! 1. Start-up: a device with `plugged_size > 0` (leftovers of a previous boot) is reset with
//!    UNPLUG_ALL (retried on BUSY) before anything else.
//! 2. Units left offline by an UNPLUG error are resolved with STATE.
//! 3. The device's `plugged_size` is compared with the units the policy holds plugged; a
//!    mismatch is logged and reconciled with STATE over the usable region.
//! 4. Plug: units in sections that already have plugged units first, then lowest address
//!    first; contiguous units are batched into one request (at most 65535 blocks, and at most
//!    the current run limit, see BUSY below). Before plugging, [`HotplugMemory::can_add`] must
//!    agree that free Normal memory can hold the new metadata (mem_maps, or with memmap on
//!    memory only table chunks and unit tables) and keep a reserve; a run it refuses is cut
//!    to the longest prefix it accepts (found by bisection, so a short Normal zone still
//!    plugs in large requests), and only when not even one unit fits does the device stall
//!    with `no_memory`, at once, with what it has plugged.
//! 5. Unplug (of free memory first; `unplug.rs`).
//!
//! Every part of a step works with what the step was given, bundled once (`StepCx`): the
//! device, the memory side and the clock.
//!
//! Responses: ACK applies; NACK re-reads the config and retries (the requested size changed
//! under us, or we asked for too much); ERROR is reconciled with STATE (`reconcile.rs`). BUSY
//! to a PLUG of several units halves the run limit and retries at once, so the guest plugs
//! what the host can back (QEMU answers BUSY when `prealloc=on` cannot allocate a request's
//! range, and during a migration); each ACK doubles the limit again, so one busy period does
//! not leave plugging slow. BUSY to a single unit stalls (`state=stalled reason=device_busy`)
//! and retries on the back-off timer (doubling, capped); BUSY to other requests backs off the
//! same way (`state=busy`). A device that keeps contradicting itself (ERROR while STATE says
//! we were right, a `plugged_size` STATE does not bear out) is marked broken; memory already
//! online stays usable.
//!
//! # Locks
//! None here. One `Vmem` per device, owned by the kernel glue, which steps it from one task
//! at a time (the worker); the memory side takes the memory-model lock inside each
//! [`HotplugMemory`] call only.

use crate::mm::{self, NodeId, SECTION_SIZE, SUBSECTION_SIZE};
use alloc::vec::Vec;
use hotmem_arch::addr::PhysRange;
use hotmem_drivers::virtio_mem::{Config, Request, Response};
use stats::Phase;

mod model;
mod reconcile;
pub mod stats;
mod status;
mod types;
mod unplug;

pub use model::{
    mem_map_reserve_bytes, mm_add_online, mm_can_add, mm_err, mm_floor_allows,
    mm_floor_allows_prefix, mm_remove, mm_reonline, mm_used_pages, offline_pass, pfn_range,
    PassSteps,
};
pub use status::{
    block_state_name, Pace, PciAddr, ProgressLine, QueryError, Record, Snapshot, StateReport,
    PROGRESS_AFTER_NS, PROGRESS_EVERY_NS, PUBLISH_EVERY_NS,
};
pub use types::{Device, HotplugMemory, MemError, Next, Progress, Reason, Resized, State};

/// Most blocks one request may cover (le16 nb_blocks).
pub const MAX_BLOCKS_PER_REQUEST: u64 = u16::MAX as u64;

/// First back-off after BUSY or a stall; doubles up to [`BACKOFF_MAX_NS`].
pub const BACKOFF_MIN_NS: u64 = 5_000_000;
/// Longest back-off.
pub const BACKOFF_MAX_NS: u64 = 5_000_000_000;
/// NACKs in a row before backing off instead of retrying at once.
const NACK_RETRIES: u32 = 8;
/// Contradictions in a row (ERROR although STATE agrees with us, with no ACK to a PLUG or
/// an UNPLUG in between) before the device is broken.
const MAX_CONTRADICTIONS: u32 = 3;

/// Policy state of one device.
pub struct Vmem {
    /// The device's index (`vmemN` in logs and in the shell).
    pub id: usize,
    cfg: Config,
    /// The device's node (`cfg.node_id`, fixed until a reset) as the memory model names it;
    /// validated in [`Vmem::new`] (node 0 on a device broken there).
    node: NodeId,
    /// Bytes per unit: max(block_size, 2 MiB).
    unit: u64,
    /// Plugged state per unit of the region, as the policy holds it: plugged units are
    /// online, or offline while in [`Vmem::pending`].
    plugged: Vec<bool>,
    /// How many of `plugged` are set.
    nr_plugged: usize,
    /// Most units one PLUG covers now: halved on BUSY, doubled after each ACK, between 1
    /// and [`Vmem::max_units`].
    plug_limit: usize,
    /// Runs of plugged units taken offline for an UNPLUG whose outcome is unknown (ERROR):
    /// they stay offline, untouched, until STATE says what the device holds.
    pending: Vec<Run>,
    state: State,
    reason: Reason,
    startup_reset: bool,
    retry_at: Option<u64>,
    backoff_ns: u64,
    nacks: u32,
    /// Contradictions since the last ACK to a PLUG or an UNPLUG (see [`MAX_CONTRADICTIONS`]).
    contradictions: u32,
    progress: Progress,
    /// Bytes of used pages moved out by the unplug in progress, or by the last one.
    moved_bytes: u64,
    /// Whether the last step that had work was unplugging (an unplug starting after a plug,
    /// or after convergence, starts `moved_bytes` again).
    unplugging: bool,
    /// The victim order (used pages when counted, unit) of the unplug in progress, kept
    /// from one unplug step to the next: counting the used pages of every plugged unit
    /// walks their mem_maps, and doing it again for each of hundreds of units made that
    /// walk the main cost of unplugging used memory. Only the order can go stale (each
    /// victim's pages are counted again when it is offlined); any step that is not a
    /// successful unplug drops it.
    victims: Option<Vec<(u64, usize)>>,
    /// The last finished resize, until [`Vmem::take_resized`].
    resized: Option<Resized>,
}

/// One contiguous run of units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: usize,
    count: usize,
}

impl Run {
    fn end(self) -> usize {
        self.first + self.count
    }
}

/// What one [`Vmem::step`] works with, handed down to each part of it: the device, the
/// memory side, and the time the step runs at (a monotonic clock in ns).
struct StepCx<'a, D, M> {
    dev: &'a mut D,
    mem: &'a mut M,
    now: u64,
}

/// The requests that cover a range of blocks ([`Vmem::request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Plug,
    Unplug,
    State,
}

impl Vmem {
    /// Policy for a device whose driver validated `cfg`. A device the kernel cannot drive
    /// (see "Validation at probe" in the module doc) starts broken, with the reason.
    pub fn new(id: usize, cfg: Config) -> Vmem {
        let unit = cfg.block_size.max(SUBSECTION_SIZE);
        let nr_units = (cfg.region_size / unit) as usize;
        let node = NodeId::new(u32::from(cfg.node_id));
        let mut v = Vmem {
            id,
            cfg,
            node: node.unwrap_or(NodeId::ZERO),
            unit,
            plugged: alloc::vec![false; nr_units],
            nr_plugged: 0,
            plug_limit: 1,
            pending: Vec::new(),
            state: State::Ok,
            reason: Reason::None,
            startup_reset: cfg.plugged_size > 0,
            retry_at: None,
            backoff_ns: BACKOFF_MIN_NS,
            nacks: 0,
            contradictions: 0,
            progress: Progress::default(),
            moved_bytes: 0,
            unplugging: false,
            victims: None,
            resized: None,
        };
        v.plug_limit = v.max_units();
        let refused = if cfg.addr % unit != 0 || cfg.region_size % unit != 0 {
            log::error!(
                "vmem{id}: region 0x{:x}+{} KiB is not aligned to the {} KiB plug unit; device disabled",
                cfg.addr,
                cfg.region_size >> 10,
                unit >> 10
            );
            Some(Reason::UnalignedRegion)
        } else if node.is_none() {
            log::error!(
                "vmem{id}: node {} is not a node the memory model holds (fewer than {}); device disabled",
                cfg.node_id,
                mm::MAX_NODES
            );
            Some(Reason::UnsupportedNode)
        } else {
            None
        };
        if let Some(reason) = refused {
            v.state = State::Broken;
            v.reason = reason;
        }
        v
    }

    /// The resize that finished since the last call, if any (log it with `{}`).
    pub fn take_resized(&mut self) -> Option<Resized> {
        self.resized.take()
    }

    /// The configuration the last step read.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The device state, as `vmem` shows it.
    pub fn state(&self) -> State {
        self.state
    }
    /// Why the device is not where it was asked to be.
    pub fn reason(&self) -> Reason {
        self.reason
    }
    /// Bytes per unit: max(block size, 2 MiB).
    pub fn unit_bytes(&self) -> u64 {
        self.unit
    }
    /// What the current (or last) resize did so far.
    pub fn progress(&self) -> Progress {
        self.progress
    }
    /// Bytes the kernel holds plugged through this device (online, or offline while the
    /// outcome of an UNPLUG is being asked for).
    pub fn plugged_bytes(&self) -> u64 {
        self.nr_plugged as u64 * self.unit
    }
    /// Units the policy converges to: the request within the usable region, rounded down
    /// to the unit.
    fn target_units(&self) -> usize {
        (self.cfg.requested_size.min(self.cfg.usable_region_size) / self.unit) as usize
    }
    /// Counts `pages` moved out of memory being unplugged.
    fn count_migrated(&mut self, pages: u64) {
        self.progress.migrated_bytes += pages * mm::PAGE_SIZE;
        self.moved_bytes += pages * mm::PAGE_SIZE;
    }
    /// Distance between the requested and the plugged size.
    pub fn pending_bytes(&self) -> u64 {
        self.cfg.requested_size.abs_diff(self.cfg.plugged_size)
    }
    /// The configuration changed (the host asked for a new size): forget any back-off so the
    /// next step runs at once, with a fresh back-off.
    pub fn config_changed(&mut self) {
        self.retry_at = None;
        self.backoff_ns = BACKOFF_MIN_NS;
        self.nacks = 0;
    }

    /// Marks the device broken (an unrecoverable driver error).
    pub fn set_broken(&mut self) {
        self.state = State::Broken;
        self.reason = Reason::DeviceError;
    }

    fn unit_range(&self, first: usize, count: usize) -> PhysRange {
        PhysRange {
            base: self.cfg.addr + first as u64 * self.unit,
            size: count as u64 * self.unit,
        }
    }

    /// The physical range of `run`.
    fn run_range(&self, run: Run) -> PhysRange {
        self.unit_range(run.first, run.count)
    }

    fn blocks(&self, r: PhysRange) -> u16 {
        // Runs are capped at `max_units`, so this fits.
        (r.size / self.cfg.block_size) as u16
    }

    /// The request `op` over the blocks of `range`.
    fn request(&self, op: Op, range: PhysRange) -> Request {
        let (addr, nb_blocks) = (range.base, self.blocks(range));
        match op {
            Op::Plug => Request::Plug { addr, nb_blocks },
            Op::Unplug => Request::Unplug { addr, nb_blocks },
            Op::State => Request::State { addr, nb_blocks },
        }
    }

    /// Most units one request may cover.
    fn max_units(&self) -> usize {
        ((MAX_BLOCKS_PER_REQUEST * self.cfg.block_size) / self.unit).max(1) as usize
    }

    fn backoff(&mut self, now: u64, state: State, reason: Reason) -> Next {
        self.state = state;
        self.reason = reason;
        let t = now + self.backoff_ns;
        self.backoff_ns = (self.backoff_ns * 2).min(BACKOFF_MAX_NS);
        self.retry_at = Some(t);
        Next::RetryAt(t)
    }

    fn mark(&mut self, run: Run, plugged: bool) {
        for p in &mut self.plugged[run.first..run.end()] {
            if *p != plugged {
                *p = plugged;
                if plugged {
                    self.nr_plugged += 1;
                } else {
                    self.nr_plugged -= 1;
                }
            }
        }
    }

    /// Converges one step. `now` is a monotonic clock in ns.
    pub fn step<D: Device, M: HotplugMemory>(
        &mut self,
        dev: &mut D,
        mem: &mut M,
        now: u64,
    ) -> Next {
        if self.state == State::Broken {
            return Next::Idle;
        }
        if let Some(t) = self.retry_at {
            if now < t {
                return Next::RetryAt(t);
            }
            self.retry_at = None;
        }
        let cfg = match dev.config() {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "vmem{}: cannot read the configuration: {e:?}; device disabled",
                    self.id
                );
                self.set_broken();
                return Next::Idle;
            }
        };
        self.cfg = cfg;
        let victims = self.victims.take();
        let cx = &mut StepCx { dev, mem, now };
        if self.startup_reset {
            return self.unplug_all(cx);
        }
        if !self.pending.is_empty() {
            return self.resolve_pending(cx);
        }
        if cfg.plugged_size != self.plugged_bytes() {
            return self.audit(cx);
        }
        let target_units = self.target_units();
        let plugged_units = self.nr_plugged;
        if plugged_units != target_units && self.progress.started_ns.is_none() {
            self.progress = Progress {
                started_ns: Some(now),
                ..Progress::default()
            };
        }
        if plugged_units < target_units {
            self.unplugging = false;
            self.plug(cx, target_units - plugged_units)
        } else if plugged_units > target_units {
            if !self.unplugging {
                self.unplugging = true;
                self.moved_bytes = 0;
            }
            self.unplug(cx, plugged_units - target_units, victims)
        } else {
            self.unplugging = false;
            self.backoff_ns = BACKOFF_MIN_NS;
            self.state = State::Ok;
            self.reason = if cfg.requested_size % self.unit != 0 {
                Reason::Granularity
            } else {
                Reason::None
            };
            if let Some(t0) = self.progress.started_ns.take() {
                self.resized = Some(Resized {
                    id: self.id,
                    plugged_size: cfg.plugged_size,
                    requested_size: cfg.requested_size,
                    progress: self.progress,
                    took_ns: now.saturating_sub(t0),
                });
            }
            Next::Idle
        }
    }

    fn send<D: Device>(&mut self, dev: &mut D, req: Request) -> Option<Response> {
        self.progress.requests += 1;
        match dev.request(req) {
            Ok(r) => {
                log::debug!("vmem{}: {req:?} -> {r:?}", self.id);
                if r == Response::Ack {
                    // The device did what it was asked: its earlier refusals were passing.
                    self.contradictions = 0;
                }
                Some(r)
            }
            Err(e) => {
                log::error!(
                    "vmem{}: {req:?} failed in the transport: {e:?}; device disabled",
                    self.id
                );
                self.set_broken();
                None
            }
        }
    }

    fn unplug_all<D: Device, M>(&mut self, cx: &mut StepCx<D, M>) -> Next {
        match self.send(cx.dev, Request::UnplugAll) {
            Some(Response::Ack) => {
                log::info!(
                    "vmem{}: unplugged {} MiB left plugged from before",
                    self.id,
                    self.cfg.plugged_size >> 20
                );
                self.startup_reset = false;
                self.mark(
                    Run {
                        first: 0,
                        count: self.plugged.len(),
                    },
                    false,
                );
                Next::Again
            }
            Some(Response::Busy) => self.backoff(cx.now, State::Busy, Reason::DeviceBusy),
            Some(r) => {
                log::error!(
                    "vmem{}: UNPLUG_ALL answered {r:?}; device disabled",
                    self.id
                );
                self.set_broken();
                Next::Idle
            }
            None => Next::Idle,
        }
    }

    /// Units to plug, in preference order: those in sections with plugged units first,
    /// then by address. Only units inside the usable region.
    fn plug_candidates(&self, need: usize) -> Vec<usize> {
        let usable_units =
            ((self.cfg.usable_region_size / self.unit) as usize).min(self.plugged.len());
        let per_section = (SECTION_SIZE / self.unit).max(1) as usize;
        let section_of = |u: usize| u / per_section;
        let partial = |u: usize| {
            let s = section_of(u);
            let lo = s * per_section;
            let hi = ((s + 1) * per_section).min(self.plugged.len());
            self.plugged[lo..hi].iter().any(|&p| p)
        };
        let mut first: Vec<usize> = Vec::new();
        let mut rest: Vec<usize> = Vec::new();
        for u in (0..usable_units).filter(|&u| !self.plugged[u]) {
            if per_section > 1 && partial(u) {
                first.push(u);
            } else {
                rest.push(u);
            }
        }
        first.extend(rest);
        first.truncate(need);
        first
    }

    /// Contiguous runs of the given units (sorted), each at most `MAX_BLOCKS_PER_REQUEST`.
    fn runs(&self, mut units: Vec<usize>) -> Vec<Run> {
        units.sort_unstable();
        let max_units = self.max_units();
        let mut runs: Vec<Run> = Vec::new();
        for u in units {
            match runs.last_mut() {
                Some(r) if r.end() == u && r.count < max_units => r.count += 1,
                _ => runs.push(Run { first: u, count: 1 }),
            }
        }
        runs
    }

    fn plug<D: Device, M: HotplugMemory>(&mut self, cx: &mut StepCx<D, M>, need: usize) -> Next {
        let candidates = self.plug_candidates(need);
        // The preferred unit decides the run: the run containing it, in order.
        let Some(&pref) = candidates.first() else {
            // Nothing plugable inside the usable region.
            return self.backoff(cx.now, State::Stalled, Reason::DeviceError);
        };
        let mut run = self
            .runs(candidates)
            .into_iter()
            .find(|r| (r.first..r.end()).contains(&pref))
            .unwrap_or(Run {
                first: pref,
                count: 1,
            });
        if run.count > self.plug_limit {
            // At most the run limit, still holding the preferred unit.
            run = Run {
                first: pref.min(run.end() - self.plug_limit),
                count: self.plug_limit,
            };
        }
        let range = self.run_range(run);
        let node = self.node;
        let pages = range.size / mm::PAGE_SIZE;
        if !stats::time(Phase::CanAdd, pages, || cx.mem.can_add(range, node)) {
            // The largest run from `run.first` the room allows (binary search: the metadata a
            // run needs grows with its length), never one unit per request while more fits.
            let (mut fits, mut too_big) = (0, run.count);
            while too_big - fits > 1 {
                let mid = fits + (too_big - fits) / 2;
                let part = self.unit_range(run.first, mid);
                let pages = part.size / mm::PAGE_SIZE;
                if stats::time(Phase::CanAdd, pages, || cx.mem.can_add(part, node)) {
                    fits = mid;
                } else {
                    too_big = mid;
                }
            }
            if fits == 0 {
                log::warn!(
                    "vmem{}: stopping at {} MiB plugged: no free memory for more mem_maps",
                    self.id,
                    self.plugged_bytes() >> 20
                );
                return self.backoff(cx.now, State::Stalled, Reason::NoMemory);
            }
            run.count = fits;
        }
        self.plug_run(cx, run)
    }

    fn plug_run<D: Device, M: HotplugMemory>(&mut self, cx: &mut StepCx<D, M>, run: Run) -> Next {
        let range = self.run_range(run);
        let req = self.request(Op::Plug, range);
        let pages = range.size / mm::PAGE_SIZE;
        match stats::time(Phase::PlugRequest, pages, || self.send(cx.dev, req)) {
            Some(Response::Ack) => {
                self.plug_limit = self.plug_limit.saturating_mul(2).min(self.max_units());
                self.plugged_ok(cx, run)
            }
            Some(Response::Nack) => self.nack(cx.now),
            Some(Response::Busy) if run.count > 1 => {
                // The host may back a smaller run (prealloc, a migration ending): halve.
                self.plug_limit = run.count / 2;
                log::debug!(
                    "vmem{}: PLUG of {} MiB busy; trying {} MiB",
                    self.id,
                    range.size >> 20,
                    (self.plug_limit as u64 * self.unit) >> 20
                );
                Next::Again
            }
            Some(Response::Busy) => {
                if (self.state, self.reason) != (State::Stalled, Reason::DeviceBusy) {
                    log::warn!(
                        "vmem{}: the host cannot back more now: stopping at {} MiB plugged \
                         (requested {} MiB); retrying later",
                        self.id,
                        self.plugged_bytes() >> 20,
                        self.cfg.requested_size >> 20
                    );
                }
                self.backoff(cx.now, State::Stalled, Reason::DeviceBusy)
            }
            Some(r @ (Response::Error | Response::AckState(_))) => {
                log::error!(
                    "vmem{}: {req:?} answered {r:?}; asking the device for the state",
                    self.id
                );
                self.after_plug_error(cx, run)
            }
            None => Next::Idle,
        }
    }

    /// The device plugged `run`: make it usable, or give it back.
    fn plugged_ok<D: Device, M: HotplugMemory>(&mut self, cx: &mut StepCx<D, M>, run: Run) -> Next {
        self.nacks = 0;
        match self.adopt(cx, run) {
            Ok(()) => {
                self.state = State::Ok;
                self.reason = Reason::None;
                Next::Again
            }
            Err(next) => next,
        }
    }

    /// The device holds `run` plugged and the policy did not: add and online it, or, if the
    /// memory side cannot take it, give it back and stall with `no_memory`.
    fn adopt<D: Device, M: HotplugMemory>(
        &mut self,
        cx: &mut StepCx<D, M>,
        run: Run,
    ) -> Result<(), Next> {
        self.mark(run, true);
        let range = self.run_range(run);
        match cx.mem.add_online(range, self.node) {
            Ok(()) => {
                self.progress.plugged_bytes += range.size;
                Ok(())
            }
            Err(e) => {
                log::warn!(
                    "vmem{}: cannot add 0x{:x}+{} MiB: {e:?}; unplugging it again",
                    self.id,
                    range.base,
                    range.size >> 20
                );
                // Nothing used it: give it back to the device.
                let req = self.request(Op::Unplug, range);
                if self.send(cx.dev, req) == Some(Response::Ack) {
                    self.mark(run, false);
                }
                Err(self.backoff(cx.now, State::Stalled, Reason::NoMemory))
            }
        }
    }

    fn nack(&mut self, now: u64) -> Next {
        self.nacks += 1;
        if self.nacks >= NACK_RETRIES {
            self.nacks = 0;
            return self.backoff(now, State::Busy, Reason::DeviceBusy);
        }
        Next::Again
    }
}

#[cfg(test)]
mod tests;
