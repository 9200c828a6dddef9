//! Kernel glue of fault injection: the one [`Plan`] (`hotmem::inject`) behind its lock, and
//! the questions the hooks ask it.
//!
//! The hooks, each a line or two where the kernel meets the outside:
//! - device replies: `vmem/device.rs` asks [`refuse`] before sending a request and
//!   [`replace`] with the device's answer;
//! - configuration reads: `vmem/transport.rs` (the transport under the driver) asks
//!   [`config`] at every read of the generation counter and of `requested_size`;
//! - page allocations: the model's page allocator consults [`page_alloc_fails`] (its one
//!   fault hook, wired by `kernel/mod.rs` with `Mm::set_alloc_fault`), so workloads,
//!   migration destinations, stacks, page tables, heap pages, driver buffers and the
//!   mem_maps of plugged memory can all fail;
//! - heap allocations: the global allocator asks [`heap_fails`] first;
//! - migration: `migrate.rs` asks [`migrate_fails`] for each page the engine is moving and
//!   pins the ones chosen, so they fail as pinned.
//!
//! Fast path: an atomic mask of the kinds with an active rule ([`Armed`]); a hook whose kind
//! is not armed returns at once without the lock, so an idle plan costs one load.
//!
//! Locks: `PLAN` is a leaf. Nothing is allocated, logged or locked while it is held (the plan
//! is plain data, copied out for printing), so any hook may take it, including the heap's and
//! one called under `mm_lock()`.

use core::sync::atomic::{AtomicU8, Ordering};
use hotmem::inject::{AllocSite, Applied, ArmError, Armed, Command, ConfigFault, Plan};
use hotmem::mm::AllocFlags;
use hotmem::shell::BootArgs;
use hotmem_arch::cpu::IrqSpinLock;
use hotmem_drivers::virtio_mem::{Request, Response};

static PLAN: IrqSpinLock<Plan> = IrqSpinLock::new(Plan::new());
/// [`Armed`] bits of `PLAN`, refreshed whenever the plan changes under its lock.
static ARMED: AtomicU8 = AtomicU8::new(0);

/// Runs `f` on the plan if a rule of `kind` is active, else returns `R::default()` without
/// taking the lock.
fn ask<R: Default>(kind: Armed, f: impl FnOnce(&mut Plan) -> R) -> R {
    if !Armed::any_in(ARMED.load(Ordering::Relaxed), kind) {
        return R::default();
    }
    let mut plan = PLAN.lock();
    let r = f(&mut plan);
    ARMED.store(plan.armed().bits(), Ordering::Relaxed);
    r
}

/// Arms what the bootarg `inject=` gave (before any device is probed).
pub fn configure(args: &BootArgs) {
    let mut plan = PLAN.lock();
    *plan = args.inject;
    ARMED.store(plan.armed().bits(), Ordering::Relaxed);
}

/// Carries out a shell `inject` command.
pub fn apply(cmd: Command) -> Result<Applied, ArmError> {
    let mut plan = PLAN.lock();
    let r = plan.apply(cmd);
    ARMED.store(plan.armed().bits(), Ordering::Relaxed);
    r
}

/// A copy of the plan, to print.
pub fn snapshot() -> Plan {
    *PLAN.lock()
}

/// About to send `req`: the answer the guest gets instead of sending it, if refused.
pub fn refuse(req: &Request) -> Option<Response> {
    ask(Armed::REPLY, |p| p.refuse(req))
}

/// The device answered `real` to `req`: the answer the guest gets instead, if replaced.
pub fn replace(req: &Request, real: &Response) -> Option<Response> {
    ask(Armed::REPLY, |p| p.replace(req, real))
}

/// A configuration read: whether it is torn the way `what` says.
pub fn config(what: ConfigFault) -> bool {
    ask(Armed::CONFIG, |p| p.config(what))
}

/// The model is about to allocate pages with `flags`: whether the allocation fails. The
/// model's fault hook (`Mm::set_alloc_fault`); called under `mm_lock()`.
pub fn page_alloc_fails(flags: AllocFlags) -> bool {
    let site = if flags.movable {
        AllocSite::Movable
    } else {
        AllocSite::Kernel
    };
    ask(Armed::PAGES, |p| p.alloc(site))
}

/// A heap allocation: whether it returns null.
pub fn heap_fails() -> bool {
    ask(Armed::HEAP, |p| p.alloc(AllocSite::Heap))
}

/// A page the migration engine is moving: whether its migration fails.
pub fn migrate_fails() -> bool {
    ask(Armed::MIGRATE, Plan::migrate)
}

/// Whether a migration rule is active (lets the migration hook skip its page-table look-ups).
pub fn migrate_armed() -> bool {
    Armed::any_in(ARMED.load(Ordering::Relaxed), Armed::MIGRATE)
}
