//! The fake virtio-mem device and its [`Transport`].
//!
//! [`FakeDevice`] is the device's state: config bytes with a generation counter, feature
//! bits, the status (with QEMU's FEATURES_OK refusal and device-owned NEEDS_RESET), the
//! queue registers and a script of [`Reply`]s. A notify makes it read every new
//! available entry straight from the driver's DMA memory (identity-mapped by
//! [`TestHal`]), check the descriptor chain's shape and padding, record the request as a
//! [`SeenReq`] and answer with the next scripted reply, at once or after some `wait`
//! calls ([`FakeDevice::tick`]). [`FakeTransport`] shares the state with the test through
//! an `Rc<RefCell<_>>`; [`probe_with`] and [`ready`] build both.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use virtio_drivers::PhysAddr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::*;

/// What the fake device answers to the next request.
#[derive(Clone, Copy, Debug)]
pub(super) enum Reply {
    /// Write this response type/state; complete on the `delay`-th wait call (0: at once).
    Resp { ty: u16, state: u16, delay: u32 },
    /// Do not answer; set DEVICE_NEEDS_RESET (QEMU's virtio_error).
    NeedsReset,
    /// Answer ACK but report only this many bytes written.
    Short(u32),
}

/// Answer with response type `ty` at once.
pub(super) fn resp(ty: u16) -> Reply {
    Reply::Resp {
        ty,
        state: 0,
        delay: 0,
    }
}

/// ACK on the `delay`-th wait call.
pub(super) fn ack_after(delay: u32) -> Reply {
    Reply::Resp {
        ty: 0,
        state: 0,
        delay,
    }
}

/// ACK to a STATE request, with this block state, at once.
pub(super) fn ack_state(state: u16) -> Reply {
    Reply::Resp {
        ty: 0,
        state,
        delay: 0,
    }
}

/// A request as the fake decoded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SeenReq {
    pub(super) ty: u16,
    pub(super) addr: u64,
    pub(super) nb_blocks: u16,
}

/// What the fake should have decoded from a request.
pub(super) fn seen(ty: u16, addr: u64, nb_blocks: u16) -> SeenReq {
    SeenReq {
        ty,
        addr,
        nb_blocks,
    }
}

#[derive(Default)]
pub(super) struct QueueRegs {
    pub(super) size: u32,
    pub(super) desc: u64,
    pub(super) driver: u64,
    pub(super) device: u64,
}

struct Pending {
    head: u16,
    resp_pa: u64,
    ty: u16,
    state: u16,
    len: u32,
    ticks_left: u32,
}

pub(super) struct FakeDevice {
    pub(super) device_type: DeviceType,
    pub(super) device_features: u64,
    pub(super) driver_features: u64,
    /// Refuse FEATURES_OK whatever the driver accepted.
    pub(super) refuse_features: bool,
    pub(super) status: DeviceStatus,
    pub(super) status_log: Vec<DeviceStatus>,
    pub(super) config: Vec<u8>,
    pub(super) generation: u32,
    /// After the next config read: write (offset, value) and bump the generation.
    pub(super) change_after_read: Option<(usize, u64)>,
    /// Bump the generation on every config read.
    pub(super) unstable: bool,
    pub(super) max_queue_size: u32,
    pub(super) queue: QueueRegs,
    pub(super) queue_unset_calls: u32,
    last_avail: u16,
    used_idx: u16,
    pub(super) isr: u32,
    pub(super) script: VecDeque<Reply>,
    pending: Option<Pending>,
    pub(super) seen: Vec<SeenReq>,
    pub(super) notifies: u32,
    pub(super) waits: u32,
}

pub(super) const UNPLUGGED_INACCESSIBLE: u64 = 1 << 1;
pub(super) const ACPI_PXM: u64 = 1 << 0;
pub(super) const VERSION_1: u64 = 1 << 32;
const EVENT_IDX: u64 = 1 << 29;
const INDIRECT_DESC: u64 = 1 << 28;
/// What QEMU 10 offers on arm virt, less RING_RESET (which the driver never accepts).
const QEMU_FEATURES: u64 =
    ACPI_PXM | UNPLUGGED_INACCESSIBLE | VERSION_1 | INDIRECT_DESC | EVENT_IDX;

/// The test's own config encoding (spec 5.15.4 layout).
fn config_bytes(c: &Config) -> Vec<u8> {
    let mut b = vec![0u8; 56];
    b[0..8].copy_from_slice(&c.block_size.to_le_bytes());
    b[8..10].copy_from_slice(&c.node_id.to_le_bytes());
    b[10..16].copy_from_slice(&[0xaa; 6]); // padding must be ignored
    b[16..24].copy_from_slice(&c.addr.to_le_bytes());
    b[24..32].copy_from_slice(&c.region_size.to_le_bytes());
    b[32..40].copy_from_slice(&c.usable_region_size.to_le_bytes());
    b[40..48].copy_from_slice(&c.plugged_size.to_le_bytes());
    b[48..56].copy_from_slice(&c.requested_size.to_le_bytes());
    b
}

/// Reads a `T` at a physical address of test DMA memory.
///
/// # Safety
/// `pa` must point into live memory allocated by `TestHal` (or a live buffer shared with it).
unsafe fn rd<T: Copy>(pa: u64) -> T {
    // SAFETY: the caller guarantees `pa` is a live allocation; unaligned reads are fine.
    unsafe { std::ptr::read_unaligned(pa as *const T) }
}

/// Writes a `T` at a physical address of test DMA memory.
///
/// # Safety
/// As for [`rd`], and nothing may hold a reference to that memory.
unsafe fn wr<T: Copy>(pa: u64, v: T) {
    // SAFETY: the caller guarantees `pa` is a live allocation; unaligned writes are fine.
    unsafe { std::ptr::write_unaligned(pa as *mut T, v) }
}

impl FakeDevice {
    fn new(config: &Config) -> Self {
        Self {
            device_type: DeviceType::Memory,
            device_features: QEMU_FEATURES,
            driver_features: 0,
            refuse_features: false,
            status: DeviceStatus::empty(),
            status_log: Vec::new(),
            config: config_bytes(config),
            generation: 0,
            change_after_read: None,
            unstable: false,
            max_queue_size: 128,
            queue: QueueRegs::default(),
            queue_unset_calls: 0,
            last_avail: 0,
            used_idx: 0,
            isr: 0,
            script: VecDeque::new(),
            pending: None,
            seen: Vec::new(),
            notifies: 0,
            waits: 0,
        }
    }

    pub(super) fn set_u64(&mut self, off: usize, v: u64) {
        self.config[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Like QEMU's validate_features: refuse if UNPLUGGED_INACCESSIBLE is offered but not taken.
    fn features_ok(&self) -> bool {
        !self.refuse_features
            && (self.device_features & UNPLUGGED_INACCESSIBLE == 0
                || self.driver_features & UNPLUGGED_INACCESSIBLE != 0)
    }

    /// Handles a notify: takes every new available entry.
    fn process(&mut self) {
        assert!(
            self.queue.size > 0 && self.queue.desc != 0,
            "notify without a queue"
        );
        let size = self.queue.size as u16;
        // SAFETY: the driver area is the live avail ring the driver's VirtQueue allocated.
        let avail_idx: u16 = unsafe { rd(self.queue.driver + 2) };
        while self.last_avail != avail_idx {
            let slot = u64::from(self.last_avail % size);
            // SAFETY: slot < size, inside the avail ring.
            let head: u16 = unsafe { rd(self.queue.driver + 4 + 2 * slot) };
            self.last_avail = self.last_avail.wrapping_add(1);
            assert!(head < size, "head descriptor out of range");
            let d0 = self.queue.desc + 16 * u64::from(head);
            // SAFETY: head < size, within the live descriptor table.
            let (a0, l0, f0, n0): (u64, u32, u16, u16) =
                unsafe { (rd(d0), rd(d0 + 8), rd(d0 + 12), rd(d0 + 14)) };
            assert!(n0 < size, "next descriptor out of range");
            assert_eq!(l0 as usize, 24, "request descriptor must be 24 bytes");
            assert_eq!(f0 & 2, 0, "request descriptor must be device-readable");
            assert_eq!(f0 & 1, 1, "request must chain to the response");
            let d1 = self.queue.desc + 16 * u64::from(n0);
            // SAFETY: n0 < size, within the descriptor table.
            let (a1, l1, f1): (u64, u32, u16) = unsafe { (rd(d1), rd(d1 + 8), rd(d1 + 12)) };
            assert_eq!(l1 as usize, 10, "response descriptor must be 10 bytes");
            assert_eq!(f1 & 3, 2, "response descriptor: device-writable, last");
            // SAFETY: a0 is the driver's 24-byte request buffer, alive until it pops the entry.
            let req: [u8; 24] = unsafe { rd(a0) };
            let le16 = |o: usize| u16::from(req[o]) | u16::from(req[o + 1]) << 8;
            let mut addr = 0u64;
            for i in (8..16).rev() {
                addr = addr << 8 | u64::from(req[i]);
            }
            assert!(req[2..8].iter().all(|&b| b == 0), "header padding not zero");
            assert!(
                req[18..24].iter().all(|&b| b == 0),
                "payload padding not zero"
            );
            self.seen.push(SeenReq {
                ty: le16(0),
                addr,
                nb_blocks: le16(16),
            });
            let reply = self.script.pop_front().expect("unscripted request");
            match reply {
                Reply::NeedsReset => {
                    self.status |= DeviceStatus::DEVICE_NEEDS_RESET;
                    self.isr |= 2;
                }
                Reply::Resp { ty, state, delay } => {
                    let p = Pending {
                        head,
                        resp_pa: a1,
                        ty,
                        state,
                        len: 10,
                        ticks_left: delay,
                    };
                    if delay == 0 {
                        self.complete(p);
                    } else {
                        self.pending = Some(p);
                    }
                }
                Reply::Short(len) => self.complete(Pending {
                    head,
                    resp_pa: a1,
                    ty: 0,
                    state: 0,
                    len,
                    ticks_left: 0,
                }),
            }
        }
    }

    fn complete(&mut self, p: Pending) {
        let q = &self.queue;
        let slot = u64::from(self.used_idx % q.size as u16);
        // SAFETY: resp_pa is the driver's live 10-byte response buffer; the used ring is the live
        // device area with `size` elements.
        unsafe {
            wr(p.resp_pa, p.ty.to_le_bytes());
            wr(p.resp_pa + 8, p.state.to_le_bytes());
            wr(q.device + 4 + 8 * slot, u32::from(p.head));
            wr(q.device + 8 + 8 * slot, p.len);
        }
        self.used_idx = self.used_idx.wrapping_add(1);
        // SAFETY: as above, the used ring's idx field.
        unsafe { wr(q.device + 2, self.used_idx) };
        self.isr |= 1;
    }

    /// One `wait` call from the driver: time passes for delayed responses.
    pub(super) fn tick(&mut self) {
        self.waits += 1;
        if let Some(p) = self.pending.as_mut() {
            p.ticks_left -= 1;
            if p.ticks_left == 0 {
                let p = self.pending.take().expect("pending");
                self.complete(p);
            }
        }
    }
}

#[derive(Clone)]
pub(super) struct FakeTransport(Rc<RefCell<FakeDevice>>);

impl Transport for FakeTransport {
    fn device_type(&self) -> DeviceType {
        self.0.borrow().device_type
    }
    fn read_device_features(&mut self) -> u64 {
        self.0.borrow().device_features
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.0.borrow_mut().driver_features = driver_features;
    }
    fn max_queue_size(&mut self, _queue: u16) -> u32 {
        self.0.borrow().max_queue_size
    }
    fn notify(&mut self, queue: u16) {
        assert_eq!(queue, 0);
        let mut d = self.0.borrow_mut();
        d.notifies += 1;
        d.process();
    }
    fn get_status(&self) -> DeviceStatus {
        self.0.borrow().status
    }
    fn set_status(&mut self, status: DeviceStatus) {
        let mut d = self.0.borrow_mut();
        d.status_log.push(status);
        let mut status = status;
        if status.is_empty() {
            d.queue = QueueRegs::default();
            d.last_avail = 0;
            d.used_idx = 0;
            d.pending = None;
        }
        if status.contains(DeviceStatus::FEATURES_OK) && !d.features_ok() {
            status.remove(DeviceStatus::FEATURES_OK);
        }
        // NEEDS_RESET is device-owned: keep it until reset.
        let needs_reset = d.status & DeviceStatus::DEVICE_NEEDS_RESET;
        d.status = if status.is_empty() {
            status
        } else {
            status | needs_reset
        };
    }
    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}
    fn requires_legacy_layout(&self) -> bool {
        false
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver: PhysAddr,
        device: PhysAddr,
    ) {
        assert_eq!(queue, 0);
        self.0.borrow_mut().queue = QueueRegs {
            size,
            desc: descriptors,
            driver,
            device,
        };
    }
    fn queue_unset(&mut self, _queue: u16) {
        let mut d = self.0.borrow_mut();
        d.queue_unset_calls += 1;
        d.queue = QueueRegs::default();
    }
    fn queue_used(&mut self, _queue: u16) -> bool {
        self.0.borrow().queue.desc != 0
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        let mut d = self.0.borrow_mut();
        InterruptStatus::from_bits_retain(core::mem::take(&mut d.isr))
    }
    fn read_config_generation(&self) -> u32 {
        self.0.borrow().generation
    }
    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> Result<T, virtio_drivers::Error> {
        // Emulate the PCI transport: at most 4-byte, naturally aligned accesses.
        assert!(size_of::<T>() <= 4, "config read wider than 4 bytes");
        assert_eq!(offset % size_of::<T>(), 0, "misaligned config read");
        let mut d = self.0.borrow_mut();
        let Some(bytes) = d.config.get(offset..offset + size_of::<T>()) else {
            return Err(virtio_drivers::Error::ConfigSpaceTooSmall);
        };
        let v = T::read_from_bytes(bytes).expect("size matches");
        if let Some((off, val)) = d.change_after_read.take() {
            d.set_u64(off, val);
            d.generation += 1;
        }
        if d.unstable {
            d.generation += 1;
        }
        Ok(v)
    }
    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        _offset: usize,
        _value: T,
    ) -> Result<(), virtio_drivers::Error> {
        panic!("the driver must not write virtio-mem config space");
    }
}

/// The fake device as the test sees it.
pub(super) type Dev = Rc<RefCell<FakeDevice>>;
/// The driver under test.
pub(super) type Driver = VirtioMem<TestHal, FakeTransport>;

/// A fake device with `config`, changed by `setup`, then probed with [`limits`].
pub(super) fn probe_with(
    config: &Config,
    setup: impl FnOnce(&mut FakeDevice),
) -> (Dev, Result<Driver, VirtioMemError>) {
    let dev = Rc::new(RefCell::new(FakeDevice::new(config)));
    setup(&mut dev.borrow_mut());
    let probed = VirtioMem::new(FakeTransport(dev.clone()), &limits());
    (dev, probed)
}

/// A driver probed successfully on [`qemu_config`].
pub(super) fn ready() -> (Dev, Driver) {
    let (dev, vm) = probe_with(&qemu_config(), |_| {});
    (dev, vm.expect("probe"))
}
