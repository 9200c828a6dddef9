//! Host tests: pure encoding/validation, and the driver against a fake virtio-mem device.
//!
//! The fake device lives behind our own [`Transport`] (virtio-drivers' fake is private). It
//! keeps a config-space byte array, feature bits and the status, and serves the one queue by
//! reading descriptors from the memory [`TestHal`] allocated (identity: physical == virtual).
//! Requests are decoded with the test's own little-endian reads, not with `encode_request`.

use super::*;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::rc::Rc;
use virtio_drivers::{BufferDirection, PhysAddr, PAGE_SIZE};
use zerocopy::{FromBytes, Immutable, IntoBytes};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

// ---------------------------------------------------------------------------------------------
// Test HAL: DMA from the std allocator, physical address == virtual address.

struct TestHal;

fn dma_layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("valid DMA layout")
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned, exclusively owned memory from the global
// allocator; `share` returns the buffer's own address, which is where the fake device accesses it.
unsafe impl Hal for TestHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size (virtio-drivers never asks for 0 pages).
        let ptr = unsafe { alloc_zeroed(dma_layout(pages)) };
        let vaddr = NonNull::new(ptr).expect("test DMA allocation failed");
        (ptr as PhysAddr, vaddr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes back what `dma_alloc` returned, with the same page count.
        unsafe { dealloc(vaddr.as_ptr(), dma_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(_paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        unreachable!("the fake transport has no MMIO")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

// ---------------------------------------------------------------------------------------------
// Fake device.

/// What the fake device answers to the next request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// Write this response type/state; complete on the `delay`-th wait call (0: at once).
    Resp { ty: u16, state: u16, delay: u32 },
    /// Do not answer; set DEVICE_NEEDS_RESET (QEMU's virtio_error).
    NeedsReset,
    /// Answer ACK but report only this many bytes written.
    Short(u32),
}

fn resp(ty: u16) -> Reply {
    Reply::Resp {
        ty,
        state: 0,
        delay: 0,
    }
}

/// A request as the fake decoded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SeenReq {
    ty: u16,
    addr: u64,
    nb_blocks: u16,
}

#[derive(Default)]
struct QueueRegs {
    size: u32,
    desc: u64,
    driver: u64,
    device: u64,
}

struct Pending {
    head: u16,
    resp_pa: u64,
    ty: u16,
    state: u16,
    len: u32,
    ticks_left: u32,
}

struct FakeDevice {
    device_type: DeviceType,
    device_features: u64,
    driver_features: u64,
    /// Refuse FEATURES_OK whatever the driver accepted.
    refuse_features: bool,
    status: DeviceStatus,
    status_log: Vec<DeviceStatus>,
    config: Vec<u8>,
    generation: u32,
    /// After the next config read: write (offset, value) and bump the generation.
    change_after_read: Option<(usize, u64)>,
    /// Bump the generation on every config read.
    unstable: bool,
    max_queue_size: u32,
    queue: QueueRegs,
    queue_unset_calls: u32,
    last_avail: u16,
    used_idx: u16,
    isr: u32,
    script: VecDeque<Reply>,
    pending: Option<Pending>,
    seen: Vec<SeenReq>,
    notifies: u32,
    waits: u32,
}

const UNPLUGGED_INACCESSIBLE: u64 = 1 << 1;
const ACPI_PXM: u64 = 1 << 0;
const VERSION_1: u64 = 1 << 32;
const EVENT_IDX: u64 = 1 << 29;
const INDIRECT_DESC: u64 = 1 << 28;
/// What QEMU offers on arm virt (qemu-virt-facts.md).
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

/// QEMU's initial config from qemu-virt-facts.md, with 1 GiB requested.
fn qemu_config() -> Config {
    Config {
        block_size: 2 * MIB,
        node_id: 1,
        addr: 0x8000_0000,
        region_size: 4 * GIB,
        usable_region_size: 2 * GIB,
        plugged_size: 0,
        requested_size: GIB,
    }
}

/// RAM at 0x4000_0000 (1 GiB) and a device window below it.
const TAKEN: &[(u64, u64)] = &[(0x4000_0000, GIB), (0x0800_0000, 0x0100_0000)];

fn limits() -> Limits<'static> {
    Limits {
        pa_bits: 40,
        taken: TAKEN,
    }
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

    fn set_u64(&mut self, off: usize, v: u64) {
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
    fn tick(&mut self) {
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
struct FakeTransport(Rc<RefCell<FakeDevice>>);

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

fn fake(config: &Config) -> (Rc<RefCell<FakeDevice>>, FakeTransport) {
    let dev = Rc::new(RefCell::new(FakeDevice::new(config)));
    (dev.clone(), FakeTransport(dev))
}

fn probe(
    dev: &Rc<RefCell<FakeDevice>>,
) -> Result<VirtioMem<TestHal, FakeTransport>, VirtioMemError> {
    VirtioMem::new(FakeTransport(dev.clone()), &limits())
}

fn ready() -> (Rc<RefCell<FakeDevice>>, VirtioMem<TestHal, FakeTransport>) {
    let (dev, _) = fake(&qemu_config());
    let vm = probe(&dev).expect("probe");
    (dev, vm)
}

// ---------------------------------------------------------------------------------------------
// Pure encoding.

#[test]
fn encode_plug_byte_exact() {
    let b = encode_request(&Request::Plug {
        addr: 0x1_2345_6000_0000,
        nb_blocks: 0x0203,
    });
    #[rustfmt::skip]
    let want = [0, 0, 0, 0, 0, 0, 0, 0,
                0x00, 0x00, 0x00, 0x60, 0x45, 0x23, 0x01, 0x00,
                0x03, 0x02, 0, 0, 0, 0, 0, 0];
    assert_eq!(b, want);
}

#[test]
fn encode_unplug_byte_exact() {
    let b = encode_request(&Request::Unplug {
        addr: 0x8020_0000,
        nb_blocks: 1,
    });
    #[rustfmt::skip]
    let want = [1, 0, 0, 0, 0, 0, 0, 0,
                0x00, 0x00, 0x20, 0x80, 0, 0, 0, 0,
                1, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(b, want);
}

#[test]
fn encode_unplug_all_byte_exact() {
    let mut want = [0u8; 24];
    want[0] = 2;
    assert_eq!(encode_request(&Request::UnplugAll), want);
}

#[test]
fn encode_state_byte_exact() {
    let b = encode_request(&Request::State {
        addr: 0xffff_ffff_ffe0_0000,
        nb_blocks: 0xffff,
    });
    #[rustfmt::skip]
    let want = [3, 0, 0, 0, 0, 0, 0, 0,
                0x00, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0, 0, 0, 0, 0, 0];
    assert_eq!(b, want);
}

fn resp_bytes(ty: u16, state: u16) -> [u8; 10] {
    let mut b = [0x55u8; 10]; // padding is garbage on purpose
    b[0..2].copy_from_slice(&ty.to_le_bytes());
    b[8..10].copy_from_slice(&state.to_le_bytes());
    b
}

#[test]
fn decode_each_response_type() {
    let plug = Request::Plug {
        addr: 0,
        nb_blocks: 1,
    };
    let st = Request::State {
        addr: 0,
        nb_blocks: 1,
    };
    assert_eq!(decode_response(&plug, &resp_bytes(0, 7)), Ok(Response::Ack));
    assert_eq!(
        decode_response(&plug, &resp_bytes(1, 0)),
        Ok(Response::Nack)
    );
    assert_eq!(
        decode_response(&plug, &resp_bytes(2, 0)),
        Ok(Response::Busy)
    );
    assert_eq!(
        decode_response(&plug, &resp_bytes(3, 0)),
        Ok(Response::Error)
    );
    assert_eq!(
        decode_response(&st, &resp_bytes(0, 0)),
        Ok(Response::AckState(BlockState::Plugged))
    );
    assert_eq!(
        decode_response(&st, &resp_bytes(0, 1)),
        Ok(Response::AckState(BlockState::Unplugged))
    );
    assert_eq!(
        decode_response(&st, &resp_bytes(0, 2)),
        Ok(Response::AckState(BlockState::Mixed))
    );
    assert_eq!(decode_response(&st, &resp_bytes(3, 9)), Ok(Response::Error));
}

#[test]
fn decode_unknown_type_and_state() {
    let plug = Request::Plug {
        addr: 0,
        nb_blocks: 1,
    };
    let st = Request::State {
        addr: 0,
        nb_blocks: 1,
    };
    assert_eq!(
        decode_response(&plug, &resp_bytes(4, 0)),
        Err(VirtioMemError::BadResponse(4))
    );
    assert_eq!(
        decode_response(&st, &resp_bytes(0xffff, 0)),
        Err(VirtioMemError::BadResponse(0xffff))
    );
    assert_eq!(
        decode_response(&st, &resp_bytes(0, 3)),
        Err(VirtioMemError::BadState(3))
    );
}

#[test]
fn allowed_responses_follow_the_spec_table() {
    let plug = Request::Plug {
        addr: 0,
        nb_blocks: 1,
    };
    let unplug = Request::Unplug {
        addr: 0,
        nb_blocks: 1,
    };
    let st = Request::State {
        addr: 0,
        nb_blocks: 1,
    };
    assert!(Response::Nack.allowed_for(&plug));
    assert!(!Response::Nack.allowed_for(&unplug));
    assert!(!Response::Error.allowed_for(&Request::UnplugAll));
    assert!(Response::Busy.allowed_for(&Request::UnplugAll));
    assert!(!Response::Busy.allowed_for(&st));
    assert!(!Response::Ack.allowed_for(&st));
    assert!(Response::AckState(BlockState::Mixed).allowed_for(&st));
    assert!(!Response::AckState(BlockState::Mixed).allowed_for(&plug));
}

// ---------------------------------------------------------------------------------------------
// Validation.

fn check(c: Config) -> Result<Config, VirtioMemError> {
    validate(&c, &limits())
}

#[test]
fn validate_accepts_qemu_config_and_leftovers() {
    assert_eq!(check(qemu_config()), Ok(qemu_config()));
    // plugged > requested (leftovers after reboot) is work to do, not an error.
    let c = Config {
        plugged_size: 2 * GIB,
        requested_size: 0,
        ..qemu_config()
    };
    assert_eq!(check(c), Ok(c));
    // 1 MiB and 1 GiB blocks.
    assert!(check(Config {
        block_size: MIB,
        ..qemu_config()
    })
    .is_ok());
    assert!(check(Config {
        block_size: GIB,
        ..qemu_config()
    })
    .is_ok());
    // No limit at 64 bits: a region ending one block below 2^64 is fine. One ending exactly at
    // 2^64 has no representable end and is rejected (see validate_phys_limit_and_overflow).
    let top = Config {
        addr: u64::MAX - 4 * GIB - 2 * MIB + 1,
        ..qemu_config()
    };
    assert_eq!(
        validate(
            &top,
            &Limits {
                pa_bits: 64,
                taken: &[]
            }
        ),
        Ok(top)
    );
}

#[test]
fn validate_block_size() {
    let bad = |bs| {
        check(Config {
            block_size: bs,
            ..qemu_config()
        })
    };
    assert_eq!(bad(3 * MIB), Err(VirtioMemError::BadBlockSize(3 * MIB)));
    assert_eq!(bad(MIB / 2), Err(VirtioMemError::BadBlockSize(MIB / 2)));
    assert_eq!(bad(0), Err(VirtioMemError::BadBlockSize(0)));
    assert_eq!(bad(8 * GIB), Err(VirtioMemError::BadBlockSize(8 * GIB)));
}

#[test]
fn validate_empty_region() {
    let c = Config {
        region_size: 0,
        usable_region_size: 0,
        requested_size: 0,
        ..qemu_config()
    };
    assert_eq!(check(c), Err(VirtioMemError::EmptyRegion));
}

#[test]
fn validate_alignment() {
    let q = qemu_config();
    for c in [
        Config {
            addr: q.addr + MIB,
            ..q
        },
        Config {
            region_size: q.region_size - MIB,
            ..q
        },
        Config {
            usable_region_size: q.usable_region_size - MIB,
            ..q
        },
        Config {
            plugged_size: MIB,
            ..q
        },
        Config {
            requested_size: q.requested_size + MIB,
            ..q
        },
    ] {
        assert_eq!(check(c), Err(VirtioMemError::Unaligned), "{c:?}");
    }
}

#[test]
fn validate_phys_limit_and_overflow() {
    let q = qemu_config();
    // Ends exactly at 2^40: fine. One block beyond: not.
    let at_top = Config {
        addr: (1 << 40) - q.region_size,
        ..q
    };
    assert!(check(at_top).is_ok());
    let beyond = Config {
        addr: (1 << 40) - q.region_size + q.block_size,
        ..q
    };
    assert_eq!(check(beyond), Err(VirtioMemError::RegionBeyondPhysLimit));
    let overflow = Config {
        addr: u64::MAX - q.region_size + 1,
        ..q
    };
    let no_limit = Limits {
        pa_bits: 64,
        taken: &[],
    };
    assert_eq!(
        validate(&overflow, &no_limit),
        Err(VirtioMemError::RegionBeyondPhysLimit)
    );
}

#[test]
fn validate_overlaps() {
    let q = qemu_config();
    // RAM [1 GiB, 2 GiB): the region at 2 GiB only touches it.
    assert!(check(q).is_ok());
    let on_ram = Config {
        addr: 0x7fe0_0000,
        ..q
    };
    assert_eq!(
        check(on_ram),
        Err(VirtioMemError::RegionOverlaps(0x4000_0000, GIB))
    );
    // The device window [0x0800_0000, +16 MiB) inside the region.
    let on_dev = Config {
        addr: 0,
        region_size: 512 * MIB,
        usable_region_size: 0,
        requested_size: 0,
        ..q
    };
    assert_eq!(
        check(on_dev),
        Err(VirtioMemError::RegionOverlaps(0x0800_0000, 0x0100_0000))
    );
    // Zero-sized taken entries never overlap.
    let l = Limits {
        pa_bits: 48,
        taken: &[(0x9000_0000, 0)],
    };
    assert!(validate(&q, &l).is_ok());
}

#[test]
fn validate_sizes_bounds() {
    let q = qemu_config();
    let c = Config {
        usable_region_size: q.region_size + q.block_size,
        ..q
    };
    assert_eq!(check(c), Err(VirtioMemError::UsableTooLarge));
    let c = Config {
        plugged_size: q.usable_region_size + q.block_size,
        ..q
    };
    assert_eq!(check(c), Err(VirtioMemError::PluggedTooLarge));
    let c = Config {
        requested_size: q.usable_region_size + q.block_size,
        ..q
    };
    assert_eq!(check(c), Err(VirtioMemError::RequestedTooLarge));
}

// ---------------------------------------------------------------------------------------------
// Probe: feature negotiation and config.

#[test]
fn negotiation_accepts_unplugged_inaccessible() {
    let (dev, vm) = ready();
    let d = dev.borrow();
    assert_eq!(
        d.driver_features,
        ACPI_PXM | UNPLUGGED_INACCESSIBLE | VERSION_1
    );
    assert_eq!(
        d.status_log.first(),
        Some(&DeviceStatus::empty()),
        "starts with a reset"
    );
    assert_eq!(
        d.status,
        DeviceStatus::ACKNOWLEDGE
            | DeviceStatus::DRIVER
            | DeviceStatus::FEATURES_OK
            | DeviceStatus::DRIVER_OK
    );
    assert_eq!(d.queue.size as usize, QUEUE_SIZE);
    drop(d);
    assert!(vm.node_id_valid());
    assert_eq!(vm.config(), Ok(qemu_config()));
}

#[test]
fn features_ok_not_sticking_fails_probe() {
    let (dev, _) = fake(&qemu_config());
    dev.borrow_mut().refuse_features = true;
    assert_eq!(probe(&dev).err(), Some(VirtioMemError::FeaturesNotAccepted));
    let d = dev.borrow();
    assert_eq!(d.status, DeviceStatus::FAILED);
    assert_eq!(
        d.status_log[d.status_log.len() - 2],
        DeviceStatus::empty(),
        "reset before FAILED"
    );
}

#[test]
fn probe_requires_version_1_and_memory_type() {
    let (dev, _) = fake(&qemu_config());
    dev.borrow_mut().device_features = UNPLUGGED_INACCESSIBLE;
    assert_eq!(probe(&dev).err(), Some(VirtioMemError::Version1NotOffered));
    let (dev, _) = fake(&qemu_config());
    dev.borrow_mut().device_type = DeviceType::Block;
    assert_eq!(
        probe(&dev).err(),
        Some(VirtioMemError::WrongDeviceType(DeviceType::Block))
    );
    assert!(
        dev.borrow().status_log.is_empty(),
        "not our device: untouched"
    );
}

#[test]
fn without_acpi_pxm_node_id_is_ignored() {
    let (dev, _) = fake(&qemu_config());
    dev.borrow_mut().device_features = UNPLUGGED_INACCESSIBLE | VERSION_1;
    let vm = probe(&dev).expect("probe");
    assert!(!vm.node_id_valid());
    assert_eq!(vm.config().map(|c| c.node_id), Ok(0));
    assert_eq!(
        dev.borrow().driver_features,
        UNPLUGGED_INACCESSIBLE | VERSION_1
    );
}

#[test]
fn invalid_config_fails_probe_and_disables_device() {
    let (dev, _) = fake(&Config {
        block_size: 3 * MIB,
        ..qemu_config()
    });
    assert_eq!(
        probe(&dev).err(),
        Some(VirtioMemError::BadBlockSize(3 * MIB))
    );
    let d = dev.borrow();
    assert_eq!(d.status, DeviceStatus::FAILED);
    assert_eq!(
        d.queue.desc, 0,
        "the device no longer knows the freed queue"
    );
    assert!(!d
        .status_log
        .iter()
        .any(|s| s.contains(DeviceStatus::DRIVER_OK)));
}

#[test]
fn short_config_space_is_a_transport_error() {
    let (dev, _) = fake(&qemu_config());
    dev.borrow_mut().config.truncate(40);
    assert_eq!(
        probe(&dev).err(),
        Some(VirtioMemError::Transport(
            virtio_drivers::Error::ConfigSpaceTooSmall
        ))
    );
}

#[test]
fn queue_too_small_is_a_transport_error() {
    let (dev, _) = fake(&qemu_config());
    dev.borrow_mut().max_queue_size = 1;
    assert_eq!(
        probe(&dev).err(),
        Some(VirtioMemError::Transport(
            virtio_drivers::Error::InvalidParam
        ))
    );
}

#[test]
fn config_reread_sees_new_requested_size() {
    let (dev, vm) = ready();
    dev.borrow_mut().set_u64(48, 2 * GIB);
    assert_eq!(vm.config().map(|c| c.requested_size), Ok(2 * GIB));
}

#[test]
fn config_reread_retries_across_generation_change() {
    let (dev, vm) = ready();
    // The first read of the pass changes requested_size and bumps the generation.
    dev.borrow_mut().change_after_read = Some((48, 2 * GIB));
    let before = dev.borrow().generation;
    assert_eq!(vm.config().map(|c| c.requested_size), Ok(2 * GIB));
    assert_eq!(dev.borrow().generation, before + 1);
}

#[test]
fn config_generation_never_settling_is_an_error() {
    let (dev, vm) = ready();
    dev.borrow_mut().unstable = true;
    assert_eq!(vm.config(), Err(VirtioMemError::ConfigUnstable));
}

#[test]
fn config_reread_rejects_changed_region_and_bad_sizes() {
    let (dev, vm) = ready();
    dev.borrow_mut().set_u64(16, 0x1_0000_0000);
    assert_eq!(vm.config(), Err(VirtioMemError::ConfigChanged));
    dev.borrow_mut().set_u64(16, qemu_config().addr);
    dev.borrow_mut().set_u64(0, 4 * MIB);
    assert_eq!(vm.config(), Err(VirtioMemError::ConfigChanged));
    dev.borrow_mut().set_u64(0, 2 * MIB);
    dev.borrow_mut().set_u64(48, 3 * GIB); // requested > usable (2 GiB)
    assert_eq!(vm.config(), Err(VirtioMemError::RequestedTooLarge));
}

// ---------------------------------------------------------------------------------------------
// Requests over the fake queue.

fn send(
    dev: &Rc<RefCell<FakeDevice>>,
    vm: &mut VirtioMem<TestHal, FakeTransport>,
    req: Request,
    reply: Reply,
) -> Result<Response, VirtioMemError> {
    dev.borrow_mut().script.push_back(reply);
    let d = dev.clone();
    vm.request(req, &mut || d.borrow_mut().tick())
}

#[test]
fn each_response_type_over_the_queue() {
    let (dev, mut vm) = ready();
    let plug = Request::Plug {
        addr: 0x8000_0000,
        nb_blocks: 512,
    };
    assert_eq!(send(&dev, &mut vm, plug, resp(0)), Ok(Response::Ack));
    assert_eq!(send(&dev, &mut vm, plug, resp(1)), Ok(Response::Nack));
    assert_eq!(send(&dev, &mut vm, plug, resp(2)), Ok(Response::Busy));
    assert_eq!(send(&dev, &mut vm, plug, resp(3)), Ok(Response::Error));
    let unplug = Request::Unplug {
        addr: 0x8020_0000,
        nb_blocks: 3,
    };
    assert_eq!(send(&dev, &mut vm, unplug, resp(0)), Ok(Response::Ack));
    assert_eq!(
        send(&dev, &mut vm, Request::UnplugAll, resp(0)),
        Ok(Response::Ack)
    );
    let st = Request::State {
        addr: 0x8000_0000,
        nb_blocks: 2,
    };
    for (s, want) in [
        (0, BlockState::Plugged),
        (1, BlockState::Unplugged),
        (2, BlockState::Mixed),
    ] {
        let r = Reply::Resp {
            ty: 0,
            state: s,
            delay: 0,
        };
        assert_eq!(send(&dev, &mut vm, st, r), Ok(Response::AckState(want)));
    }
    assert_eq!(
        send(&dev, &mut vm, plug, resp(9)),
        Err(VirtioMemError::BadResponse(9))
    );
    let d = dev.borrow();
    assert_eq!(d.seen.len(), 10);
    assert_eq!(
        d.seen[0],
        SeenReq {
            ty: 0,
            addr: 0x8000_0000,
            nb_blocks: 512
        }
    );
    assert_eq!(
        d.seen[4],
        SeenReq {
            ty: 1,
            addr: 0x8020_0000,
            nb_blocks: 3
        }
    );
    assert_eq!(
        d.seen[5],
        SeenReq {
            ty: 2,
            addr: 0,
            nb_blocks: 0
        }
    );
    assert_eq!(
        d.seen[6],
        SeenReq {
            ty: 3,
            addr: 0x8000_0000,
            nb_blocks: 2
        }
    );
    assert_eq!(d.notifies, 10);
    assert_eq!(d.waits, 0, "no wait when the answer is immediate");
    assert!(
        !vm.is_broken(),
        "an unknown response type alone does not break the device"
    );
}

#[test]
fn late_response_calls_wait() {
    let (dev, mut vm) = ready();
    let reply = Reply::Resp {
        ty: 0,
        state: 0,
        delay: 2,
    };
    let plug = Request::Plug {
        addr: 0x8000_0000,
        nb_blocks: 1,
    };
    assert_eq!(send(&dev, &mut vm, plug, reply), Ok(Response::Ack));
    assert_eq!(dev.borrow().waits, 2);
    // The queue keeps working afterwards (descriptors were recycled).
    for _ in 0..5 {
        assert_eq!(send(&dev, &mut vm, plug, resp(0)), Ok(Response::Ack));
    }
}

#[test]
fn needs_reset_resets_and_breaks() {
    let (dev, mut vm) = ready();
    let plug = Request::Plug {
        addr: 0x8000_0000,
        nb_blocks: 1,
    };
    assert_eq!(
        send(&dev, &mut vm, plug, Reply::NeedsReset),
        Err(VirtioMemError::DeviceNeedsReset)
    );
    assert!(vm.is_broken());
    {
        let d = dev.borrow();
        assert_eq!(d.waits, 1);
        assert_eq!(d.status, DeviceStatus::FAILED);
        assert_eq!(d.queue.desc, 0);
    }
    assert_eq!(
        vm.request(plug, &mut || panic!("no wait")),
        Err(VirtioMemError::Broken)
    );
    assert_eq!(dev.borrow().seen.len(), 1, "nothing sent once broken");
}

#[test]
fn short_response_is_an_error() {
    let (dev, mut vm) = ready();
    let plug = Request::Plug {
        addr: 0x8000_0000,
        nb_blocks: 1,
    };
    assert_eq!(
        send(&dev, &mut vm, plug, Reply::Short(2)),
        Err(VirtioMemError::ShortResponse(2))
    );
    assert_eq!(send(&dev, &mut vm, plug, resp(0)), Ok(Response::Ack));
}

#[test]
fn ack_interrupt_bits() {
    let (dev, mut vm) = ready();
    for (isr, want) in [
        (0, (false, false)),
        (1, (false, true)),
        (2, (true, false)),
        (3, (true, true)),
    ] {
        dev.borrow_mut().isr = isr;
        assert_eq!(vm.ack_interrupt(), want, "isr {isr}");
        assert_eq!(dev.borrow().isr, 0, "reading the ISR clears it");
    }
}

#[test]
fn config_change_seen_during_request_is_reported_later() {
    let (dev, mut vm) = ready();
    dev.borrow_mut().isr = 2; // a resize arrived while we wait
    let reply = Reply::Resp {
        ty: 0,
        state: 0,
        delay: 1,
    };
    let plug = Request::Plug {
        addr: 0x8000_0000,
        nb_blocks: 1,
    };
    assert_eq!(send(&dev, &mut vm, plug, reply), Ok(Response::Ack));
    assert_eq!(vm.ack_interrupt(), (true, false));
    assert_eq!(vm.ack_interrupt(), (false, false));
}

#[test]
fn drop_unsets_queue_and_resets() {
    let (dev, vm) = ready();
    drop(vm);
    let d = dev.borrow();
    assert_eq!(d.queue_unset_calls, 1);
    assert_eq!(d.status, DeviceStatus::empty());
    assert_eq!(d.queue.desc, 0);
}
