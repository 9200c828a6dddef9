//! Reconciling the policy's view with the device's when the two may have parted: after
//! ERROR to a PLUG or an UNPLUG, and when the device's `plugged_size` disagrees with the
//! units the policy holds plugged.
//!
//! # What each side holds
//! The policy holds each unit of a run in one of three ways ([`Held`]): absent (never added,
//! nothing may touch it), online, or offline (taken down for an UNPLUG whose outcome is
//! unknown: removed from the model and the linear map, so nothing can read it). The device's side comes from STATE
//! ([`Seen`]): a run is plugged, unplugged, or mixed. A mixed run is split in halves and
//! each half asked again, down to single units ([`Vmem::survey`]); a mixed unit can only be a
//! unit of two 1 MiB blocks with one of them plugged, which STATE on its first block tells.
//! Every STATE covers at most [`MAX_BLOCKS_PER_REQUEST`](super::MAX_BLOCKS_PER_REQUEST)
//! blocks (the runs are capped before they are asked about).
//!
//! # What is done ([`Vmem::apply`]), one line per (held, seen)
//! - online/plugged, absent/unplugged: nothing.
//! - offline/plugged: added and online again (the UNPLUG did not happen).
//! - offline/unplugged: nothing left to do (it did; the unit was taken down before).
//! - offline/half: UNPLUG the plugged block; until that succeeds the unit stays down and
//!   pending.
//! - absent/plugged: adopt it (add and online), as after an ACK; given back if the memory
//!   side cannot take it.
//! - absent/half: UNPLUG the plugged block (half a unit is of no use).
//! - online/unplugged or online/half (the device took backing from memory in use): take the
//!   unit offline and down and go on as offline; if it cannot go offline, PLUG the missing blocks
//!   again so that what is online is backed.
//!
//! An unplug's unknown outcome is kept in [`Vmem::pending`] and resolved before any other
//! work ([`Vmem::resolve_pending`]): the memory is never online again before STATE answered.
//! A PLUG error is resolved on the spot ([`Vmem::after_plug_error`]); if STATE cannot be
//! asked now, the absent units are safe as they are and the audit finds any plugged blocks
//! later. The audit ([`Vmem::audit`]) runs when `plugged_size` differs from the units held
//! plugged: it asks STATE over the usable region, run by run of units held alike, logs each
//! difference and applies it.
//!
//! Contradictions (the device refused a request yet STATE says the request was right, or
//! `plugged_size` disagrees with STATE everywhere) are counted
//! ([`Vmem::contradiction`]); after `MAX_CONTRADICTIONS` in a row, with no ACK to a PLUG or
//! an UNPLUG between them, the device is broken. BUSY to a
//! STATE or to a repair request backs off and leaves the work for the next step.

use super::{
    Device, HotplugMemory, Next, Op, PhysRange, Reason, Run, State, StepCx, Vmem,
    MAX_CONTRADICTIONS,
};
use alloc::vec::Vec;
use hotmem_drivers::virtio_mem::{BlockState, Response};

/// What STATE says about a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Every block plugged.
    Plugged,
    /// Every block unplugged.
    Unplugged,
    /// A single unit of two blocks, only one of them plugged.
    Half {
        /// Whether the plugged one is the first.
        first_plugged: bool,
    },
}

/// How the policy holds a run's units (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    Absent,
    Online,
    Offline,
}

impl Held {
    /// What the device should say about a run held this way.
    fn expected(self) -> Seen {
        match self {
            Held::Absent => Seen::Unplugged,
            Held::Online | Held::Offline => Seen::Plugged,
        }
    }
}

impl Vmem {
    /// Block `index` of unit `unit`.
    fn block_range(&self, unit: usize, index: u64) -> PhysRange {
        PhysRange {
            base: self.unit_range(unit, 1).base + index * self.cfg.block_size,
            size: self.cfg.block_size,
        }
    }

    /// The first or the second (`first`) block of the single unit `run`.
    fn half(&self, run: Run, first: bool) -> PhysRange {
        self.block_range(run.first, if first { 0 } else { 1 })
    }

    /// Asks the device for the state of `range`. `Err` is what the step returns when there
    /// is no usable answer: BUSY backs off; anything else but a state disables the device.
    fn ask_state<D: Device, M>(
        &mut self,
        cx: &mut StepCx<D, M>,
        range: PhysRange,
    ) -> Result<BlockState, Next> {
        let req = self.request(Op::State, range);
        match self.send(cx.dev, req) {
            Some(Response::AckState(s)) => Ok(s),
            Some(Response::Busy) => Err(self.backoff(cx.now, State::Busy, Reason::DeviceBusy)),
            Some(r) => {
                log::error!("vmem{}: STATE answered {r:?}; device disabled", self.id);
                self.set_broken();
                Err(Next::Idle)
            }
            None => Err(Next::Idle), // `send` disabled the device
        }
    }

    /// The device refused a request yet reports the state we had: count a contradiction,
    /// back off, and disable the device after [`MAX_CONTRADICTIONS`] in a row (an ACK to a
    /// PLUG or an UNPLUG starts the count again).
    pub(super) fn contradiction(&mut self, now: u64, what: core::fmt::Arguments) -> Next {
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

    /// The device's state of `run`, as runs in address order that are each plugged,
    /// unplugged, or one half-plugged unit. Sends only STATE requests.
    fn survey<D: Device, M>(
        &mut self,
        cx: &mut StepCx<D, M>,
        run: Run,
    ) -> Result<Vec<(Run, Seen)>, Next> {
        let mut seen = Vec::new();
        let mut todo = alloc::vec![run];
        while let Some(r) = todo.pop() {
            match self.ask_state(cx, self.run_range(r))? {
                BlockState::Plugged => seen.push((r, Seen::Plugged)),
                BlockState::Unplugged => seen.push((r, Seen::Unplugged)),
                BlockState::Mixed if r.count > 1 => {
                    // Second half pushed first: the first half is asked (and listed) first.
                    let half = r.count / 2;
                    todo.push(Run {
                        first: r.first + half,
                        count: r.count - half,
                    });
                    todo.push(Run {
                        first: r.first,
                        count: half,
                    });
                }
                BlockState::Mixed => {
                    let two_blocks = self.unit == 2 * self.cfg.block_size;
                    let first = self.block_range(r.first, 0);
                    let first = if two_blocks {
                        self.ask_state(cx, first)?
                    } else {
                        BlockState::Mixed
                    };
                    let first_plugged = match first {
                        BlockState::Plugged => true,
                        BlockState::Unplugged => false,
                        BlockState::Mixed => {
                            log::error!(
                                "vmem{}: STATE says a single block at 0x{:x} is mixed; \
                                 device disabled",
                                self.id,
                                self.unit_range(r.first, 1).base
                            );
                            self.set_broken();
                            return Err(Next::Idle);
                        }
                    };
                    seen.push((r, Seen::Half { first_plugged }));
                }
            }
        }
        Ok(seen)
    }

    /// Brings `run`, held as `held`, in line with what the device holds (`seen`); see the
    /// module doc for each case. `Err` is what the step returns when a request could not be
    /// done now; a unit that is offline then stays in [`Vmem::pending`].
    fn apply<D: Device, M: HotplugMemory>(
        &mut self,
        cx: &mut StepCx<D, M>,
        run: Run,
        seen: Seen,
        held: Held,
    ) -> Result<(), Next> {
        let range = self.run_range(run);
        match (held, seen) {
            (Held::Online, Seen::Plugged) | (Held::Absent, Seen::Unplugged) => Ok(()),
            (Held::Offline, Seen::Plugged) => {
                self.bring_back(cx, run);
                Ok(())
            }
            (Held::Offline, Seen::Unplugged) => {
                self.unplugged(run);
                Ok(())
            }
            (Held::Offline, Seen::Half { first_plugged }) => {
                match self.repair(cx, Op::Unplug, self.half(run, first_plugged)) {
                    Ok(()) => {
                        self.unplugged(run);
                        Ok(())
                    }
                    Err(next) => {
                        self.pending.push(run);
                        Err(next)
                    }
                }
            }
            (Held::Absent, Seen::Plugged) => self.adopt(cx, run),
            (Held::Absent, Seen::Half { first_plugged }) => {
                self.repair(cx, Op::Unplug, self.half(run, first_plugged))
            }
            (Held::Online, Seen::Unplugged | Seen::Half { .. }) => {
                log::error!(
                    "vmem{}: the device says 0x{:x}+{} KiB is {seen:?} although it is online; \
                     taking it offline",
                    self.id,
                    range.base,
                    range.size >> 10
                );
                match cx.mem.offline(range).and_then(|moved| {
                    cx.mem.remove(range).inspect_err(|_| {
                        let _ = cx.mem.reonline(range);
                    })?;
                    Ok(moved)
                }) {
                    Ok(moved) => {
                        self.count_migrated(moved);
                        self.apply(cx, run, seen, Held::Offline)
                    }
                    Err(e) => {
                        log::error!(
                            "vmem{}: cannot take it offline ({e:?}); asking the device to \
                             plug it again",
                            self.id
                        );
                        match seen {
                            Seen::Half { first_plugged } => {
                                self.repair(cx, Op::Plug, self.half(run, !first_plugged))
                            }
                            _ => self.repair(cx, Op::Plug, range),
                        }
                    }
                }
            }
        }
    }

    /// PLUG or UNPLUG (`op`) `range` to repair a difference: a run, or one block of a half
    /// unit. `Err`: BUSY backs off; any other refusal is a contradiction.
    fn repair<D: Device, M>(
        &mut self,
        cx: &mut StepCx<D, M>,
        op: Op,
        range: PhysRange,
    ) -> Result<(), Next> {
        let req = self.request(op, range);
        match self.send(cx.dev, req) {
            Some(Response::Ack) => Ok(()),
            Some(Response::Busy) => Err(self.backoff(cx.now, State::Busy, Reason::DeviceBusy)),
            None => Err(Next::Idle),
            Some(r) => {
                // The unit `range` starts in.
                let unit = range.base - (range.base - self.cfg.addr) % self.unit;
                Err(self.contradiction(
                    cx.now,
                    format_args!("{req:?} to repair the unit at 0x{unit:x} answered {r:?}"),
                ))
            }
        }
    }

    /// Resolves the runs left offline by UNPLUG errors, oldest first; `Next::Again` once
    /// none is left.
    pub(super) fn resolve_pending<D: Device, M: HotplugMemory>(
        &mut self,
        cx: &mut StepCx<D, M>,
    ) -> Next {
        while let Some(&run) = self.pending.first() {
            let seen = match self.survey(cx, run) {
                Ok(s) => s,
                Err(next) => return next,
            };
            self.pending.remove(0);
            for (i, &(part, s)) in seen.iter().enumerate() {
                if let Err(next) = self.apply(cx, part, s, Held::Offline) {
                    // `apply` kept `part` if it is still offline; the rest was not touched.
                    self.pending.extend(seen[i + 1..].iter().map(|&(r, _)| r));
                    return next;
                }
            }
            if seen.iter().all(|&(_, s)| s == Seen::Plugged) {
                let range = self.run_range(run);
                return self.contradiction(
                    cx.now,
                    format_args!(
                        "device says 0x{:x}+{} MiB is plugged after refusing UNPLUG",
                        range.base,
                        range.size >> 20
                    ),
                );
            }
        }
        Next::Again
    }

    /// After ERROR on a PLUG of `run`: ask the device what it holds, adopt the units it
    /// plugged and give back half-plugged ones.
    pub(super) fn after_plug_error<D: Device, M: HotplugMemory>(
        &mut self,
        cx: &mut StepCx<D, M>,
        run: Run,
    ) -> Next {
        let seen = match self.survey(cx, run) {
            Ok(s) => s,
            Err(next) => return next,
        };
        for &(part, s) in &seen {
            if let Err(next) = self.apply(cx, part, s, Held::Absent) {
                return next;
            }
        }
        let range = self.run_range(run);
        if seen.iter().all(|&(_, s)| s == Seen::Unplugged) {
            return self.contradiction(
                cx.now,
                format_args!(
                    "device says 0x{:x}+{} MiB is unplugged after refusing PLUG",
                    range.base,
                    range.size >> 20
                ),
            );
        }
        if seen.len() > 1 {
            log::warn!(
                "vmem{}: PLUG of 0x{:x}+{} MiB was partly done: kept what the device plugged",
                self.id,
                range.base,
                range.size >> 20
            );
        }
        self.nacks = 0;
        self.state = State::Ok;
        self.reason = Reason::None;
        Next::Again
    }

    /// The device's `plugged_size` differs from what the policy holds plugged: ask STATE
    /// over the usable region, log and apply each difference.
    pub(super) fn audit<D: Device, M: HotplugMemory>(&mut self, cx: &mut StepCx<D, M>) -> Next {
        let (device_kib, held_kib) = (self.cfg.plugged_size >> 10, self.plugged_bytes() >> 10);
        log::warn!(
            "vmem{}: the device has {device_kib} KiB plugged, the driver {held_kib} KiB; \
             asking the device for the state of each run",
            self.id
        );
        let usable = ((self.cfg.usable_region_size / self.unit) as usize).min(self.plugged.len());
        let max_units = self.max_units();
        let mut runs: Vec<Run> = Vec::new();
        for u in 0..usable {
            match runs.last_mut() {
                Some(r) if r.count < max_units && self.plugged[r.first] == self.plugged[u] => {
                    r.count += 1
                }
                _ => runs.push(Run { first: u, count: 1 }),
            }
        }
        let mut differ = Vec::new();
        for run in runs {
            let held = if self.plugged[run.first] {
                Held::Online
            } else {
                Held::Absent
            };
            let seen = match self.survey(cx, run) {
                Ok(s) => s,
                Err(next) => return next,
            };
            differ.extend(
                seen.into_iter()
                    .filter(|&(_, s)| s != held.expected())
                    .map(|(r, s)| (r, s, held)),
            );
        }
        if differ.is_empty() {
            return self.contradiction(
                cx.now,
                format_args!(
                    "plugged_size says {device_kib} KiB but STATE agrees with the driver's \
                     {held_kib} KiB"
                ),
            );
        }
        for (run, seen, held) in differ {
            let range = self.run_range(run);
            log::warn!(
                "vmem{}: 0x{:x}+{} KiB: the driver holds it {held:?}, the device says {seen:?}",
                self.id,
                range.base,
                range.size >> 10
            );
            if let Err(next) = self.apply(cx, run, seen, held) {
                return next;
            }
        }
        Next::Again
    }
}
