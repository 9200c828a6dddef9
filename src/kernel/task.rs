//! Kernel threads: spawning, the context switch, preemption, sleeping, wait queues, and
//! per-task address spaces. The policy (run queue, states, wake tokens) is
//! [`hotmem::sched`]; this module runs its decisions.
//!
//! Model: every task is a kernel thread at EL1 with its own 64 KiB stack (order-4 unmovable
//! pages from the memory model, in the linear map, so no guard page: instead the lowest
//! word is a canary checked at every switch away from the task, and the rest starts filled
//! with a pattern so `ps` can show how deep each stack has been used) and an optional
//! [`AddressSpace`] (its TTBR0
//! tree; the switch loads it with its ASID and enables TTBR0 walks, or disables walks for a
//! task without one). The boot context of each CPU becomes that CPU's idle task (`wfi`
//! loop, on the static boot stack). One global run queue; tasks run on any CPU unless
//! pinned ([`Builder::cpu`]).
//!
//! Switching: [`switch_locked`] takes the scheduler lock (`SCHED`, IRQs masked), asks
//! `Sched::pick`, loads the next task's TTBR0, and calls `context::switch` *with the lock
//! still held*; whoever is resumed (in `switch_locked`, or a new task in its entry
//! trampoline) releases it in [`finish_switch`]. So no CPU can pick a task whose context is
//! still being saved. A task that exits is reaped (stack and address space freed) by
//! [`reap`] once another task has switched away from it: the switch that sees it dead calls
//! the exit hook ([`set_exit_hook`]), which asks whoever reaps (the worker, as wired in
//! `kernel/mod.rs`) to call [`reap`]; [`Builder::spawn`] and [`tasks`] reap as well.
//!
//! Preemption: the 100 Hz tick wakes timed sleepers and, when another task is ready for the
//! CPU, sets this CPU's `NEED_RESCHED`; at IRQ exit ([`irq_exit`]) the IRQ hook switches
//! if the interrupted context had IRQs unmasked (SPSR.I == 0): such a context holds no
//! `IrqSpinLock`. The preempted task's registers are in the trap frame on its own stack; it
//! resumes through the normal exception return.
//!
//! Cross-CPU wake-ups: [`WaitQueue::wake_all`] asks `Sched::wake_target` where each woken
//! task should be picked. When the waking CPU is busy and another CPU the task may run on
//! runs its idle task, the waker sends that CPU the reschedule SGI ([`RESCHED_SGI`]) instead
//! of preempting its own task; the SGI's handler ([`resched_interrupt`]) only sets that
//! CPU's `NEED_RESCHED`, and its IRQ exit switches (an idle task always runs with IRQs
//! unmasked, even in `wfi`). Otherwise, or if the SGI cannot be sent, the waking CPU sets
//! its own `NEED_RESCHED`, as the tick does.
//!
//! Blocking in a synchronous exception (for page migration): a sync hook (see
//! `exception::set_sync_hook`) runs on the faulting task's stack with the full trap frame
//! saved, so it may call [`WaitQueue::wait_until`] (or [`sleep_ms`]) and then return true:
//! the frame is restored and the faulting instruction (ELR unchanged) runs again, e.g.
//! against the new page-table entry. Only when [`can_sleep_in`] is true for the frame: the
//! faulting context was a task (not idle) with IRQs unmasked, so it held no spin lock. A
//! migration fault handler looks like:
//! ```ignore
//! fn sync_hook(frame: &mut TrapFrame, esr: Esr, far: u64) -> bool {
//!     let Some(aspace) = task::current_address_space() else { return false };
//!     let va = far & !0xfff;
//!     let is_migrating = || aspace.entry(va).and_then(pgtable::parse_migration_entry).is_some();
//!     if !esr.is_data_abort_same_el() || !is_migrating() || !task::can_sleep_in(frame) {
//!         return false; // a real bug: dump and panic
//!     }
//!     MIGRATION_WQ.wait_until(|| !is_migrating()); // the migrator calls wake_all()
//!     true // retry the access
//! }
//! ```
//!
//! Locks (all `IrqSpinLock`s, all leaves except as noted):
//! - `SCHED` guards the task table and run queue (`Sched`). Innermost: nothing else is
//!   taken while it is held (no allocation, no printing). It may be taken with the memory
//!   model's lock (`mm_lock()`), the console lock or an address-space lock held.
//! - each [`WaitQueue`]'s lock guards its waiter list; never held together with `SCHED` or
//!   any other lock, so `wake_all` works from IRQ context and under `mm_lock()`.
//! - Stacks and address spaces are allocated and freed with no scheduler lock held
//!   (`mm_lock()` is taken then, so don't spawn while holding `mm_lock()`).
//!
//! Memory: a task's stack is kernel memory, or workload memory for tasks built with
//! [`Builder::workload`] (hog, spin), which then cannot take the kernel reserve or the floor
//! (`hotmem::mm::reserve`); so are the table pages of the address spaces
//! [`new_address_space`] makes. Spawning allocates fallibly (stack pages from the model,
//! task and closure boxes through `heap::try_box`) and fails with
//! [`SpawnError::NoMemory`]; exit and reaping only free.
//!
//! Rules for callers: never sleep ([`WaitQueue::wait_until`], [`sleep_ms`], [`yield_now`] is
//! fine anywhere preemption is) while holding a spin lock, in an IRQ handler, or in an idle
//! task (idle tasks and code that runs before tasks exist poll with `wfi` instead).

use super::heap::try_box;
use super::mem::mm_lock;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use arrayvec::ArrayVec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use hotmem::mm::{AllocFlags, Pfn};
use hotmem::sched::{Sched, SchedError, TaskId, TaskInfo, WakeTarget, MAX_TASKS};
use hotmem_arch::context::{self, Context};
use hotmem_arch::cpu::{self, IrqSpinGuard, IrqSpinLock};
use hotmem_arch::esr::TrapFrame;
use hotmem_arch::gic;
use hotmem_arch::layout::{self, MAX_CPUS, PAGE_SIZE};
use hotmem_arch::timer;
use hotmem_arch::uspace::{self, AddressSpace, AsError};

/// Task stacks: 2^4 pages = 64 KiB.
const STACK_ORDER: u32 = 4;
/// Bytes of every task stack.
pub const STACK_BYTES: u64 = PAGE_SIZE << STACK_ORDER;
/// Fills a new stack, so `ps` can tell how deep it has ever been used (the first word
/// from the bottom that differs is the high-water mark).
const STACK_FILL: u64 = 0x5354_4143_4b5f_4655; // "STACK_FU"
/// The lowest word of every stack. Stacks live in the linear map with no guard page, so
/// an overflow would silently corrupt the neighbouring pages; instead every switch away
/// from a task checks this word and panics naming the task.
const STACK_CANARY: u64 = 0xdead_57ac_c0de_0f10;

/// A task's kernel-side state; the `Sched` payload. Boxed, so its address is stable.
struct Task {
    /// Saved registers while the task is not running. Written only by `context::switch`
    /// with `SCHED` held (or before the task is published).
    ctx: UnsafeCell<Context>,
    /// Physical base of the stack (order [`STACK_ORDER`]); `None` for idle tasks.
    stack_pa: Option<u64>,
    /// The body, taken once by the task itself when it starts.
    entry: UnsafeCell<Option<Box<dyn FnOnce() + Send>>>,
    aspace: Option<Arc<AddressSpace>>,
}

// SAFETY: `ctx` is accessed only by the scheduler under `SCHED` (see the field doc), and
// `entry` only by the task itself, once, after it starts; everything else is immutable or
// thread-safe (`Arc<AddressSpace>`: `AddressSpace` is locked internally).
unsafe impl Send for Task {}
// SAFETY: as above.
unsafe impl Sync for Task {}

impl Task {
    /// The lowest word of the stack, as a pointer (`None` for idle tasks).
    fn stack_bottom(&self) -> Option<*const u64> {
        self.stack_pa
            .map(|pa| layout::phys_to_virt(pa) as *const u64)
    }

    /// Is the stack's canary word unchanged? (Always true for idle tasks.)
    fn canary_intact(&self) -> bool {
        // SAFETY: the stack is owned by this task and mapped while the task exists.
        self.stack_bottom()
            .is_none_or(|p| unsafe { p.read_volatile() } == STACK_CANARY)
    }

    /// The deepest the stack has been used, in bytes (`None` for idle tasks).
    fn stack_high_water(&self) -> Option<u64> {
        let bottom = self.stack_bottom()?;
        let words = (STACK_BYTES / 8) as usize;
        // SAFETY: as in `canary_intact`; words below the stack pointer are only read.
        let untouched = (1..words)
            .take_while(|&i| unsafe { bottom.add(i).read_volatile() } == STACK_FILL)
            .count();
        Some(STACK_BYTES - 8 * (1 + untouched as u64))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(pa) = self.stack_pa {
            if let Some(mm) = mm_lock().as_mut() {
                let _ = mm.free_pages(Pfn(pa / PAGE_SIZE), STACK_ORDER);
            }
        }
    }
}

type TaskSched = Sched<Box<Task>>;

static SCHED: IrqSpinLock<TaskSched> =
    IrqSpinLock::new(Sched::new()).with_class(hotmem_arch::lock_class!("sched"));
/// Per CPU: switch at the next IRQ exit (set by the tick and by wake-ups).
static NEED_RESCHED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: the task the last switch on this CPU left (for `finish_switch`).
static SWITCHED_FROM: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Called when an exited task can be reaped (see [`set_exit_hook`]).
static EXIT_HOOK: spin::Once<fn()> = spin::Once::new();

/// Sets what runs when a task has exited and been switched away from for good, so its
/// stack can be freed: it should arrange for [`reap`] to run soon in thread context. It
/// runs on the switch path of the next task, IRQs masked, with no lock of this module held:
/// it may wake a wait queue but must not sleep or allocate. Set once, at boot.
pub fn set_exit_hook(hook: fn()) {
    EXIT_HOOK.call_once(|| hook);
}

/// Registers the running boot context of `cpu` as its idle task. Called once per CPU,
/// before it enables IRQs.
pub fn init_cpu(cpu: usize) {
    uspace::init_cpu();
    let idle = Box::new(Task {
        ctx: UnsafeCell::new(Context::default()),
        stack_pa: None,
        entry: UnsafeCell::new(None),
        aspace: None,
    });
    let r = SCHED.lock().add_idle(cpu, "idle", idle);
    if let Err((e, _idle)) = r {
        log::error!("sched: cpu{cpu}: no idle task: {e:?}");
    }
}

/// The idle task's body: wait for interrupts; the tick and wake-ups switch to real work.
pub fn idle_loop() -> ! {
    loop {
        yield_now();
        cpu::wait_for_interrupt();
    }
}

/// Switches to whatever `Sched::pick` chooses (maybe nothing). Called with `SCHED` held;
/// returns with it released and the caller's interrupt state restored.
fn switch_locked(mut g: IrqSpinGuard<'static, TaskSched>) {
    let cpu = cpu::index();
    NEED_RESCHED[cpu].store(false, Ordering::Relaxed);
    let Some(sw) = g.pick(cpu) else { return };
    let prev: *const Task = &**g.payload(sw.prev).expect("running task has a payload");
    let next: *const Task = &**g.payload(sw.next).expect("picked task has a payload");
    // SAFETY: `prev` is alive (see below) and is the task running here, on its own stack.
    if unsafe { !(*prev).canary_intact() } {
        let name = g.info(sw.prev).map_or("?", |i| i.name);
        panic!(
            "task {} ({name}) overflowed its {} KiB stack",
            sw.prev.0,
            STACK_BYTES / 1024
        );
    }
    // SAFETY: both boxes are owned by the table, which cannot drop them while we hold SCHED
    // (a payload is only reaped after its task switched away and `finish_switch` ran).
    match unsafe { &(*next).aspace } {
        Some(a) => a.activate(),
        None => uspace::deactivate(),
    }
    SWITCHED_FROM[cpu].store(sw.prev.0, Ordering::Relaxed);
    let daif = g.into_raw();
    // SAFETY: IRQs are masked (SCHED is held); `prev` is this CPU's current task, whose
    // context slot stays alive until it is reaped (after it has switched away for good);
    // `next` was just taken off the run queue (or is this CPU's idle task), so no other
    // CPU runs or resumes it, and its context was saved by `switch` or made by `spawn`.
    unsafe { context::switch((*prev).ctx.get(), (*next).ctx.get()) };
    // Resumed, maybe on another CPU: whoever switched to us holds SCHED.
    finish_switch();
    cpu::irq_restore(daif);
}

/// The second half of a switch, on the resumed task: releases `SCHED` (IRQs stay masked).
/// Also the first thing a new task runs (from the entry trampoline).
extern "C" fn finish_switch() {
    let masked = cpu::irq_save();
    let cpu = cpu::index();
    // SAFETY: the CPU that switched to this task holds SCHED and turned its guard into raw
    // (switch_locked); that guard was never dropped, IRQs are masked, and this is the only
    // place that adopts it.
    let mut g = unsafe { SCHED.adopt(masked) };
    let dead = g.finish_switch(TaskId(SWITCHED_FROM[cpu].load(Ordering::Relaxed)));
    drop(g);
    if dead {
        if let Some(hook) = EXIT_HOOK.get() {
            hook();
        }
    }
}

extern "C" fn task_entry(arg: usize) -> ! {
    let task = arg as *const Task;
    // SAFETY: `arg` is this task's own boxed `Task` (set in `Builder::spawn`), alive while
    // the task runs; only the task itself touches `entry`.
    let f = unsafe { (*(*task).entry.get()).take() };
    if let Some(f) = f {
        f();
    }
    exit()
}

/// Ends the current task (its body returned).
fn exit() -> ! {
    let mut g = SCHED.lock();
    g.exit_current(cpu::index());
    switch_locked(g);
    unreachable!("an exited task was resumed");
}

/// Frees the stacks and address spaces of exited tasks (thread context; takes
/// `mm_lock()`).
pub fn reap() {
    loop {
        let Some(t) = SCHED.lock().reap() else { break };
        drop(t); // frees the stack through mm_lock(), with SCHED released
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No memory for the stack.
    NoMemory,
    Sched(SchedError),
}

/// Options of a new task.
pub struct Builder {
    name: &'static str,
    cpu: Option<usize>,
    aspace: Option<Arc<AddressSpace>>,
    stack_flags: AllocFlags,
}

impl Builder {
    pub fn new(name: &'static str) -> Builder {
        Builder {
            name,
            cpu: None,
            aspace: None,
            stack_flags: AllocFlags::UNMOVABLE,
        }
    }

    /// The task belongs to a workload: its stack is workload memory (it leaves the kernel
    /// reserve and the floor alone, and spawning fails instead).
    pub fn workload(mut self) -> Builder {
        self.stack_flags = AllocFlags::WORKLOAD;
        self
    }

    /// Runs the task only on CPU `cpu`.
    #[allow(dead_code)] // No caller yet: the one way to the scheduler's CPU affinity.
    pub fn cpu(mut self, cpu: usize) -> Builder {
        self.cpu = Some(cpu);
        self
    }

    /// Runs the task in `aspace` (its TTBR0 while it runs).
    pub fn address_space(mut self, aspace: Arc<AddressSpace>) -> Builder {
        self.aspace = Some(aspace);
        self
    }

    /// Starts the task: `f` runs on its own stack; the task exits when `f` returns.
    pub fn spawn(self, f: impl FnOnce() + Send + 'static) -> Result<TaskId, SpawnError> {
        reap();
        let pfn = mm_lock()
            .as_mut()
            .and_then(|m| m.alloc_pages(STACK_ORDER, self.stack_flags).ok())
            .ok_or(SpawnError::NoMemory)?;
        let stack_pa = pfn.addr().0;
        let bottom = layout::phys_to_virt(stack_pa);
        let top = bottom + STACK_BYTES;
        // SAFETY: the pages were just allocated for this stack and are in the linear map;
        // nothing else refers to them yet.
        unsafe {
            let words =
                core::slice::from_raw_parts_mut(bottom as *mut u64, (STACK_BYTES / 8) as usize);
            words.fill(STACK_FILL);
            words[0] = STACK_CANARY;
        }
        let mut task = Task {
            ctx: UnsafeCell::new(Context::default()),
            stack_pa: Some(stack_pa),
            entry: UnsafeCell::new(None),
            aspace: self.aspace,
        };
        // Dropping `task` on a failure frees the stack.
        let Ok(entry) = try_box(f) else {
            return Err(SpawnError::NoMemory);
        };
        *task.entry.get_mut() = Some(entry);
        let task = try_box(task).map_err(|_| SpawnError::NoMemory)?;
        let arg = &*task as *const Task as usize;
        // SAFETY: the task is not published yet: nothing else can see `ctx`.
        unsafe { *task.ctx.get() = Context::new_thread(top, finish_switch, task_entry, arg) };
        let r = SCHED.lock().spawn(self.name, self.cpu, task);
        // On failure the box comes back and is dropped here (freeing the stack through
        // mm_lock()), after SCHED was released.
        r.map_err(|(e, _task)| SpawnError::Sched(e))
    }
}

/// Starts a kernel thread running `f` on any CPU. Panics if no task can be created (use
/// [`Builder`] to handle that).
pub fn spawn(name: &'static str, f: impl FnOnce() + Send + 'static) -> TaskId {
    match Builder::new(name).spawn(f) {
        Ok(id) => id,
        Err(e) => panic!("spawn {name}: {e:?}"),
    }
}

/// The task running on this CPU (`None` before this CPU's idle task exists).
pub fn current() -> Option<TaskId> {
    let g = SCHED.lock();
    g.current(cpu::index())
}

/// The current task, if it may sleep (a task, not an idle task).
fn current_sleeper(g: &TaskSched) -> Option<TaskId> {
    let id = g.current(cpu::index())?;
    (!g.info(id)?.idle).then_some(id)
}

/// The address space of the current task.
pub fn current_address_space() -> Option<Arc<AddressSpace>> {
    let g = SCHED.lock();
    g.payload(g.current(cpu::index())?)?.aspace.clone()
}

/// True when the context that took the exception `frame` may sleep in the handler: a task
/// (not idle) that ran with IRQs unmasked, hence held no spin lock.
pub fn can_sleep_in(frame: &TrapFrame) -> bool {
    frame.spsr & cpu::DAIF_I == 0 && current_sleeper(&SCHED.lock()).is_some()
}

/// Lets another ready task run (returns at once if there is none).
pub fn yield_now() {
    switch_locked(SCHED.lock());
}

/// Sleeps at least `ms` milliseconds (woken by the 10 ms tick, so rounded up to it).
pub fn sleep_ms(ms: u64) {
    let deadline = timer::now_ns() + ms * 1_000_000;
    // A wake-up meant for an earlier wait (a waker that took this task off a wait queue
    // and was delayed before it reached the scheduler) can end the sleep early: go back
    // to sleep until the deadline really passed.
    while timer::now_ns() < deadline {
        let mut g = SCHED.lock();
        if current_sleeper(&g).is_none() {
            drop(g);
            cpu::wait_for_interrupt();
            continue;
        }
        g.sleep_current_until(cpu::index(), deadline);
        switch_locked(g);
    }
}

/// IRQ hook tail: switch tasks if the tick or a wake-up asked for it and the interrupted
/// context may be preempted.
pub fn irq_exit(frame: &TrapFrame) {
    if frame.spsr & cpu::DAIF_I != 0 || !NEED_RESCHED[cpu::index()].load(Ordering::Relaxed) {
        return;
    }
    switch_locked(SCHED.lock());
}

/// The SGI a waker sends a CPU that idles while a task it may run became ready.
pub const RESCHED_SGI: u32 = 1;

/// Handler of [`RESCHED_SGI`]: switch at this IRQ's exit.
pub fn resched_interrupt(_intid: u32) {
    NEED_RESCHED[cpu::index()].store(true, Ordering::Relaxed);
}

/// From the timer tick: wake timed sleepers; ask for a switch if others are ready here.
pub fn tick() {
    let cpu = cpu::index();
    let mut g = SCHED.lock();
    g.tick(timer::now_ns());
    if g.has_ready(cpu) {
        NEED_RESCHED[cpu].store(true, Ordering::Relaxed);
    }
}

/// Tasks that wait for a condition, and the wake-ups that end the wait.
///
/// The waker makes the condition true, then calls [`wake_all`](Self::wake_all) (from any
/// context, IRQ handlers included). Waiters re-check the condition after every wake-up.
pub struct WaitQueue {
    waiters: IrqSpinLock<ArrayVec<TaskId, MAX_TASKS>>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    pub const fn new() -> WaitQueue {
        WaitQueue {
            waiters: IrqSpinLock::new(ArrayVec::new_const())
                .with_class(hotmem_arch::lock_class!("waitq")),
        }
    }

    /// Returns once `cond()` is true, sleeping in between. `cond` is called with no lock of
    /// this module held (it may take locks, but must not sleep, and must not touch movable
    /// task memory: a fault on a page under migration would sleep in a nested wait, whose
    /// `prepare_wait` would clear this wait's wake token). No wake-up is lost: the
    /// task registers as a waiter and clears its wake token before it checks `cond`, so a
    /// `wake_all` after the check either finds it asleep or leaves the token that cancels
    /// the sleep. From an idle task or before tasks exist it polls with `wfi`.
    pub fn wait_until(&self, cond: impl Fn() -> bool) {
        let mut registered = false;
        while !cond() {
            let me = {
                let mut g = SCHED.lock();
                match current_sleeper(&g) {
                    Some(me) => {
                        g.prepare_wait(cpu::index());
                        me
                    }
                    None => {
                        drop(g);
                        cpu::wait_for_interrupt();
                        continue;
                    }
                }
            };
            {
                let mut w = self.waiters.lock();
                if !w.contains(&me) {
                    // Entries leave on wake_all or below, so the list holds live tasks
                    // only, at most MAX_TASKS: the push cannot fail.
                    let _ = w.try_push(me);
                }
            }
            registered = true;
            if cond() {
                break;
            }
            let mut g = SCHED.lock();
            if g.block_current(cpu::index()) {
                switch_locked(g);
            }
        }
        if registered {
            if let Some(me) = current() {
                self.waiters.lock().retain(|t| *t != me);
            }
        }
    }

    /// Wakes every waiting task (they re-check their conditions).
    pub fn wake_all(&self) {
        let ids = core::mem::take(&mut *self.waiters.lock());
        if ids.is_empty() {
            return;
        }
        let here = cpu::index();
        // CPUs to send the reschedule SGI (bit per CPU), and whether this one switches.
        let mut kick = 0u32;
        let mut local = false;
        {
            let mut g = SCHED.lock();
            for id in ids {
                if g.wake(id) {
                    match g.wake_target(id, here, kick) {
                        WakeTarget::Here => local = true,
                        WakeTarget::Cpu(c) => kick |= 1 << c,
                    }
                }
            }
        }
        for c in (0..MAX_CPUS).filter(|c| kick & (1 << c) != 0) {
            local |= gic::send_sgi(RESCHED_SGI, c).is_err();
        }
        if local {
            NEED_RESCHED[here].store(true, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Address spaces: table pages from the memory model.

/// A new, empty address space for a workload task: its table pages are workload memory
/// from the memory model (they leave the kernel reserve and the floor alone).
pub fn new_address_space() -> Result<Arc<AddressSpace>, AsError> {
    // SAFETY: `alloc_workload_table_page` returns zeroed, page-aligned pages the memory model
    // just allocated (so nothing else uses them until `free_table_page`), and all RAM the
    // model hands out is in the linear map.
    unsafe {
        AddressSpace::new(
            super::mem::alloc_workload_table_page,
            super::mem::free_table_page,
        )
    }
    .map(Arc::new)
}

// ---------------------------------------------------------------------------------------
// Snapshot for `ps` (printed by the shell).

/// Snapshot of every task, by id, with the high-water mark of its stack in bytes (`None`
/// for idle tasks, which run on their CPU's boot stack, and for reaped ones). `None` when
/// there is no memory for the snapshot.
pub fn tasks() -> Option<Vec<(TaskInfo, Option<u64>)>> {
    reap();
    let mut v = Vec::new();
    v.try_reserve_exact(MAX_TASKS).ok()?;
    {
        // Within capacity: no allocation under SCHED. The stacks are scanned with SCHED
        // held so none can be freed meanwhile (a scan is at most 8 Ki words).
        let g = SCHED.lock();
        v.extend(g.tasks().map(|t| {
            let used = g.payload(t.id).and_then(|p| p.stack_high_water());
            (t, used)
        }));
    }
    v.sort_unstable_by_key(|t| t.0.id);
    Some(v)
}
