//! Scheduler policy, as plain data (host-testable): the task table, task states, the global
//! run queue and the bookkeeping that makes wait queues safe against lost wake-ups. The
//! kernel glue (`src/kernel/task.rs`) keeps one [`Sched`] behind the scheduler lock and
//! does the context switches this module decides.
//!
//! Model: at most [`MAX_TASKS`] tasks, each with a [`TaskId`] (never reused), a name, an
//! optional CPU affinity and an opaque payload `P` (the kernel's stack and saved context).
//! Every CPU has exactly one idle task (registered with [`Sched::add_idle`]), which runs
//! when nothing else is ready for that CPU and is never on the run queue. The run queue is
//! one FIFO shared by all CPUs: [`Sched::pick`] takes the first task allowed on the CPU,
//! and a preempted task goes to the back (round robin).
//!
//! States (one line per transition):
//! - `Ready` -> `Running`: [`Sched::pick`] on some CPU;
//! - `Running` -> `Ready`: [`Sched::pick`] found another task for the CPU (preemption or
//!   yield); an idle task becomes `Ready` without entering the queue;
//! - `Running` -> `Sleeping`: [`Sched::block_current`] (wait queue) or
//!   [`Sched::sleep_current_until`] (timer);
//! - `Sleeping` -> `Ready`: [`Sched::wake`], or [`Sched::tick`] once the deadline passed;
//! - `Running` -> `Exited`: [`Sched::exit_current`]. The task's payload (its stack) is
//!   still in use until the next task on that CPU calls [`Sched::finish_switch`]; only
//!   then can [`Sched::reap`] hand the payload out to be freed. The record stays (for `ps`)
//!   until its slot is reused.
//!
//! Lost wake-ups: a waiter calls [`Sched::prepare_wait`] (clears its wake token) before it
//! checks its condition; a [`Sched::wake`] that finds the task not yet sleeping sets the
//! token; [`Sched::block_current`] then refuses to sleep (returns false) and the waiter
//! re-checks its condition. So a wake-up between the check and the sleep is never lost,
//! even when the waiter is preempted in between: only a real wake-up of a sleeper (or
//! the next `prepare_wait`) clears the token, never being put back on the run queue.
//!
//! Wake-up placement: [`Sched::wake_target`] says which CPU should be asked to reschedule
//! for a task a wake-up just made ready: the waking CPU itself when it runs its idle task
//! and the task may run there; otherwise another CPU the task may run on that runs its
//! idle task ([`Sched::idle_cpu_for`]), so the waker's current task keeps its CPU; and
//! only when there is none, the waking CPU (its current task is preempted). The choice
//! never changes where the task is: it is on the shared run queue either way, and any
//! CPU allowed to run it may pick it. So a target that stops being idle before it
//! reschedules, or a request that never arrives, delays the task until the next pick on
//! an allowed CPU (at the latest that CPU's next tick), and the lost-wake-up argument
//! above is untouched: placement reads the table, it never touches wake tokens.
//!
//! Invariants: a task is on the run queue iff it is `Ready` and not idle; each CPU's
//! current task is `Running` (or is the one that just left `Running` until the switch is
//! done); no operation allocates (the kernel calls them with IRQs masked under a leaf lock).
#![forbid(unsafe_code)]

use arrayvec::ArrayVec;
use hotmem_arch::layout::MAX_CPUS;

/// Most tasks alive or remembered at once (idle tasks included).
pub const MAX_TASKS: usize = 128;

/// A task's id: given out in increasing order and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u32);

impl core::fmt::Display for TaskId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a task is in its life (the transitions are listed in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// On a CPU now.
    Running,
    /// Waiting for a CPU (on the run queue, unless it is an idle task).
    Ready,
    /// Blocked on a wait queue or in a timed sleep.
    Sleeping,
    /// Finished; its record stays for `ps` until the slot is reused.
    Exited,
}

impl TaskState {
    /// The name `ps` prints.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Ready => "ready",
            TaskState::Sleeping => "sleeping",
            TaskState::Exited => "exited",
        }
    }
}

/// Why the scheduler refused to add a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedError {
    /// [`MAX_TASKS`] tasks exist and none can be forgotten.
    Full,
    /// A CPU index at or above `MAX_CPUS`.
    BadCpu,
    /// That CPU already has an idle task.
    IdleExists,
}

/// What `ps` shows about a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInfo {
    /// Its id.
    pub id: TaskId,
    /// The name it was spawned with.
    pub name: &'static str,
    /// The CPU it runs on, or last ran on (its affinity if it never ran).
    pub cpu: usize,
    /// Its state.
    pub state: TaskState,
    /// How many times it was switched to.
    pub switches: u64,
    /// An idle task (one per CPU, never on the run queue).
    pub idle: bool,
}

/// A decision of [`Sched::wake_target`]: which CPU should reschedule for a woken task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeTarget {
    /// The waking CPU (its current task is preempted, or it was idle).
    Here,
    /// Another CPU, which runs its idle task: ask it to reschedule.
    Cpu(usize),
}

/// A decision of [`Sched::pick`]: stop `prev`, run `next` on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The task that stops running on this CPU.
    pub prev: TaskId,
    /// The task that runs next on this CPU (maybe an idle task).
    pub next: TaskId,
}

struct Slot<P> {
    info: TaskInfo,
    affinity: Option<usize>,
    /// Deadline of a timed sleep (ns).
    wake_at: Option<u64>,
    /// A wake-up arrived while the task was not sleeping (see the module doc).
    wake_pending: bool,
    /// Exited and switched away from: the payload is no longer in use.
    dead: bool,
    payload: Option<P>,
}

/// The task table and run queue of every CPU; `P` is the kernel's per-task payload.
pub struct Sched<P> {
    slots: [Option<Slot<P>>; MAX_TASKS],
    ready: ArrayVec<u16, MAX_TASKS>,
    current: [Option<u16>; MAX_CPUS],
    idle: [Option<u16>; MAX_CPUS],
    next_id: u32,
}

impl<P> Default for Sched<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> Sched<P> {
    /// An empty table: no tasks, no idle tasks yet.
    pub const fn new() -> Self {
        Sched {
            slots: [const { None }; MAX_TASKS],
            ready: ArrayVec::new_const(),
            current: [None; MAX_CPUS],
            idle: [None; MAX_CPUS],
            next_id: 0,
        }
    }

    fn find(&self, id: TaskId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.info.id == id))
    }

    fn slot(&self, i: usize) -> &Slot<P> {
        self.slots[i].as_ref().expect("live slot")
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot<P> {
        self.slots[i].as_mut().expect("live slot")
    }

    /// A free slot: never used, or the oldest reaped exited task.
    fn free_slot(&self) -> Result<usize, SchedError> {
        if let Some(i) = self.slots.iter().position(|s| s.is_none()) {
            return Ok(i);
        }
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                (s.dead && s.payload.is_none()).then_some((s.info.id, i))
            })
            .min()
            .map(|(_, i)| i)
            .ok_or(SchedError::Full)
    }

    fn insert(
        &mut self,
        name: &'static str,
        cpu: usize,
        affinity: Option<usize>,
        state: TaskState,
        idle: bool,
        payload: P,
    ) -> Result<(usize, TaskId), (SchedError, P)> {
        if cpu >= MAX_CPUS || affinity.is_some_and(|c| c >= MAX_CPUS) {
            return Err((SchedError::BadCpu, payload));
        }
        let i = match self.free_slot() {
            Ok(i) => i,
            Err(e) => return Err((e, payload)),
        };
        let id = TaskId(self.next_id);
        self.next_id += 1;
        self.slots[i] = Some(Slot {
            info: TaskInfo {
                id,
                name,
                cpu,
                state,
                switches: 0,
                idle,
            },
            affinity,
            wake_at: None,
            wake_pending: false,
            dead: false,
            payload: Some(payload),
        });
        Ok((i, id))
    }

    /// Registers the context already running on `cpu` as its idle task (now `Running`).
    pub fn add_idle(
        &mut self,
        cpu: usize,
        name: &'static str,
        payload: P,
    ) -> Result<TaskId, (SchedError, P)> {
        if self.idle.get(cpu).is_some_and(|i| i.is_some()) {
            return Err((SchedError::IdleExists, payload));
        }
        let (i, id) = self.insert(name, cpu, Some(cpu), TaskState::Running, true, payload)?;
        self.slot_mut(i).info.switches = 1;
        self.idle[cpu] = Some(i as u16);
        self.current[cpu] = Some(i as u16);
        Ok(id)
    }

    /// A new `Ready` task at the back of the run queue, allowed only on `affinity` if given.
    /// On failure the payload comes back, so the caller can drop it (free its stack) after
    /// releasing the scheduler lock.
    pub fn spawn(
        &mut self,
        name: &'static str,
        affinity: Option<usize>,
        payload: P,
    ) -> Result<TaskId, (SchedError, P)> {
        let (i, id) = self.insert(
            name,
            affinity.unwrap_or(0),
            affinity,
            TaskState::Ready,
            false,
            payload,
        )?;
        self.ready.push(i as u16);
        Ok(id)
    }

    /// The task running on `cpu`.
    pub fn current(&self, cpu: usize) -> Option<TaskId> {
        let i = (*self.current.get(cpu)?)?;
        Some(self.slot(i as usize).info.id)
    }

    /// What `ps` shows about task `id` (`None` once its slot was reused).
    pub fn info(&self, id: TaskId) -> Option<TaskInfo> {
        self.find(id).map(|i| self.slot(i).info)
    }

    /// The payload of a task that has not been reaped.
    pub fn payload(&self, id: TaskId) -> Option<&P> {
        self.find(id).and_then(|i| self.slot(i).payload.as_ref())
    }

    fn current_mut(&mut self, cpu: usize) -> &mut Slot<P> {
        let i = self.current[cpu].expect("cpu has a current task") as usize;
        self.slot_mut(i)
    }

    /// Before a waiter checks its condition: forget earlier wake-ups of `cpu`'s task.
    pub fn prepare_wait(&mut self, cpu: usize) {
        self.current_mut(cpu).wake_pending = false;
    }

    /// Puts `cpu`'s task to sleep until [`wake`](Self::wake), unless a wake-up arrived since
    /// [`prepare_wait`](Self::prepare_wait) (then returns false and the task keeps running).
    /// The caller then switches away with [`pick`](Self::pick).
    pub fn block_current(&mut self, cpu: usize) -> bool {
        let s = self.current_mut(cpu);
        assert!(!s.info.idle, "an idle task cannot sleep");
        if core::mem::take(&mut s.wake_pending) {
            return false;
        }
        s.info.state = TaskState::Sleeping;
        s.wake_at = None;
        true
    }

    /// Puts `cpu`'s task to sleep until [`tick`](Self::tick) sees `deadline_ns` pass.
    pub fn sleep_current_until(&mut self, cpu: usize, deadline_ns: u64) {
        let s = self.current_mut(cpu);
        assert!(!s.info.idle, "an idle task cannot sleep");
        s.info.state = TaskState::Sleeping;
        s.wake_at = Some(deadline_ns);
    }

    /// Ends `cpu`'s task; the caller switches away with [`pick`](Self::pick) and never returns.
    pub fn exit_current(&mut self, cpu: usize) {
        let s = self.current_mut(cpu);
        assert!(!s.info.idle, "an idle task cannot exit");
        s.info.state = TaskState::Exited;
    }

    /// A sleeper woken (by [`wake`](Self::wake) or [`tick`](Self::tick)) joins the run
    /// queue; this wake-up is the one it waited for, so no token is left.
    fn make_ready(&mut self, i: usize) {
        self.slot_mut(i).wake_pending = false;
        self.enqueue(i);
    }

    /// Puts task `i` at the back of the run queue as `Ready`. Its wake token is kept: a
    /// task preempted between its condition check and its sleep may already have been
    /// woken (and dropped by the waker's queue); the token is all that remembers it.
    fn enqueue(&mut self, i: usize) {
        let s = self.slot_mut(i);
        s.info.state = TaskState::Ready;
        s.wake_at = None;
        self.ready.push(i as u16);
    }

    /// Wakes `id`: a sleeping task becomes `Ready` (returns true); a running or ready task
    /// keeps a wake token so its next [`block_current`](Self::block_current) does not sleep.
    pub fn wake(&mut self, id: TaskId) -> bool {
        let Some(i) = self.find(id) else { return false };
        match self.slot(i).info.state {
            TaskState::Sleeping => {
                self.make_ready(i);
                true
            }
            TaskState::Running | TaskState::Ready => {
                self.slot_mut(i).wake_pending = true;
                false
            }
            TaskState::Exited => false,
        }
    }

    /// Wakes the timed sleepers whose deadline is at or before `now_ns`; returns how many.
    pub fn tick(&mut self, now_ns: u64) -> usize {
        let mut n = 0;
        for i in 0..MAX_TASKS {
            let due = self.slots[i].as_ref().is_some_and(|s| {
                s.info.state == TaskState::Sleeping && s.wake_at.is_some_and(|t| t <= now_ns)
            });
            if due {
                self.make_ready(i);
                n += 1;
            }
        }
        n
    }

    fn allowed(&self, i: usize, cpu: usize) -> bool {
        self.slot(i).affinity.is_none_or(|c| c == cpu)
    }

    /// Is `cpu` running its idle task? (False for a CPU with no idle task yet.)
    pub fn runs_idle(&self, cpu: usize) -> bool {
        let (Some(Some(cur)), Some(Some(idle))) = (self.current.get(cpu), self.idle.get(cpu))
        else {
            return false;
        };
        cur == idle
    }

    /// The lowest-numbered CPU, other than `here` and those in the bit mask `skip`, that
    /// runs its idle task and may run task `id`.
    pub fn idle_cpu_for(&self, id: TaskId, here: usize, skip: u32) -> Option<usize> {
        let i = self.find(id)?;
        (0..MAX_CPUS)
            .find(|&c| c != here && skip & (1 << c) == 0 && self.runs_idle(c) && self.allowed(i, c))
    }

    /// Where to ask for a reschedule after a wake-up made `id` ready on CPU `here`; `skip`
    /// holds the CPUs already asked for other tasks of the same wake-up (see the module doc).
    pub fn wake_target(&self, id: TaskId, here: usize, skip: u32) -> WakeTarget {
        let here_fits = self.find(id).is_some_and(|i| self.allowed(i, here));
        if here_fits && self.runs_idle(here) {
            return WakeTarget::Here;
        }
        match self.idle_cpu_for(id, here, skip) {
            Some(c) => WakeTarget::Cpu(c),
            None => WakeTarget::Here,
        }
    }

    /// Is a task (other than the current one) ready to run on `cpu`?
    pub fn has_ready(&self, cpu: usize) -> bool {
        self.ready.iter().any(|&i| self.allowed(i as usize, cpu))
    }

    /// Chooses what `cpu` runs next. `None`: keep running the current task (it is still
    /// `Running` and nothing else is ready, or the CPU has no tasks yet). Otherwise the
    /// current task leaves `Running` (to the back of the queue if it was still running)
    /// and `next` is `Running` on `cpu`.
    pub fn pick(&mut self, cpu: usize) -> Option<Switch> {
        let prev = (*self.current.get(cpu)?)? as usize;
        let prev_running = self.slot(prev).info.state == TaskState::Running;
        let queued = self
            .ready
            .iter()
            .position(|&i| self.allowed(i as usize, cpu));
        let next = match queued {
            Some(pos) => self.ready.remove(pos) as usize,
            None if prev_running => return None,
            None => self.idle[cpu].expect("cpu has an idle task") as usize,
        };
        if prev_running {
            if self.slot(prev).info.idle {
                self.slot_mut(prev).info.state = TaskState::Ready;
            } else {
                self.enqueue(prev);
            }
        }
        let n = self.slot_mut(next);
        n.info.state = TaskState::Running;
        n.info.cpu = cpu;
        n.info.switches += 1;
        self.current[cpu] = Some(next as u16);
        Some(Switch {
            prev: self.slot(prev).info.id,
            next: self.slot(next).info.id,
        })
    }

    /// The switch away from `prev` is complete (its context is saved): an exited `prev`
    /// can now be reaped (returns true then).
    pub fn finish_switch(&mut self, prev: TaskId) -> bool {
        let Some(i) = self.find(prev) else {
            return false;
        };
        let s = self.slot_mut(i);
        s.dead |= s.info.state == TaskState::Exited;
        s.dead
    }

    /// Takes the payload of one exited task that no CPU uses any more (to free it).
    pub fn reap(&mut self) -> Option<P> {
        self.slots
            .iter_mut()
            .flatten()
            .find(|s| s.dead && s.payload.is_some())
            .and_then(|s| s.payload.take())
    }

    /// Every task, in slot order.
    pub fn tasks(&self) -> impl Iterator<Item = TaskInfo> + '_ {
        self.slots.iter().flatten().map(|s| s.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(s: &Sched<u32>, id: TaskId) -> TaskState {
        s.info(id).unwrap().state
    }

    fn two_cpus() -> (Sched<u32>, TaskId, TaskId) {
        let mut s = Sched::new();
        let i0 = s.add_idle(0, "idle", 0).unwrap();
        let i1 = s.add_idle(1, "idle", 1).unwrap();
        assert_eq!(s.add_idle(1, "idle", 1), Err((SchedError::IdleExists, 1)));
        (s, i0, i1)
    }

    /// [`two_cpus`] with task "a" (payload `payload`) spawned and running on cpu 0: the
    /// scheduler, cpu 0's idle task and a.
    fn a_running_on_cpu0(payload: u32) -> (Sched<u32>, TaskId, TaskId) {
        let (mut s, i0, _) = two_cpus();
        let a = s.spawn("a", None, payload).unwrap();
        assert_eq!(s.pick(0).map(|w| w.next), Some(a));
        (s, i0, a)
    }

    #[test]
    fn round_robin_and_idle() {
        let (mut s, i0, _) = two_cpus();
        assert_eq!(s.pick(0), None, "idle keeps running with nothing ready");
        let a = s.spawn("a", None, 10).unwrap();
        let b = s.spawn("b", None, 11).unwrap();
        assert_eq!(s.pick(0), Some(Switch { prev: i0, next: a }));
        assert_eq!(state(&s, i0), TaskState::Ready);
        assert_eq!(s.pick(0), Some(Switch { prev: a, next: b }));
        assert_eq!(s.pick(0), Some(Switch { prev: b, next: a }));
        assert_eq!(state(&s, b), TaskState::Ready);
        assert_eq!(s.current(0), Some(a));
        assert_eq!(s.info(a).unwrap().switches, 2);
        // b runs on cpu 1 meanwhile; cpu 0 keeps a.
        let sw = s.pick(1).unwrap();
        assert_eq!(sw.next, b);
        assert_eq!(s.info(b).unwrap().cpu, 1);
        assert_eq!(s.pick(0), None);
        // a sleeps: cpu 0 falls back to its idle task.
        s.prepare_wait(0);
        assert!(s.block_current(0));
        assert_eq!(s.pick(0), Some(Switch { prev: a, next: i0 }));
        assert_eq!(state(&s, a), TaskState::Sleeping);
        assert!(s.wake(a));
        assert!(s.has_ready(0));
        assert_eq!(s.pick(0).unwrap().next, a);
    }

    #[test]
    fn affinity() {
        let (mut s, _, i1) = two_cpus();
        let pinned = s.spawn("pinned", Some(1), 0).unwrap();
        let any = s.spawn("any", None, 0).unwrap();
        assert!(!s.has_ready(0) || s.ready.len() == 2);
        assert_eq!(s.pick(0).unwrap().next, any, "cpu 0 skips the pinned task");
        assert_eq!(
            s.pick(1),
            Some(Switch {
                prev: i1,
                next: pinned
            })
        );
        assert_eq!(
            s.spawn("bad", Some(MAX_CPUS), 7),
            Err((SchedError::BadCpu, 7))
        );
    }

    #[test]
    fn wake_before_sleep_is_not_lost() {
        let (mut s, _, a) = a_running_on_cpu0(0);
        s.prepare_wait(0);
        // The waker runs between the condition check and the sleep.
        assert!(!s.wake(a));
        assert!(!s.block_current(0), "the pending wake-up cancels the sleep");
        assert_eq!(state(&s, a), TaskState::Running);
        // A stale token from before prepare_wait does not cancel the next sleep.
        s.wake(a);
        s.prepare_wait(0);
        assert!(s.block_current(0));
        assert_eq!(state(&s, a), TaskState::Sleeping);
        // A preempted (ready) task keeps its token too.
        let b = s.spawn("b", None, 0).unwrap();
        s.pick(0); // a sleeping -> b
        s.wake(a);
        let c = s.spawn("c", None, 0).unwrap();
        s.prepare_wait(0);
        s.pick(0); // b preempted while preparing to wait
        assert!(!s.wake(b));
        assert_eq!(s.current(0), Some(a));
        s.pick(0);
        assert_eq!(s.current(0), Some(c));
        s.pick(0);
        assert_eq!(s.current(0), Some(b));
        assert!(!s.block_current(0));
    }

    /// The wake-up arrives while the waiter still runs (between its condition check and the
    /// sleep), then the tick preempts it before it reaches `block_current`: being put back
    /// on the run queue must not eat the token (the waker has already dropped the waiter
    /// from its queue, so nobody would wake it again).
    #[test]
    fn wake_then_preempt_before_sleep_is_not_lost() {
        let (mut s, _, a) = a_running_on_cpu0(0);
        s.prepare_wait(0);
        assert!(!s.wake(a), "a is running: only a token");
        let b = s.spawn("b", None, 0).unwrap();
        assert_eq!(s.pick(0).map(|w| w.next), Some(b), "a preempted");
        assert_eq!(state(&s, a), TaskState::Ready);
        assert_eq!(s.pick(0).map(|w| w.next), Some(a));
        assert!(!s.block_current(0), "the token survived the preemption");
        assert_eq!(state(&s, a), TaskState::Running);
    }

    #[test]
    fn wake_targets_an_idle_cpu() {
        let (mut s, _, _) = two_cpus();
        let worker = s.spawn("worker", None, 0).unwrap();
        let shell = s.spawn("shell", None, 0).unwrap();
        let pinned0 = s.spawn("pinned0", Some(0), 0).unwrap();
        // Both CPUs idle: the waking CPU takes the task itself.
        assert!(s.runs_idle(0) && s.runs_idle(1));
        assert_eq!(s.wake_target(shell, 0, 0), WakeTarget::Here);
        assert_eq!(s.idle_cpu_for(shell, 0, 0), Some(1));
        assert_eq!(
            s.idle_cpu_for(shell, 0, 1 << 1),
            None,
            "cpu 1 already asked"
        );
        assert_eq!(s.idle_cpu_for(pinned0, 0, 0), None, "pinned to the waker");
        // The worker runs on cpu 0: a wake-up there goes to idle cpu 1.
        assert_eq!(s.pick(0).unwrap().next, worker);
        assert!(!s.runs_idle(0));
        assert_eq!(s.wake_target(shell, 0, 0), WakeTarget::Cpu(1));
        assert_eq!(s.wake_target(shell, 0, 1 << 1), WakeTarget::Here);
        assert_eq!(s.wake_target(pinned0, 0, 0), WakeTarget::Here);
        // A task pinned to cpu 0, woken on busy cpu 1 while cpu 0 idles, goes to cpu 0.
        assert_eq!(s.pick(1).unwrap().next, shell);
        s.prepare_wait(0);
        assert!(s.block_current(0));
        s.pick(0); // the worker sleeps: cpu 0 idles (pinned0 is still queued)
        assert_eq!(s.current(0), Some(pinned0));
        s.exit_current(0);
        s.pick(0);
        assert!(s.runs_idle(0));
        let late = s.spawn("late", Some(0), 0).unwrap();
        assert_eq!(s.wake_target(late, 1, 0), WakeTarget::Cpu(0));
        // No allowed CPU idles: preempt on the waker.
        assert_eq!(s.pick(0).unwrap().next, late);
        assert_eq!(s.wake_target(worker, 0, 0), WakeTarget::Here);
        assert_eq!(s.wake_target(worker, 1, 0), WakeTarget::Here);
        assert_eq!(s.idle_cpu_for(TaskId(999), 0, 0), None, "unknown task");
    }

    #[test]
    fn timed_sleep() {
        let (mut s, i0, a) = a_running_on_cpu0(0);
        s.sleep_current_until(0, 1000);
        assert_eq!(s.pick(0).unwrap().next, i0);
        assert_eq!(s.tick(999), 0);
        assert_eq!(state(&s, a), TaskState::Sleeping);
        assert_eq!(s.tick(1000), 1);
        assert_eq!(state(&s, a), TaskState::Ready);
        assert_eq!(s.tick(5000), 0, "woken once");
    }

    #[test]
    fn exit_reap_and_slot_reuse() {
        let (mut s, i0, a) = a_running_on_cpu0(42);
        s.exit_current(0);
        let sw = s.pick(0).unwrap();
        assert_eq!(sw, Switch { prev: a, next: i0 });
        assert_eq!(
            s.reap(),
            None,
            "still on its stack until the switch is done"
        );
        assert!(s.finish_switch(sw.prev));
        assert_eq!(s.reap(), Some(42));
        assert_eq!(s.reap(), None);
        assert_eq!(state(&s, a), TaskState::Exited, "kept for ps");
        assert!(!s.wake(a));
        // Fill the table: the exited record's slot is reused last.
        let mut n = 0;
        while s.spawn("t", None, 0).is_ok() {
            n += 1;
        }
        assert_eq!(n, MAX_TASKS - 2, "2 idle tasks; the exited slot was reused");
        assert!(s.info(a).is_none());
        assert_eq!(
            s.spawn("t", None, 5),
            Err((SchedError::Full, 5)),
            "the payload comes back"
        );
        let ids: Vec<_> = s.tasks().map(|t| t.id).collect();
        assert_eq!(ids.len(), MAX_TASKS);
    }

    /// Where a waiter is in `WaitQueue::wait_until` (kernel/task.rs), one step at a time.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Phase {
        /// Running its body; its next step starts a wait.
        Body,
        /// `prepare_wait` done; next: join the wait queue.
        Prepared,
        /// On the queue; next: check the condition.
        Registered,
        /// The condition was false; next: `block_current` (and switch away if it sleeps).
        Checked,
        /// Asleep in `block_current`; resumes by re-checking from `Prepared`.
        Asleep,
    }

    #[derive(Debug, Clone)]
    enum WaitOp {
        /// The task running on this CPU takes its next step.
        Step(usize),
        /// Make task i's condition true and wake the queue (as an IRQ handler would).
        Wake(usize),
        /// Timer tick preemption on this CPU.
        Preempt(usize),
    }

    fn wait_op() -> impl proptest::strategy::Strategy<Value = WaitOp> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..2usize).prop_map(WaitOp::Step),
            1 => (0..3usize).prop_map(WaitOp::Wake),
            2 => (0..2usize).prop_map(WaitOp::Preempt),
        ]
    }

    proptest::proptest! {
        /// Three tasks on two CPUs wait for their own flag through one wait queue, with the
        /// exact protocol of `WaitQueue::wait_until`, while wakers and preemption interleave
        /// arbitrarily. Invariant: no task sleeps while its flag is set and it is off the
        /// queue (nobody would ever wake it: a lost wake-up).
        #[test]
        fn prop_no_lost_wakeups(ops in proptest::collection::vec(wait_op(), 1..200)) {
            let (mut s, _, _) = two_cpus();
            let ids: Vec<TaskId> = (0..3).map(|_| s.spawn("w", None, 0).unwrap()).collect();
            let idx = |id: TaskId| ids.iter().position(|&t| t == id);
            let mut phase = [Phase::Body; 3];
            let mut flag = [false; 3];
            let mut queue: Vec<usize> = Vec::new();
            for op in ops {
                match op {
                    WaitOp::Step(cpu) => {
                        let Some(t) = s.current(cpu).and_then(idx) else {
                            s.pick(cpu); // idle: look for work
                            continue;
                        };
                        phase[t] = match phase[t] {
                            Phase::Body | Phase::Asleep => {
                                s.prepare_wait(cpu);
                                Phase::Prepared
                            }
                            Phase::Prepared => {
                                if !queue.contains(&t) {
                                    queue.push(t);
                                }
                                Phase::Registered
                            }
                            Phase::Registered if flag[t] => {
                                flag[t] = false; // consumed; leave the queue
                                queue.retain(|&q| q != t);
                                Phase::Body
                            }
                            Phase::Registered => Phase::Checked,
                            Phase::Checked if s.block_current(cpu) => {
                                s.pick(cpu);
                                Phase::Asleep
                            }
                            Phase::Checked => Phase::Prepared, // woken meanwhile: re-check
                        };
                    }
                    WaitOp::Wake(t) => {
                        flag[t] = true;
                        for q in core::mem::take(&mut queue) {
                            s.wake(ids[q]);
                        }
                    }
                    WaitOp::Preempt(cpu) => {
                        s.pick(cpu);
                    }
                }
                for t in 0..3 {
                    let asleep = state(&s, ids[t]) == TaskState::Sleeping;
                    proptest::prop_assert!(
                        !(asleep && flag[t] && !queue.contains(&t)),
                        "task {t} sleeps with its wake-up lost"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "idle task cannot sleep")]
    fn idle_cannot_block() {
        let (mut s, _, _) = two_cpus();
        s.block_current(0);
    }
}
