//! The hotplug policy of one virtio-mem device: how the kernel converges the device's plugged
//! memory to the requested size, and what that means for the memory model.
//!
//! The driver (`hotmem_drivers::virtio_mem`) only speaks the protocol. This module decides
//! which blocks to plug or unplug, in what order, how to react to each response, and when
//! memory is added, onlined, offlined and removed. It is plain logic over two traits —
//! [`Device`] (the driver) and [`HotplugMemory`] (the memory model plus the linear map) — so
//! host tests run it against a fake device and the real memory model.
//!
//! Files: this one holds the policy state and its steps; `types.rs` the traits and the
//! data it exchanges with the kernel glue; `model.rs` the memory-model half of
//! [`HotplugMemory`]; `tests.rs` the policy against a fake device and the real model.
//!
//! # Units
//! The device plugs blocks of `block_size` (1 MiB .. 1 GiB and more). The memory model works
//! in 2 MiB subsections (pageblocks). We plug, online, offline and unplug in **units** of
//! `max(block_size, 2 MiB)`: with 1 MiB blocks a unit is two blocks sent in one request (as
//! Linux does, so a pageblock is never half plugged); with blocks of a section or more, a unit
//! spans whole sections. A requested size that is not a multiple of the unit is approached
//! from below and the rest reported as pending.
//!
//! # Life of a unit
//! ```text
//!   unplugged --PLUG ack--> plugged --add+online--> online (zone chosen by the memory side)
//!      ^                                                |
//!      +---- UNPLUG ack <-- offline (isolated, free) <--+ (only when every page is free)
//! ```
//! Unplugged units are never read or written: memory is added to the linear map only after
//! the device acknowledged the PLUG. Offlined memory is unmapped only after the device
//! acknowledged the UNPLUG (nothing touches it in between: it is offline); if the device
//! refuses, the unit goes back online. The memory side onlines into the Movable zone of the
//! device's node, or into Normal when the kernel is booted with `memhp_online=normal`.
//!
//! # Convergence ([`Vmem::step`])
//! Each call re-reads the configuration and does at most one request, then says whether to
//! call again at once, at a time (back-off), or to wait for the next config-change interrupt.
//! - Plug: units in sections that already have plugged units first, then lowest address
//!   first; contiguous units are batched into one request (at most 65535 blocks).
//! - Unplug (of free memory): highest address first.
//! - Before plugging, [`HotplugMemory::can_add`] must agree that free Normal memory can hold
//!   the new mem_maps and keep a reserve; otherwise the device stalls with `no_memory`.
//! - Responses: ACK applies; NACK re-reads the config and retries (the requested size changed
//!   under us, or we asked for too much); BUSY backs off on a timer (doubling, capped);
//!   ERROR is logged and reconciled with a STATE request. A device that keeps contradicting
//!   itself (ERROR while STATE says we were right) is marked broken; memory already online
//!   stays usable.
//! - Start-up: a device with `plugged_size > 0` (leftovers of a previous boot) is reset with
//!   UNPLUG_ALL (retried on BUSY) before the first plug.
//!
//! # Locks
//! None here. One `Vmem` per device, owned by the kernel glue, which steps it from one task
//! at a time (the worker); the memory side takes the memory-model lock inside each
//! [`HotplugMemory`] call only.

use crate::mm::{self, NodeId, SECTION_SIZE, SUBSECTION_SIZE};
use alloc::vec::Vec;
use hotmem_arch::addr::PhysRange;
use hotmem_drivers::virtio_mem::{BlockState, Config, Request, Response};

mod model;
mod types;

pub use model::{
    mem_map_reserve_bytes, mm_add_online, mm_can_add, mm_err, mm_floor_allows, mm_remove,
    mm_reonline, mm_used_pages, pfn_range,
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
/// Contradictions (ERROR although STATE agrees with us) before the device is broken.
const MAX_CONTRADICTIONS: u32 = 3;

/// Policy state of one device.
pub struct Vmem {
    /// The device's index (`vmemN` in logs and in the shell).
    pub id: usize,
    cfg: Config,
    /// The device's node (`cfg.node_id`, fixed until a reset) as the memory model names it,
    /// `None` when the model cannot hold that id: adding memory is then refused.
    node: Option<NodeId>,
    /// Bytes per unit: max(block_size, 2 MiB).
    unit: u64,
    /// Plugged state per unit of the region.
    plugged: Vec<bool>,
    state: State,
    reason: Reason,
    startup_reset: bool,
    retry_at: Option<u64>,
    backoff_ns: u64,
    nacks: u32,
    contradictions: u32,
    progress: Progress,
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

impl Vmem {
    /// Policy for a device whose driver validated `cfg`.
    pub fn new(id: usize, cfg: Config) -> Vmem {
        let unit = cfg.block_size.max(SUBSECTION_SIZE);
        let nr_units = (cfg.region_size / unit) as usize;
        Vmem {
            id,
            cfg,
            node: NodeId::new(u32::from(cfg.node_id)),
            unit,
            plugged: alloc::vec![false; nr_units],
            state: State::Ok,
            reason: Reason::None,
            startup_reset: cfg.plugged_size > 0,
            retry_at: None,
            backoff_ns: BACKOFF_MIN_NS,
            nacks: 0,
            contradictions: 0,
            progress: Progress::default(),
            victims: None,
            resized: None,
        }
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
    /// Bytes the kernel has plugged (and onlined) through this device.
    pub fn plugged_bytes(&self) -> u64 {
        self.plugged.iter().filter(|&&p| p).count() as u64 * self.unit
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

    fn blocks(&self, r: PhysRange) -> u16 {
        // Runs are split so this fits; see `split_runs`.
        (r.size / self.cfg.block_size) as u16
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
        for p in &mut self.plugged[run.first..run.first + run.count] {
            *p = plugged;
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
        if self.startup_reset {
            return self.unplug_all(dev, now);
        }
        let target_units = (cfg.requested_size.min(cfg.usable_region_size) / self.unit) as usize;
        let plugged_units = self.plugged.iter().filter(|&&p| p).count();
        if plugged_units != target_units && self.progress.started_ns.is_none() {
            self.progress = Progress {
                started_ns: Some(now),
                ..Progress::default()
            };
        }
        let victims = self.victims.take();
        if plugged_units < target_units {
            self.plug(dev, mem, target_units - plugged_units, now)
        } else if plugged_units > target_units {
            self.unplug(dev, mem, plugged_units - target_units, victims, now)
        } else {
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

    fn unplug_all<D: Device>(&mut self, dev: &mut D, now: u64) -> Next {
        match self.send(dev, Request::UnplugAll) {
            Some(Response::Ack) => {
                log::info!(
                    "vmem{}: unplugged {} MiB left plugged from before",
                    self.id,
                    self.cfg.plugged_size >> 20
                );
                self.startup_reset = false;
                self.plugged.iter_mut().for_each(|p| *p = false);
                Next::Again
            }
            Some(Response::Busy) => self.backoff(now, State::Busy, Reason::DeviceBusy),
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
        let max_units =
            ((MAX_BLOCKS_PER_REQUEST * self.cfg.block_size) / self.unit).max(1) as usize;
        let mut runs: Vec<Run> = Vec::new();
        for u in units {
            match runs.last_mut() {
                Some(r) if r.first + r.count == u && r.count < max_units => r.count += 1,
                _ => runs.push(Run { first: u, count: 1 }),
            }
        }
        runs
    }

    fn plug<D: Device, M: HotplugMemory>(
        &mut self,
        dev: &mut D,
        mem: &mut M,
        need: usize,
        now: u64,
    ) -> Next {
        let candidates = self.plug_candidates(need);
        // The preferred unit decides the run: the run containing it, in order.
        let Some(&pref) = candidates.first() else {
            // Nothing plugable inside the usable region.
            return self.backoff(now, State::Stalled, Reason::DeviceError);
        };
        let run = self
            .runs(candidates)
            .into_iter()
            .find(|r| (r.first..r.first + r.count).contains(&pref))
            .unwrap_or(Run {
                first: pref,
                count: 1,
            });
        let range = self.unit_range(run.first, run.count);
        // A node the model cannot hold has nothing to check: adding refuses it.
        let node = self.node;
        let mut fits = |r| node.is_none_or(|node| mem.can_add(r, node));
        if !fits(range) {
            // Try a smaller piece before giving up: one unit.
            let one = self.unit_range(run.first, 1);
            if run.count == 1 || !fits(one) {
                log::warn!(
                    "vmem{}: stopping at {} MiB plugged: no free memory for more mem_maps",
                    self.id,
                    self.plugged_bytes() >> 20
                );
                return self.backoff(now, State::Stalled, Reason::NoMemory);
            }
            return self.plug_run(
                dev,
                mem,
                Run {
                    first: run.first,
                    count: 1,
                },
                now,
            );
        }
        self.plug_run(dev, mem, run, now)
    }

    fn plug_run<D: Device, M: HotplugMemory>(
        &mut self,
        dev: &mut D,
        mem: &mut M,
        run: Run,
        now: u64,
    ) -> Next {
        let range = self.unit_range(run.first, run.count);
        let req = Request::Plug {
            addr: range.base,
            nb_blocks: self.blocks(range),
        };
        match self.send(dev, req) {
            Some(Response::Ack) => self.plugged_ok(dev, mem, run, now),
            Some(Response::Nack) => self.nack(now),
            Some(Response::Busy) => self.backoff(now, State::Busy, Reason::DeviceBusy),
            Some(Response::Error) | Some(Response::AckState(_)) => {
                log::error!(
                    "vmem{}: {req:?} answered ERROR; asking the device for the state",
                    self.id
                );
                self.reconcile_after_plug_error(dev, mem, run, now)
            }
            None => Next::Idle,
        }
    }

    /// The device plugged `run`: make it usable, or give it back.
    fn plugged_ok<D: Device, M: HotplugMemory>(
        &mut self,
        dev: &mut D,
        mem: &mut M,
        run: Run,
        now: u64,
    ) -> Next {
        self.nacks = 0;
        self.mark(run, true);
        let range = self.unit_range(run.first, run.count);
        let added = match self.node {
            Some(node) => mem.add_online(range, node),
            None => Err(MemError::Other("node id out of range")),
        };
        match added {
            Ok(()) => {
                self.progress.plugged_bytes += range.size;
                self.state = State::Ok;
                self.reason = Reason::None;
                Next::Again
            }
            Err(e) => {
                log::warn!(
                    "vmem{}: cannot add 0x{:x}+{} MiB: {e:?}; unplugging it again",
                    self.id,
                    range.base,
                    range.size >> 20
                );
                // Nothing used it: give it back to the device.
                let req = Request::Unplug {
                    addr: range.base,
                    nb_blocks: self.blocks(range),
                };
                if self.send(dev, req) == Some(Response::Ack) {
                    self.mark(run, false);
                }
                self.backoff(now, State::Stalled, Reason::NoMemory)
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

    /// Asks the device for the state of `run` (after it answered ERROR). `Err` is what the
    /// step returns when there is no usable answer: BUSY backs off; anything else but a
    /// state disables the device.
    fn ask_state<D: Device>(
        &mut self,
        dev: &mut D,
        run: Run,
        now: u64,
    ) -> Result<BlockState, Next> {
        let range = self.unit_range(run.first, run.count);
        let req = Request::State {
            addr: range.base,
            nb_blocks: self.blocks(range),
        };
        match self.send(dev, req) {
            Some(Response::AckState(s)) => Ok(s),
            Some(Response::Busy) => Err(self.backoff(now, State::Busy, Reason::DeviceBusy)),
            Some(r) => {
                log::error!("vmem{}: STATE answered {r:?}; device disabled", self.id);
                self.set_broken();
                Err(Next::Idle)
            }
            None => Err(Next::Idle), // `send` disabled the device
        }
    }

    /// The device refused a request yet reports the state we had: count a contradiction,
    /// back off, and disable the device after [`MAX_CONTRADICTIONS`].
    fn contradiction(&mut self, now: u64, what: core::fmt::Arguments) -> Next {
        self.contradictions += 1;
        log::warn!(
            "vmem{}: {what}; contradiction {}",
            self.id,
            self.contradictions
        );
        if self.contradictions >= MAX_CONTRADICTIONS {
            log::error!(
                "vmem{}: the device keeps contradicting itself; marked broken",
                self.id
            );
            self.set_broken();
            return Next::Idle;
        }
        self.backoff(now, State::Stalled, Reason::DeviceError)
    }

    /// After ERROR on a PLUG of `run`: ask the device what it thinks and adopt the answer.
    fn reconcile_after_plug_error<D: Device, M: HotplugMemory>(
        &mut self,
        dev: &mut D,
        mem: &mut M,
        run: Run,
        now: u64,
    ) -> Next {
        match self.ask_state(dev, run, now) {
            // The device plugged it after all: adopt it.
            Ok(BlockState::Plugged) => self.plugged_ok(dev, mem, run, now),
            Ok(s) => {
                let range = self.unit_range(run.first, run.count);
                self.contradiction(
                    now,
                    format_args!(
                        "device says {s:?} for 0x{:x}+{} MiB after refusing PLUG",
                        range.base,
                        range.size >> 20
                    ),
                )
            }
            Err(next) => next,
        }
    }

    /// Unplugs at most `excess` units. Victims: units with nothing allocated first, then
    /// those with the fewest used pages, higher addresses first. A run of contiguous empty
    /// victims goes in one request; a used unit goes alone after its pages moved.
    /// `victims`: the order the previous unplug step left, if it succeeded (see
    /// [`Vmem::victims`]).
    fn unplug<D: Device, M: HotplugMemory>(
        &mut self,
        dev: &mut D,
        mem: &mut M,
        excess: usize,
        victims: Option<Vec<(u64, usize)>>,
        now: u64,
    ) -> Next {
        let mut order = victims.unwrap_or_else(|| {
            let mut order: Vec<(u64, usize)> = (0..self.plugged.len())
                .filter(|&u| self.plugged[u])
                .map(|u| (mem.used_pages(self.unit_range(u, 1)), u))
                .collect();
            order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            order
        });
        order.retain(|&(_, u)| self.plugged[u]);
        let empty: Vec<usize> = order
            .iter()
            .take(excess)
            .take_while(|(used, _)| *used == 0)
            .map(|&(_, u)| u)
            .collect();
        if let Some(&first) = empty.first() {
            // The run of empty victims that holds the best (highest) one.
            if let Some(run) = self
                .runs(empty)
                .into_iter()
                .find(|r| (r.first..r.first + r.count).contains(&first))
            {
                match mem.offline(self.unit_range(run.first, run.count)) {
                    Ok(moved) => return self.unplug_offlined(dev, mem, run, moved, order, now),
                    Err(e) => log::debug!("vmem{}: empty run refused: {e:?}", self.id),
                }
            }
        }
        // One unit at a time, in victim order, moving its pages out.
        let mut worst: Option<MemError> = None;
        for &(_, u) in &order {
            match mem.offline(self.unit_range(u, 1)) {
                Ok(moved) => {
                    let run = Run { first: u, count: 1 };
                    return self.unplug_offlined(dev, mem, run, moved, order, now);
                }
                Err(e) => {
                    worst = Some(match (worst, e) {
                        (Some(MemError::Floor), _) | (_, MemError::Floor) => MemError::Floor,
                        (Some(MemError::Pinned), _) | (_, MemError::Pinned) => MemError::Pinned,
                        (Some(MemError::NoMemory), _) | (_, MemError::NoMemory) => {
                            MemError::NoMemory
                        }
                        _ => e,
                    });
                    // The floor, and a lack of memory to migrate to, hold for every unit
                    // alike: no point trying the others now.
                    if matches!(e, MemError::Floor | MemError::NoMemory) {
                        break;
                    }
                }
            }
        }
        let reason = match worst {
            Some(MemError::Floor) => Reason::Floor,
            Some(MemError::Pinned) => Reason::Pinned,
            Some(MemError::NoMemory) => Reason::NoMemory,
            Some(MemError::InUse) => Reason::Unmovable,
            _ => Reason::DeviceError,
        };
        if self.state != State::Stalled || self.reason != reason {
            log::warn!(
                "vmem{}: unplug stalled at {} MiB (requested {} MiB): {}",
                self.id,
                self.plugged_bytes() >> 20,
                self.cfg.requested_size >> 20,
                reason.name()
            );
        }
        self.backoff(now, State::Stalled, reason)
    }

    /// `run` went offline after `moved` pages moved out: count them, then
    /// [`Vmem::unplug_run`]; on success the victim order is kept for the next step.
    fn unplug_offlined<D: Device, M: HotplugMemory>(
        &mut self,
        dev: &mut D,
        mem: &mut M,
        run: Run,
        moved: u64,
        order: Vec<(u64, usize)>,
        now: u64,
    ) -> Next {
        self.progress.migrated_bytes += moved * mm::PAGE_SIZE;
        let next = self.unplug_run(dev, mem, run, now);
        if next == Next::Again {
            self.victims = Some(order);
        }
        next
    }

    fn unplug_run<D: Device, M: HotplugMemory>(
        &mut self,
        dev: &mut D,
        mem: &mut M,
        run: Run,
        now: u64,
    ) -> Next {
        let range = self.unit_range(run.first, run.count);
        let req = Request::Unplug {
            addr: range.base,
            nb_blocks: self.blocks(range),
        };
        match self.send(dev, req) {
            Some(Response::Ack) => {
                self.nacks = 0;
                self.mark(run, false);
                if let Err(e) = mem.remove(range) {
                    log::error!(
                        "vmem{}: remove 0x{:x}+{} MiB: {e:?}",
                        self.id,
                        range.base,
                        range.size >> 20
                    );
                }
                self.progress.unplugged_bytes += range.size;
                self.state = State::Ok;
                self.reason = Reason::None;
                Next::Again
            }
            other => {
                if let Err(e) = mem.reonline(range) {
                    log::error!("vmem{}: re-online 0x{:x}: {e:?}", self.id, range.base);
                }
                match other {
                    Some(Response::Nack) => self.nack(now),
                    Some(Response::Busy) => self.backoff(now, State::Busy, Reason::DeviceBusy),
                    Some(_) => {
                        log::error!(
                            "vmem{}: {req:?} answered ERROR; asking the device for the state",
                            self.id
                        );
                        self.reconcile_after_unplug_error(dev, mem, run, now)
                    }
                    None => Next::Idle,
                }
            }
        }
    }

    /// After ERROR on an UNPLUG of `run` (already back online): ask the device what it
    /// thinks and adopt the answer.
    fn reconcile_after_unplug_error<D: Device, M: HotplugMemory>(
        &mut self,
        dev: &mut D,
        mem: &mut M,
        run: Run,
        now: u64,
    ) -> Next {
        match self.ask_state(dev, run, now) {
            Ok(BlockState::Unplugged) => {
                // The device already had it unplugged: memory we onlined is not backed.
                // Take it out again and adopt the device's view.
                self.mark(run, false);
                let range = self.unit_range(run.first, run.count);
                if mem.offline(range).is_ok() {
                    let _ = mem.remove(range);
                }
                Next::Again
            }
            Ok(s) => {
                self.contradiction(now, format_args!("device says {s:?} after refusing UNPLUG"))
            }
            Err(next) => next,
        }
    }
}

#[cfg(test)]
mod tests;
