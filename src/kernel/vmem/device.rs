//! The virtio-mem devices the kernel drives: the list of probed devices (driver and policy
//! of each), the interrupt handler, the deferred convergence work, and the status snapshot
//! the `vmem` command prints.
//!
//! Interrupts: a device's INTx line is level-triggered and only drops when the device's ISR
//! is read. The handler masks the line at the GIC and schedules the work; the work reads the
//! ISR (through the driver), unmasks the line, and converges every device. Requests wait
//! for their response with `wfi` (the queue interrupt or the next tick wakes the CPU).
//!
//! Locks: `DEVICES` (an `IrqSpinLock` around the list) is taken only in thread context, by
//! probe and by the work, which runs in the single `worker` task and takes the list out for
//! the pass (so interrupts stay enabled while it converges); never by the interrupt handler.
//! `STATUS` (the snapshots `vmem` prints) is replaced after each pass and at probe; readers
//! copy it out. Neither is held while the other is taken.

use super::hal::KernelHal;
use super::memory::KernelMemory;
use super::transport::InjectTransport;
use crate::kernel::inject;
use crate::kernel::work::Work;
use alloc::vec::Vec;
use hotmem::vmem::{self, Device, Next, Vmem};
use hotmem_arch::cpu::{self, IrqSpinLock};
use hotmem_arch::gic::{self, Trigger};
use hotmem_arch::timer;
use hotmem_drivers::virtio_mem::{Config, Request, Response, VirtioMem, VirtioMemError};
use virtio_drivers::transport::pci::PciTransport;

pub(super) type Driver = VirtioMem<KernelHal, InjectTransport<PciTransport>>;

/// One probed device.
pub(super) struct Dev {
    pub(super) driver: Driver,
    pub(super) policy: Vmem,
    pub(super) intid: Option<u32>,
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

/// The probed devices; see the module doc for who takes the lock.
pub(super) static DEVICES: IrqSpinLock<Vec<Dev>> =
    IrqSpinLock::new(Vec::new()).with_class(hotmem_arch::lock_class!("vmem_devices"));

/// What `vmem` prints about one device, replaced after every pass.
#[derive(Clone, Copy)]
pub struct Status {
    /// The configuration the last step read.
    pub cfg: Config,
    /// The policy's state.
    pub state: vmem::State,
    /// Why it is not converged.
    pub reason: vmem::Reason,
}

static STATUS: IrqSpinLock<Vec<Status>> =
    IrqSpinLock::new(Vec::new()).with_class(hotmem_arch::lock_class!("vmem_status"));

/// The convergence pass, run by the worker once registered (`kernel/mod.rs`): scheduled
/// by the interrupt handler, by probe, by a back-off deadline, and by commands that free
/// memory an unplug may have stalled on.
pub static CONVERGE: Work = Work::new(converge);

/// Interrupt handler: mask the line, leave the rest to the work.
pub(super) fn irq_handler(intid: u32) {
    let _ = gic::disable(intid);
    CONVERGE.schedule();
}

/// The deferred work: acknowledge interrupts, unmask lines, converge every device.
fn converge() {
    // Only the worker task converges, so it takes the list out of the lock and works with
    // interrupts enabled (a convergence pass may migrate gigabytes) and puts it back after.
    let mut devs = core::mem::take(&mut *DEVICES.lock());
    for d in devs.iter_mut() {
        let (config_changed, _) = d.driver.ack_interrupt();
        if config_changed {
            d.policy.config_changed();
        }
    }
    for d in devs.iter() {
        if let Some(i) = d.intid {
            let _ = gic::enable(i, Trigger::Level);
        }
    }
    for d in devs.iter_mut() {
        loop {
            let next = d.policy.step(
                &mut DriverDevice(&mut d.driver),
                &mut KernelMemory,
                timer::now_ns(),
            );
            match next {
                Next::Again => continue,
                Next::RetryAt(t) => CONVERGE.schedule_at(t),
                Next::Idle => {}
            }
            break;
        }
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

/// Refreshes what `vmem` prints.
pub(super) fn publish(devs: &[Dev]) {
    let statuses: Vec<Status> = devs
        .iter()
        .map(|d| Status {
            cfg: *d.policy.config(),
            state: d.policy.state(),
            reason: d.policy.reason(),
        })
        .collect();
    *STATUS.lock() = statuses;
}

/// What `vmem` prints: one snapshot per device, as of the last pass (or probe).
pub fn status() -> Vec<Status> {
    STATUS.lock().clone()
}
