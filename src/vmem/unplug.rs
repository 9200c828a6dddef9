//! The unplug path of the policy: which plugged units go (victims), taking them offline
//! through the memory side, and the UNPLUG request with what each answer means for the
//! offline memory.
//!
//! Victims: units with nothing allocated first, then those with the fewest used pages,
//! higher addresses first; a run of contiguous empty victims goes in one request, a used
//! unit goes alone after its pages moved. A unit that cannot go stays online and the stall
//! says why (floor, pinned, no_memory, unmovable).
//!
//! The UNPLUG answer decides what happens to the offline run: ACK removes it (unmapped,
//! sections removed); NACK or BUSY put it back online at once, once a re-read
//! `plugged_size` shows the device unchanged; anything else leaves it offline and pending
//! for `reconcile.rs`, so memory the device may have unplugged is never used again before
//! STATE says it is still plugged.

use super::stats::{self, Phase};
use super::{Device, HotplugMemory, MemError, Next, Op, Reason, Run, State, StepCx, Vmem};
use crate::mm;
use alloc::vec::Vec;
use hotmem_drivers::virtio_mem::Response;

impl Vmem {
    /// Unplugs at most `excess` units. Victims: units with nothing allocated first, then
    /// those with the fewest used pages, higher addresses first. A run of contiguous empty
    /// victims goes in one request; a used unit goes alone after its pages moved.
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
                    Ok(moved) => return self.unplug_offlined(cx, run, moved, order),
                    Err(e) => log::debug!("vmem{}: empty run refused: {e:?}", self.id),
                }
            }
        }
        // One unit at a time, in victim order, moving its pages out.
        let mut worst: Option<MemError> = None;
        for &(_, u) in &order {
            match cx.mem.offline(self.unit_range(u, 1)) {
                Ok(moved) => {
                    let run = Run { first: u, count: 1 };
                    return self.unplug_offlined(cx, run, moved, order);
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
        self.backoff(cx.now, State::Stalled, reason)
    }

    /// `run` went offline after `moved` pages moved out: count them, then
    /// [`Vmem::unplug_run`]; on success the victim order is kept for the next step.
    fn unplug_offlined<D: Device, M: HotplugMemory>(
        &mut self,
        cx: &mut StepCx<D, M>,
        run: Run,
        moved: u64,
        order: Vec<(u64, usize)>,
    ) -> Next {
        self.count_migrated(moved);
        let next = self.unplug_run(cx, run);
        if next == Next::Again {
            self.victims = Some(order);
        }
        next
    }

    /// Sends UNPLUG for the offline `run`. ACK: remove it. NACK or BUSY with `plugged_size`
    /// unchanged: back online at once. Anything else (ERROR, or a `plugged_size` that moved
    /// although the device said no): the run stays offline in [`Vmem::pending`] until STATE
    /// says what the device holds. A transport failure leaves it offline for good.
    fn unplug_run<D: Device, M: HotplugMemory>(&mut self, cx: &mut StepCx<D, M>, run: Run) -> Next {
        let range = self.run_range(run);
        let req = self.request(Op::Unplug, range);
        let pages = range.size / mm::PAGE_SIZE;
        match stats::time(Phase::Request, pages, || self.send(cx.dev, req)) {
            Some(Response::Ack) => {
                self.nacks = 0;
                self.removed(cx.mem, run);
                self.state = State::Ok;
                self.reason = Reason::None;
                Next::Again
            }
            Some(r @ (Response::Nack | Response::Busy)) if self.device_unchanged(cx.dev) => {
                if let Err(e) = cx.mem.reonline(range) {
                    log::error!("vmem{}: re-online 0x{:x}: {e:?}", self.id, range.base);
                }
                if r == Response::Nack {
                    self.nack(cx.now)
                } else {
                    self.backoff(cx.now, State::Busy, Reason::DeviceBusy)
                }
            }
            Some(r) => {
                log::error!(
                    "vmem{}: {req:?} answered {r:?}; the memory stays offline until STATE \
                     says what the device holds",
                    self.id
                );
                self.pending.push(run);
                self.resolve_pending(cx)
            }
            None => {
                log::error!(
                    "vmem{}: 0x{:x}+{} MiB stays offline: the outcome of its UNPLUG is unknown",
                    self.id,
                    range.base,
                    range.size >> 20
                );
                Next::Idle
            }
        }
    }

    /// Whether the device's `plugged_size` still equals what the policy holds (re-read).
    fn device_unchanged<D: Device>(&self, dev: &mut D) -> bool {
        dev.config()
            .is_ok_and(|c| c.plugged_size == self.plugged_bytes())
    }

    /// The device unplugged the offline `run`: unmap and remove it.
    pub(super) fn removed<M: HotplugMemory>(&mut self, mem: &mut M, run: Run) {
        self.mark(run, false);
        let range = self.run_range(run);
        if let Err(e) = mem.remove(range) {
            log::error!(
                "vmem{}: remove 0x{:x}+{} MiB: {e:?}",
                self.id,
                range.base,
                range.size >> 20
            );
        }
        self.progress.unplugged_bytes += range.size;
    }
}
