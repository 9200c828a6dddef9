//! The fakes the policy tests run against: [`TestMem`], the memory side over the real
//! model (no linear map), with a stand-in for migration; and [`FakeDevice`], a device that
//! behaves like QEMU's virtio-mem, plus scripted answers: refused requests (`script`: the
//! answer replaces the request, which is not done), requests done in part or in full under
//! another answer (`partial`), and a host that can back only so much (`capacity`: BUSY, as
//! QEMU's `prealloc=on` answers when it cannot allocate a request's range).
//!
//! Both record into one shared [`Trace`], so a test sees the order of device requests and
//! of the memory calls that change what is online.

use super::super::*;
use crate::mm::testing::FakeStore;
use crate::mm::{AllocFlags, MemRegion, Mm, NodeId, Pfn, PhysAddr, ZoneType};
use hotmem_drivers::virtio_mem::BlockState;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::GIB;

/// One thing the device or the memory side saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// A request and the device's answer.
    Req(Request, Response),
    /// A memory call that changed what is online: `add_online`, `offline` (when it
    /// succeeded), `reonline`, `remove`.
    Mem(&'static str, PhysRange),
}

/// The shared record of [`Event`]s.
pub(super) type Trace = Rc<RefCell<Vec<Event>>>;

/// Which blocks of a request a `partial` answer does (index within the request).
pub(super) type Blocks = fn(usize) -> bool;

/// The memory side for tests: the real model, no linear map.
pub(super) struct TestMem {
    pub(super) mm: Mm<FakeStore>,
    pub(super) adds: u32,
    pub(super) fail_adds: bool,
    /// Movable pages "mapped" by a fake workload; `offline` moves them (a stand-in for
    /// the migration engine) unless they are pinned.
    pub(super) held: Vec<Pfn>,
    pub(super) pinned: Vec<Pfn>,
    /// Every unit offlined, in order.
    pub(super) offlined: Vec<PhysRange>,
    /// Free bytes that must remain after an unplug (0: no floor).
    pub(super) floor: u64,
    /// Held pages that moved more than once in one [`HotplugMemory::offline_pass`].
    pub(super) moved_twice: u64,
    /// Per held page, its moves in the pass in progress.
    moves_in_pass: Vec<u32>,
    /// Shared with the device (see [`super::setup`]).
    pub(super) trace: Trace,
}

impl TestMem {
    pub(super) fn new(boot_bytes: u64) -> TestMem {
        let regions = [MemRegion {
            base: PhysAddr(0x4000_0000),
            size_bytes: boot_bytes,
            node: NodeId::ZERO,
        }];
        let mm = Mm::boot(&regions, &[], 40, FakeStore::default()).expect("boot");
        TestMem {
            mm,
            adds: 0,
            fail_adds: false,
            held: vec![],
            pinned: vec![],
            offlined: vec![],
            floor: 0,
            moved_twice: 0,
            moves_in_pass: vec![],
            trace: Trace::default(),
        }
    }
    fn record(&self, call: &'static str, range: PhysRange) {
        self.trace.borrow_mut().push(Event::Mem(call, range));
    }
    pub(super) fn movable_free_bytes(&self) -> u64 {
        self.mm
            .stats()
            .filter(|z| z.zone == Some(ZoneType::Movable))
            .map(|z| z.free_pages)
            .sum::<u64>()
            * 4096
    }
}

/// The pass's steps over the real model, with a stand-in for migration: a new page for
/// every held page inside, from wherever the allocator gives one.
impl PassSteps for TestMem {
    fn isolate(&mut self, range: PhysRange) -> Result<(), MemError> {
        let inside = |p: &Pfn| p.addr().0 >= range.base && p.addr().0 < range.end();
        if self.pinned.iter().any(inside) {
            return Err(MemError::Pinned);
        }
        self.mm.isolate_range(pfn_range(range)).map_err(mm_err)
    }
    fn migrate(&mut self, range: PhysRange) -> Result<u64, MemError> {
        let inside = |p: &Pfn| p.addr().0 >= range.base && p.addr().0 < range.end();
        let mut moved = 0;
        for i in 0..self.held.len() {
            if inside(&self.held[i]) {
                let new = self
                    .mm
                    .alloc_pages(0, AllocFlags::MOVABLE)
                    .map_err(|_| MemError::NoMemory)?;
                self.mm.free_pages(self.held[i], 0).unwrap();
                self.held[i] = new;
                moved += 1;
                if let Some(n) = self.moves_in_pass.get_mut(i) {
                    *n += 1;
                }
            }
        }
        Ok(moved)
    }
    fn offline(&mut self, range: PhysRange) -> Result<(), MemError> {
        self.mm.offline_range(pfn_range(range)).map_err(mm_err)?;
        self.offlined.push(range);
        self.record("offline", range);
        Ok(())
    }
    fn unisolate(&mut self, range: PhysRange) {
        let _ = self.mm.unisolate_range(pfn_range(range));
    }
}

impl HotplugMemory for TestMem {
    fn can_add(&mut self, range: PhysRange, _node: NodeId) -> bool {
        mm_can_add(&self.mm, range)
    }
    fn add_online(&mut self, range: PhysRange, node: NodeId) -> Result<(), MemError> {
        self.adds += 1;
        if self.fail_adds {
            return Err(MemError::NoMemory);
        }
        mm_add_online(&mut self.mm, range, node, ZoneType::Movable)?;
        self.record("add_online", range);
        Ok(())
    }
    fn offline(&mut self, range: PhysRange) -> Result<u64, MemError> {
        self.offline_pass(&[range]).remove(0)
    }
    fn offline_pass(&mut self, ranges: &[PhysRange]) -> Vec<Result<u64, MemError>> {
        let allowed = mm_floor_allows_prefix(&self.mm, ranges, self.floor);
        self.moves_in_pass = vec![0; self.held.len()];
        let out = offline_pass(self, ranges, allowed);
        self.moved_twice += self.moves_in_pass.iter().filter(|&&n| n > 1).count() as u64;
        out
    }
    fn reonline(&mut self, range: PhysRange) -> Result<(), MemError> {
        mm_reonline(&mut self.mm, range, ZoneType::Movable)?;
        self.record("reonline", range);
        Ok(())
    }
    fn remove(&mut self, range: PhysRange) -> Result<(), MemError> {
        mm_remove(&mut self.mm, range)?;
        self.record("remove", range);
        Ok(())
    }
    fn used_pages(&mut self, range: PhysRange) -> u64 {
        mm_used_pages(&self.mm, range)
    }
}

/// Behaves like QEMU's device (hw/virtio/virtio-mem.c), plus scripted answers.
pub(super) struct FakeDevice {
    pub(super) cfg: Config,
    pub(super) plugged: Vec<bool>,
    pub(super) script: VecDeque<Response>,
    pub(super) log: Vec<Request>,
    /// (after this many requests, set requested_size to this)
    pub(super) change_requested: Option<(usize, u64)>,
    /// Answer ERROR to PLUG while still doing it (a device lying about failure).
    pub(super) lie_on_plug: bool,
    /// For the next PLUGs and UNPLUGs (before `script`): do them for the blocks the
    /// function picks (by index in the request) and answer this.
    pub(super) partial: VecDeque<(Response, Blocks)>,
    /// Most bytes the host can back: a PLUG beyond it answers BUSY and plugs nothing.
    pub(super) capacity: Option<u64>,
    /// Added to the `plugged_size` the config reports (a device whose count is wrong).
    pub(super) plugged_size_error: u64,
    /// Shared with the memory side (see [`super::setup`]).
    pub(super) trace: Trace,
}

impl FakeDevice {
    pub(super) fn new(block_size: u64, region: u64) -> FakeDevice {
        let cfg = Config {
            block_size,
            node_id: 0,
            addr: 0x1_0000_0000,
            region_size: region,
            usable_region_size: 0,
            plugged_size: 0,
            requested_size: 0,
        };
        let mut d = FakeDevice {
            cfg,
            plugged: vec![false; (region / block_size) as usize],
            script: VecDeque::new(),
            log: vec![],
            change_requested: None,
            lie_on_plug: false,
            partial: VecDeque::new(),
            capacity: None,
            plugged_size_error: 0,
            trace: Trace::default(),
        };
        d.set_requested(0);
        d
    }
    pub(super) fn set_requested(&mut self, bytes: u64) {
        self.cfg.requested_size = bytes;
        // QEMU: usable = min(region, requested + 1 GiB) rounded up to blocks; never shrinks
        // except on UNPLUG_ALL or reset.
        let usable = (bytes + GIB)
            .min(self.cfg.region_size)
            .next_multiple_of(self.cfg.block_size);
        self.cfg.usable_region_size = self
            .cfg
            .usable_region_size
            .max(usable.min(self.cfg.region_size));
    }
    pub(super) fn blocks(&self, addr: u64, n: u16) -> Option<std::ops::Range<usize>> {
        let bs = self.cfg.block_size;
        if n == 0 || addr % bs != 0 || addr < self.cfg.addr {
            return None;
        }
        let first = ((addr - self.cfg.addr) / bs) as usize;
        let end = first + n as usize;
        (end as u64 * bs <= self.cfg.usable_region_size).then_some(first..end)
    }
    pub(super) fn plugged_bytes(&self) -> u64 {
        self.plugged.iter().filter(|&&p| p).count() as u64 * self.cfg.block_size
    }
}

impl Device for FakeDevice {
    type Error = ();
    fn config(&mut self) -> Result<Config, ()> {
        self.cfg.plugged_size = self.plugged_bytes() + self.plugged_size_error;
        Ok(self.cfg)
    }
    fn request(&mut self, req: Request) -> Result<Response, ()> {
        let resp = self.answer(req);
        self.trace.borrow_mut().push(Event::Req(req, resp));
        Ok(resp)
    }
}

impl FakeDevice {
    fn answer(&mut self, req: Request) -> Response {
        self.log.push(req);
        if let Some((after, bytes)) = self.change_requested {
            if self.log.len() > after {
                self.set_requested(bytes);
                self.change_requested = None;
            }
        }
        if let Request::Plug { addr, nb_blocks } | Request::Unplug { addr, nb_blocks } = req {
            if let Some((answer, pick)) = self.partial.pop_front() {
                let plug = matches!(req, Request::Plug { .. });
                if let Some(r) = self.blocks(addr, nb_blocks) {
                    for (i, b) in r.enumerate() {
                        if pick(i) {
                            self.plugged[b] = plug;
                        }
                    }
                }
                return answer;
            }
        }
        if let Some(r) = self.script.pop_front() {
            return r;
        }
        let bs = self.cfg.block_size;
        match req {
            Request::Plug { addr, nb_blocks } => match self.blocks(addr, nb_blocks) {
                None => Response::Error,
                Some(r) if self.plugged[r.clone()].iter().any(|&p| p) => Response::Error,
                Some(r) if self.plugged_bytes() + r.len() as u64 * bs > self.cfg.requested_size => {
                    Response::Nack
                }
                Some(r)
                    if self
                        .capacity
                        .is_some_and(|c| self.plugged_bytes() + r.len() as u64 * bs > c) =>
                {
                    Response::Busy
                }
                Some(r) => {
                    self.plugged[r].iter_mut().for_each(|p| *p = true);
                    if self.lie_on_plug {
                        Response::Error
                    } else {
                        Response::Ack
                    }
                }
            },
            Request::Unplug { addr, nb_blocks } => match self.blocks(addr, nb_blocks) {
                Some(r) if self.plugged[r.clone()].iter().all(|&p| p) => {
                    self.plugged[r].iter_mut().for_each(|p| *p = false);
                    Response::Ack
                }
                _ => Response::Error,
            },
            Request::UnplugAll => {
                self.plugged.iter_mut().for_each(|p| *p = false);
                self.cfg.usable_region_size = (self.cfg.requested_size + GIB)
                    .min(self.cfg.region_size)
                    .next_multiple_of(bs);
                Response::Ack
            }
            Request::State { addr, nb_blocks } => match self.blocks(addr, nb_blocks) {
                None => Response::Error,
                Some(r) => {
                    let n = self.plugged[r.clone()].iter().filter(|&&p| p).count();
                    Response::AckState(if n == 0 {
                        BlockState::Unplugged
                    } else if n == r.len() {
                        BlockState::Plugged
                    } else {
                        BlockState::Mixed
                    })
                }
            },
        }
    }
}

impl TestMem {
    /// Allocates `n` movable pages for the fake workload.
    pub(super) fn hold(&mut self, n: usize) {
        for _ in 0..n {
            let p = self.mm.alloc_pages(0, AllocFlags::MOVABLE).unwrap();
            self.held.push(p);
        }
    }
}
