//! The virtio-mem devices the kernel drives: the list of probed devices (driver and policy
//! of each, its never-reused id and its PCI address), what is known about each outside the worker (its live configuration reader and
//! its interrupt count), the interrupt handler, the deferred convergence work, the status
//! snapshots `vmem` prints, and the two requests the shell makes of the worker (`vmem wait`,
//! `vmem state`).
//!
//! Interrupts: a device's INTx line is level-triggered and only drops when the device's ISR
//! is read. The handler masks the line at the GIC, counts an interrupt for every device on
//! that line (it cannot tell which one raised it without reading an ISR, which belongs to
//! the driver) and schedules the work; the work reads each device's interrupt count, then
//! its ISR (through the driver), unmasks the lines, and converges every device. Requests wait
//! for their response with `wfi` (the queue interrupt or the next tick wakes the CPU).
//! A device on MSI-X (`msix`) has no line: [`msi_handler`] counts the interrupt for its
//! device and schedules the work, which learns of a configuration change from the vector
//! instead of the ISR.
//!
//! Status: a pass publishes each device's [`Snapshot`] when it ends, and also during
//! a long pass at the pace of [`Pace`] (with a progress line about once a second once
//! a resize has run a second). Each snapshot carries the interrupt count the last finished
//! pass answered (read before that pass read the ISRs). `vmem` joins it with the newest
//! configuration, read through a second PCI transport of the same device ([`Live`]: config
//! reads have no side effects, so it does not need the driver the worker holds), and with
//! the current interrupt count: see [`Record`] for when that is `busy`. A finished
//! resize is logged only after the final snapshot is published.
//!
//! Requests from the shell: `vmem wait` sleeps on [`CHANGED`], woken at every publication,
//! until the records it waits for are settled or its deadline passed (it asks for a pass at
//! the deadline, which publishes, so no one polls). `vmem state` leaves its range in
//! [`QUERY`], schedules the work and sleeps on [`CHANGED`]; the worker answers it at the
//! start of a pass or between two policy steps, so the STATE never races a pass.
//!
//! Locks: `DEVICES` (an `IrqSpinLock` around the list) is taken only in thread context, by
//! probe and by the work, which runs in the single `worker` task and takes the list out for
//! the pass (so interrupts stay enabled while it converges); never by the interrupt handler.
//! `STATUS` (the snapshots) is only swapped under its lock (the new list is built before,
//! the old one dropped after), readers copy it out. `QUERY` holds one request or answer,
//! taken for a copy or a store. None of them is held while another is taken, nor across a
//! policy step, so nothing is allocated under the memory-model lock. [`LIVE`] holds one
//! cell per device id, each written once when its device is added (before its interrupt is
//! enabled) and only read after; a device that leaves is marked gone there (ids are never
//! reused, so the cell is never written again); its counters are atomics, so the interrupt
//! handler takes no lock but the wait queue's (a leaf).
//!
//! Devices come and go at run time (`slots`): [`add`] and [`release`] run in the worker, as
//! the convergence pass does, so they never overlap a pass and no request is in flight when
//! a device is released; a released device is out of the list before its driver is dropped,
//! so no pass touches it again.

use super::hal::KernelHal;
use super::memory::KernelMemory;
use super::transport::InjectTransport;
use crate::kernel::inject;
use crate::kernel::task::WaitQueue;
use crate::kernel::work::Work;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use hotmem::vmem::{Device, Next, Pace, PciAddr, QueryError, Record, Snapshot, StateReport, Vmem};
use hotmem_arch::addr::PhysRange;
use hotmem_arch::cpu::{self, IrqSpinLock};
use hotmem_arch::gic::{self, Trigger};
use hotmem_arch::timer;
use hotmem_drivers::virtio_mem::{
    self as driver, Config, Request, Response, VirtioMem, VirtioMemError,
};
use virtio_drivers::transport::pci::PciTransport;

pub(super) type Driver = VirtioMem<KernelHal, InjectTransport<PciTransport>>;

/// One probed device.
pub(super) struct Dev {
    pub(super) driver: Driver,
    /// Its policy; `policy.id` is the device's id (`vmemN`), from [`next_id`].
    pub(super) policy: Vmem,
    /// Its PCI address.
    pub(super) pci: PciAddr,
    pub(super) intid: Option<u32>,
    /// The interrupt count (see [`Live`]) the last finished pass answered.
    pub(super) answered: u64,
}

/// What is known about one device outside the worker: a reader of its configuration, its
/// interrupt line, and how many interrupts the handler counted for it.
pub(super) struct Live {
    /// A second PCI transport of the device, used only to read the configuration (never
    /// the ISR, the queue or the status). Never dropped: dropping a transport resets the
    /// device. `None` when it could not be set up: `vmem` then shows the last snapshot's
    /// sizes.
    reader: Option<ManuallyDrop<PciTransport>>,
    node_id_valid: bool,
    intid: Option<u32>,
    interrupts: AtomicU64,
    /// Set when the device left (ejected or vanished): its reader is never used again and
    /// its interrupts are not counted.
    gone: AtomicBool,
}

impl Live {
    pub(super) fn new(
        reader: Option<PciTransport>,
        node_id_valid: bool,
        intid: Option<u32>,
    ) -> Live {
        Live {
            reader: reader.map(ManuallyDrop::new),
            node_id_valid,
            intid,
            interrupts: AtomicU64::new(0),
            gone: AtomicBool::new(false),
        }
    }

    /// The newest configuration, if it reads consistently (never once the device left).
    fn config(&self) -> Option<Config> {
        if self.gone.load(Ordering::Acquire) {
            return None;
        }
        let reader: &PciTransport = self.reader.as_ref()?;
        driver::read_config(reader, self.node_id_valid).ok()
    }

    fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Acquire)
    }
}

/// Device ids the kernel can hand out (the size of [`LIVE`]).
pub(super) const MAX_DEVICE_IDS: usize = 32;

/// One [`Live`] per device id, set once when the device is added, before its interrupt is
/// enabled, and kept (marked gone) after it leaves, since ids are never reused.
static LIVE: [spin::Once<Live>; MAX_DEVICE_IDS] = [const { spin::Once::new() }; MAX_DEVICE_IDS];

fn live(id: usize) -> Option<&'static Live> {
    LIVE.get(id).and_then(spin::Once::get)
}

/// The driver as the policy's [`Device`], with the reply faults of fault injection: a
/// refused request is not sent, a replaced answer is the device's ACK turned into another
/// (`hotmem::inject`). The policy sees only answers.
struct DriverDevice<'a>(&'a mut Driver);

impl Device for DriverDevice<'_> {
    type Error = VirtioMemError;
    fn config(&mut self) -> Result<Config, VirtioMemError> {
        self.0.config()
    }
    fn request(&mut self, req: Request) -> Result<Response, VirtioMemError> {
        if let Some(answer) = inject::refuse(&req) {
            log::warn!("inject: {req:?} not sent, answered {answer:?}");
            return Ok(answer);
        }
        let real = self.0.request(req, &mut cpu::wait_for_interrupt)?;
        Ok(match inject::replace(&req, &real) {
            Some(answer) => {
                log::warn!("inject: {req:?} answered {real:?}, replaced by {answer:?}");
                answer
            }
            None => real,
        })
    }
}

/// The next device id: ids only grow, so `vmemN` is never reused while the kernel runs,
/// whatever devices come and go.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A fresh device id, `None` once [`MAX_DEVICE_IDS`] were handed out.
pub(super) fn next_id() -> Option<usize> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    (id < MAX_DEVICE_IDS).then_some(id)
}

/// The probed devices; see the module doc for who takes the lock.
pub(super) static DEVICES: IrqSpinLock<Vec<Dev>> =
    IrqSpinLock::new(Vec::new()).with_class(hotmem_arch::lock_class!("vmem_devices"));

/// What the worker published about one device.
#[derive(Clone, Copy)]
struct Status {
    id: usize,
    pci: PciAddr,
    snap: Snapshot,
    /// The interrupt count the last finished pass answered.
    answered: u64,
}

static STATUS: IrqSpinLock<Vec<Status>> =
    IrqSpinLock::new(Vec::new()).with_class(hotmem_arch::lock_class!("vmem_status"));

/// Woken when a snapshot is published and when a `vmem state` query is answered.
static CHANGED: WaitQueue = WaitQueue::new();

/// The `vmem state` request between the shell and the worker.
enum Query {
    None,
    Asked { dev: usize, range: PhysRange },
    Answered(Result<StateReport, QueryError>),
}

static QUERY: IrqSpinLock<Query> =
    IrqSpinLock::new(Query::None).with_class(hotmem_arch::lock_class!("vmem_query"));

/// The convergence pass, run by the worker once registered (`kernel/mod.rs`): scheduled
/// by the interrupt handler, by probe, by a back-off deadline, by commands that free
/// memory an unplug may have stalled on, by `vmem state` and by a `vmem wait` deadline.
pub static CONVERGE: Work = Work::new(converge);

/// Interrupt handler: mask the line, count an interrupt for every device on it, leave the
/// rest to the work.
pub(super) fn irq_handler(intid: u32) {
    let _ = gic::disable(intid);
    for l in LIVE.iter().filter_map(spin::Once::get) {
        if l.intid == Some(intid) && !l.gone.load(Ordering::Acquire) {
            l.interrupts.fetch_add(1, Ordering::AcqRel);
        }
    }
    CONVERGE.schedule();
}

/// MSI handler: an MSI has no line to mask; count it for its device (`msix::note`) and
/// leave the rest to the work.
pub(super) fn msi_handler(intid: u32) {
    if let Some(l) = super::msix::note(intid).and_then(live) {
        l.interrupts.fetch_add(1, Ordering::AcqRel);
    }
    CONVERGE.schedule();
}

/// The deferred work: answer a query, acknowledge interrupts, unmask lines, converge every
/// device, publishing on the way; then the final snapshots, then the resize log lines.
fn converge() {
    // Only the worker task converges, so it takes the list out of the lock and works with
    // interrupts enabled (a convergence pass may migrate gigabytes) and puts it back after.
    let mut devs = core::mem::take(&mut *DEVICES.lock());
    serve_query(&mut devs);
    // The interrupts this pass answers: those counted before it reads the ISRs.
    let seen: Vec<u64> = devs
        .iter()
        .map(|d| live(d.policy.id).map_or(0, Live::interrupts))
        .collect();
    for d in devs.iter_mut() {
        if super::msix::config_changed(d.policy.id, || d.driver.ack_interrupt().0) {
            d.policy.config_changed();
        }
    }
    for d in devs.iter() {
        if let Some(i) = d.intid {
            let _ = gic::enable(i, Trigger::Level);
        }
    }
    for i in 0..devs.len() {
        let mut pace = Pace::new(timer::now_ns());
        loop {
            let d = &mut devs[i];
            let next = d.policy.step(
                &mut DriverDevice(&mut d.driver),
                &mut KernelMemory,
                timer::now_ns(),
            );
            match next {
                Next::Again => {
                    let now = timer::now_ns();
                    let snap = d.policy.snapshot();
                    if pace.line_due(now, snap.progress.started_ns) {
                        if let Some(line) = snap.progress_line(d.policy.id) {
                            log::info!("{line}");
                        }
                    }
                    if pace.publish_due(now) {
                        publish(&devs);
                    }
                    serve_query(&mut devs);
                    continue;
                }
                Next::RetryAt(t) => CONVERGE.schedule_at(t),
                Next::Idle => {}
            }
            break;
        }
    }
    for (d, seen) in devs.iter_mut().zip(seen) {
        d.answered = seen;
    }
    publish(&devs);
    // Only now that `vmem` shows the new state: whoever waits for the line finds it there.
    for d in devs.iter_mut() {
        if let Some(r) = d.policy.take_resized() {
            log::info!("{r}");
        }
    }
    *DEVICES.lock() = devs;
}

/// Adds probed devices at boot or later (a hot-added one), with their [`Live`]s, and
/// asks for a convergence pass. Runs in thread context, never during a pass (probe before
/// the worker starts; the slot work in the worker). A device whose id already has a `Live`
/// is refused (and dropped, which resets it).
pub(super) fn add(new: Vec<(Dev, Live)>) {
    let mut devs = core::mem::take(&mut *DEVICES.lock());
    for (d, l) in new {
        let id = d.policy.id;
        let Some(cell) = LIVE.get(id).filter(|c| !c.is_completed()) else {
            log::error!("vmem{id}: id taken; device disabled");
            continue;
        };
        cell.call_once(|| l);
        devs.push(d);
    }
    publish(&devs);
    *DEVICES.lock() = devs;
    CONVERGE.schedule();
}

/// Why a device cannot be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReleaseError {
    /// No device with that id.
    NoDevice,
    /// The device still has memory plugged (or asked for): the host must unplug it first.
    Plugged,
}

/// Releases device `id` for an eject: refuses while the device or the guest holds memory
/// plugged or a size is requested; otherwise the device leaves the list and `vmem`, its
/// `Live` is marked gone, and the driver is dropped (which resets the device and frees its
/// queue). No request is in flight: requests run inside a pass and passes run in the same
/// worker task as the caller. `vanished`: the device is gone already (surprise removal), so
/// it is never touched again; the driver is leaked instead of dropped, and whatever it had
/// plugged stays as it is. Returns the device's region.
pub(super) fn release(id: usize, vanished: bool) -> Result<PhysRange, ReleaseError> {
    let mut devs = core::mem::take(&mut *DEVICES.lock());
    let result = match devs.iter().position(|d| d.policy.id == id) {
        None => Err(ReleaseError::NoDevice),
        Some(i) => {
            let snap = devs[i].policy.snapshot();
            let live_cfg = if vanished {
                None
            } else {
                live(id).and_then(Live::config)
            };
            let plugged = snap.guest_plugged != 0
                || live_cfg.is_some_and(|c| c.plugged_size != 0 || c.requested_size != 0);
            if plugged && !vanished {
                Err(ReleaseError::Plugged)
            } else {
                if let Some(l) = live(id) {
                    l.gone.store(true, Ordering::Release);
                }
                let d = devs.remove(i);
                if vanished {
                    if snap.guest_plugged != 0 {
                        log::error!(
                            "vmem{id}: vanished with {} MiB plugged; that memory stays as it is",
                            snap.guest_plugged >> 20
                        );
                    }
                    core::mem::forget(d);
                } else {
                    drop(d);
                }
                Ok(PhysRange {
                    base: snap.cfg.addr,
                    size: snap.cfg.region_size,
                })
            }
        }
    };
    publish(&devs);
    *DEVICES.lock() = devs;
    result
}

/// The id of the device at `pci`, if one is in the list.
pub(super) fn id_at(pci: PciAddr) -> Option<usize> {
    STATUS.lock().iter().find(|s| s.pci == pci).map(|s| s.id)
}

/// Answers the `vmem state` query, if one is asked, with the device's STATE.
fn serve_query(devs: &mut [Dev]) {
    let asked = match *QUERY.lock() {
        Query::Asked { dev, range } => Some((dev, range)),
        _ => None,
    };
    let Some((i, range)) = asked else { return };
    let answer = match devs.iter_mut().find(|d| d.policy.id == i) {
        Some(d) => d
            .policy
            .query_state(&mut DriverDevice(&mut d.driver), range),
        None => Err(QueryError::NoDevice),
    };
    *QUERY.lock() = Query::Answered(answer);
    CHANGED.wake_all();
}

/// Publishes what `vmem` prints (the snapshots) and wakes `vmem wait`.
pub(super) fn publish(devs: &[Dev]) {
    let statuses: Vec<Status> = devs
        .iter()
        .map(|d| Status {
            id: d.policy.id,
            pci: d.pci,
            snap: d.policy.snapshot(),
            answered: d.answered,
        })
        .collect();
    let old = core::mem::replace(&mut *STATUS.lock(), statuses);
    drop(old);
    CHANGED.wake_all();
}

/// What `vmem` prints: one record per device, the last snapshot joined with the newest
/// configuration and interrupt count (empty before probe published any).
pub fn records() -> Vec<Record> {
    let statuses = STATUS.lock().clone();
    statuses
        .iter()
        .map(|s| {
            let l = live(s.id);
            let cfg = l.and_then(Live::config);
            let unanswered = l.is_some_and(|l| l.interrupts() != s.answered);
            Record::new(&s.snap, cfg.as_ref(), unanswered).device(s.id, s.pci)
        })
        .collect()
}

/// `vmem wait`: sleeps until the record of device id `dev` (of every device when `None`) is
/// settled (`ok`, `stalled` or `broken`) or `timeout_ms` passed. Returns the records last
/// looked at and whether they were settled.
pub fn wait(dev: Option<usize>, timeout_ms: u64) -> (Vec<Record>, bool) {
    let deadline = timer::now_ns().saturating_add(timeout_ms.saturating_mul(1_000_000));
    let last = RefCell::new((Vec::new(), false));
    CHANGED.wait_until(|| {
        let recs = records();
        let settled = recs
            .iter()
            .filter(|r| dev.is_none_or(|d| d == r.id))
            .all(Record::settled);
        *last.borrow_mut() = (recs, settled);
        if settled || timer::now_ns() >= deadline {
            return true;
        }
        // A pass at the deadline publishes, which wakes this wait to see the time.
        CONVERGE.schedule_at(deadline);
        false
    });
    last.into_inner()
}

/// `vmem state`: asks the worker to compare the STATE of device id `dev` over `range` with the
/// policy's bitmap, and sleeps until it answered.
pub fn query_state(dev: usize, range: PhysRange) -> Result<StateReport, QueryError> {
    *QUERY.lock() = Query::Asked { dev, range };
    CONVERGE.schedule();
    CHANGED.wait_until(|| matches!(*QUERY.lock(), Query::Answered(_)));
    match core::mem::replace(&mut *QUERY.lock(), Query::None) {
        Query::Answered(r) => r,
        _ => Err(QueryError::DeviceError),
    }
}
