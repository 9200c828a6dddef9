//! The unplug path of the policy: which plugged units go (victims), taking them offline
//! through the memory side, taking them down, and the UNPLUG requests with what each answer
//! means for the memory.
//!
//! # Victims and passes
//! Victims: units with nothing allocated first, then those with the fewest used pages,
//! higher addresses first. A run of contiguous empty victims goes offline and leaves in one
//! request. Used victims go in **passes** of at most [`PASS_UNITS`] units (in victim order,
//! at most the excess): the memory side isolates every unit of the pass before it moves a
//! page ([`HotplugMemory::offline_pass`]), so migration destinations lie outside every unit
//! of the pass and no page moves twice in it; then the units that went offline leave in one
//! UNPLUG per contiguous run (capped at 65535 blocks), not one per unit. A unit that cannot
//! go stays online; when none of the pass could, the stall says why (floor, pinned,
//! no_memory, unmovable). A pass is bounded so that the worker publishes progress between
//! passes (a pass of 128 MiB is well under a second at the speed migration runs).
//!
//! # Take down, then UNPLUG
//! Memory the device has taken back must not be read, not even by the teardown (with
//! UNPLUGGED_INACCESSIBLE, and when descriptors live inside the memory they describe). So
//! each offline run is **taken down first** ([`HotplugMemory::remove`]: its sections leave
//! the model and its linear map is unmapped, TLBs flushed), and only then named in an
//! UNPLUG. The answer decides what comes next: ACK: it is gone. NACK or BUSY (once a
//! re-read `plugged_size` shows the device unchanged): the run comes back, added and online
//! again ([`HotplugMemory::add_online`]), and the runs of the pass not yet sent go back
//! online; anything else leaves the run down and pending for `reconcile.rs`, which asks
//! STATE and brings it back only if the device still holds it.

use super::stats::{self, Phase};
use super::{
    Device, HotplugMemory, MemError, Next, Op, PhysRange, Reason, Run, State, StepCx, Vmem,
};
use crate::mm;
use alloc::vec;
use alloc::vec::Vec;
use hotmem_drivers::virtio_mem::Response;

/// Most used units one unplug pass takes (2 MiB units: 128 MiB). Bigger passes send fewer
/// requests but publish progress less often; the measured cost per unit is flat above a few
/// dozen units (module doc of `stats`, README "The unplug path").
pub const PASS_UNITS: usize = 64;

impl Vmem {
    /// Unplugs at most `excess` units. Victims: units with nothing allocated first, then
    /// those with the fewest used pages, higher addresses first. A run of contiguous empty
    /// victims goes in one request; used units go in a pass (see the module doc).
    /// `victims`: the order the previous unplug step left, if it succeeded (see
    /// [`Vmem::victims`]).
    pub(super) fn unplug<D: Device, M: HotplugMemory>(
        &mut self,
        cx: &mut StepCx<D, M>,
        excess: usize,
        victims: Option<Vec<(u64, usize)>>,
    ) -> Next {
        let mut order = victims.unwrap_or_else(|| {
            let mut order: Vec<(u64, usize)> = (0..self.plugged.len())
                .filter(|&u| self.plugged[u])
                .map(|u| (cx.mem.used_pages(self.unit_range(u, 1)), u))
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
                .find(|r| (r.first..r.end()).contains(&first))
            {
                match cx.mem.offline(self.run_range(run)) {
                    Ok(moved) => return self.unplug_offlined(cx, vec![run], moved, order),
                    Err(e) => log::debug!("vmem{}: empty run refused: {e:?}", self.id),
                }
            }
        }
        // One pass over the used victims, in victim order: all isolated before any page
        // moves, so no page lands in a unit of the same pass.
        let ranges: Vec<PhysRange> = order
            .iter()
            .take(excess.min(PASS_UNITS))
            .map(|&(_, u)| self.unit_range(u, 1))
            .collect();
        let results = cx.mem.offline_pass(&ranges);
        let mut worst: Option<MemError> = None;
        let (mut taken, mut moved) = (Vec::new(), 0);
        for (&(_, u), r) in order.iter().zip(&results) {
            match *r {
                Ok(m) => {
                    taken.push(u);
                    moved += m;
                }
                Err(e) => {
                    worst = Some(match (worst, e) {
                        (Some(MemError::Floor), _) | (_, MemError::Floor) => MemError::Floor,
                        (Some(MemError::Pinned), _) | (_, MemError::Pinned) => MemError::Pinned,
                        (Some(MemError::NoMemory), _) | (_, MemError::NoMemory) => {
                            MemError::NoMemory
                        }
                        _ => e,
                    })
                }
            }
        }
        if !taken.is_empty() {
            let runs = self.runs(taken);
            return self.unplug_offlined(cx, runs, moved, order);
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
        self.backoff(cx.now, State::Stalled, reason)
    }

    /// `runs` went offline after `moved` pages moved out: count them, then
    /// [`Vmem::unplug_runs`]; on success the victim order is kept for the next step.
    fn unplug_offlined<D: Device, M: HotplugMemory>(
        &mut self,
        cx: &mut StepCx<D, M>,
        runs: Vec<Run>,
        moved: u64,
        order: Vec<(u64, usize)>,
    ) -> Next {
        self.count_migrated(moved);
        let next = self.unplug_runs(cx, &runs);
        if next == Next::Again {
            self.victims = Some(order);
        }
        next
    }

    /// Unplugs the offline `runs` one after the other: each is taken down (removed from the
    /// model and the linear map) and only then named in an UNPLUG, so nothing reads memory
    /// the device may already have taken back. ACK: done, on to the next run. NACK or BUSY
    /// with `plugged_size` unchanged: the run comes back (added and online again), and so
    /// do the runs not yet sent. Anything else (ERROR, or a `plugged_size` that moved
    /// although the device said no): the run stays down in [`Vmem::pending`] until STATE
    /// says what the device holds; the runs not yet sent go back online. A transport
    /// failure leaves the run down for good.
    fn unplug_runs<D: Device, M: HotplugMemory>(
        &mut self,
        cx: &mut StepCx<D, M>,
        runs: &[Run],
    ) -> Next {
        for (i, &run) in runs.iter().enumerate() {
            let range = self.run_range(run);
            if let Err(e) = cx.mem.remove(range) {
                log::error!(
                    "vmem{}: cannot take 0x{:x}+{} MiB down: {e:?}; it stays plugged",
                    self.id,
                    range.base,
                    range.size >> 20
                );
                self.reonline_runs(cx.mem, &runs[i..]);
                return self.backoff(cx.now, State::Stalled, Reason::DeviceError);
            }
            let req = self.request(Op::Unplug, range);
            let pages = range.size / mm::PAGE_SIZE;
            match stats::time(Phase::Request, pages, || self.send(cx.dev, req)) {
                Some(Response::Ack) => {
                    self.nacks = 0;
                    self.unplugged(run);
                }
                Some(r @ (Response::Nack | Response::Busy)) if self.device_unchanged(cx.dev) => {
                    self.bring_back(cx, run);
                    self.reonline_runs(cx.mem, &runs[i + 1..]);
                    return if r == Response::Nack {
                        self.nack(cx.now)
                    } else {
                        self.backoff(cx.now, State::Busy, Reason::DeviceBusy)
                    };
                }
                Some(r) => {
                    log::error!(
                        "vmem{}: {req:?} answered {r:?}; the memory stays out until STATE \
                         says what the device holds",
                        self.id
                    );
                    self.pending.push(run);
                    self.reonline_runs(cx.mem, &runs[i + 1..]);
                    return self.resolve_pending(cx);
                }
                None => {
                    log::error!(
                        "vmem{}: 0x{:x}+{} MiB stays out: the outcome of its UNPLUG is unknown",
                        self.id,
                        range.base,
                        range.size >> 20
                    );
                    return Next::Idle;
                }
            }
        }
        self.state = State::Ok;
        self.reason = Reason::None;
        Next::Again
    }

    /// Puts the offline (not yet taken down) `runs` back online.
    fn reonline_runs<M: HotplugMemory>(&self, mem: &mut M, runs: &[Run]) {
        for &run in runs {
            let range = self.run_range(run);
            if let Err(e) = mem.reonline(range) {
                log::error!("vmem{}: re-online 0x{:x}: {e:?}", self.id, range.base);
            }
        }
    }

    /// The device still holds the taken-down `run` plugged: add it and online it again. If
    /// the memory side cannot take it back, give it to the device after all (nothing uses
    /// it); should that fail too, the audit finds it later.
    pub(super) fn bring_back<D: Device, M: HotplugMemory>(
        &mut self,
        cx: &mut StepCx<D, M>,
        run: Run,
    ) {
        let range = self.run_range(run);
        let Err(e) = cx.mem.add_online(range, self.node) else {
            return;
        };
        log::warn!(
            "vmem{}: cannot bring 0x{:x}+{} MiB back: {e:?}; unplugging it again",
            self.id,
            range.base,
            range.size >> 20
        );
        let req = self.request(Op::Unplug, range);
        if self.send(cx.dev, req) == Some(Response::Ack) {
            self.unplugged(run);
        }
    }

    /// Whether the device's `plugged_size` still equals what the policy holds (re-read).
    fn device_unchanged<D: Device>(&self, dev: &mut D) -> bool {
        dev.config()
            .is_ok_and(|c| c.plugged_size == self.plugged_bytes())
    }

    /// The device unplugged the taken-down `run` (see [`Vmem::unplug_runs`]).
    pub(super) fn unplugged(&mut self, run: Run) {
        self.mark(run, false);
        self.progress.unplugged_bytes += self.run_range(run).size;
    }
}
