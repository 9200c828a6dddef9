//! Host tests: the allocator, INTx routing with QEMU `virt`'s table, and enumeration and BAR
//! setup over a fake config space; `tests/bridges.rs` enumeration through bridges.

use super::bar_alloc::LIMIT_4GIB;
use super::*;
use crate::test_hal::TestHal;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use core::cell::RefCell;
use std::vec;

const GIB: u64 = 1 << 30;

fn window(space: Space, prefetchable: bool, pci_addr: u64, cpu_addr: u64, size: u64) -> Window {
    Window {
        space,
        prefetchable,
        pci_addr,
        cpu_addr,
        size,
    }
}

/// QEMU `virt` windows (as `tests/dt` reads them from the default machine's tree).
fn qemu_windows() -> Vec<Window> {
    vec![
        window(Space::Io, false, 0, 0x3eff_0000, 0x1_0000),
        window(Space::Mem32, false, 0x1000_0000, 0x1000_0000, 0x2eff_0000),
        window(
            Space::Mem64,
            false,
            0x80_0000_0000,
            0x80_0000_0000,
            0x80_0000_0000,
        ),
    ]
}

/// QEMU `virt` interrupt map: mask <0x1800 0 0 7>, slots 0-3 x INTA-INTD onto INTIDs 35-38.
fn qemu_irq_map() -> IrqMap {
    IrqMap {
        mask_hi: 0x1800,
        mask_pin: 7,
        entries: (0..4u32)
            .flat_map(|slot| {
                (1..=4u32).map(move |pin| IrqMapEntry {
                    child_hi: slot << 11,
                    pin,
                    intid: 35 + (slot + pin - 1) % 4,
                })
            })
            .collect(),
    }
}

fn req(size_bytes: u64, width: BarWidth, prefetchable: bool) -> BarRequest {
    BarRequest {
        size_bytes,
        width,
        prefetchable,
    }
}

/// The window a successful allocation went to.
fn window_of(a: &mut BarAllocator, r: BarRequest) -> usize {
    a.allocate(r).unwrap().window
}

// --- allocator ---------------------------------------------------------------------------------

#[test]
fn allocations_are_naturally_aligned_and_disjoint() {
    let mut a = BarAllocator::new(&qemu_windows());
    let sizes = [0x10, 0x1000, 0x4000, 0x10_0000, 0x2000, 0x100];
    let mut placed = Vec::new();
    for &size in &sizes {
        let got = a.allocate(req(size, BarWidth::Bits32, false)).unwrap();
        let span = size.max(MIN_BAR_ALLOC_BYTES);
        assert_eq!(
            got.pci_addr % span,
            0,
            "size {size:#x} at {:#x}",
            got.pci_addr
        );
        assert_eq!(got.window, 1);
        assert_eq!(got.cpu_addr, got.pci_addr);
        placed.push((got.pci_addr, got.pci_addr + span));
    }
    placed.sort();
    for pair in placed.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "{placed:x?}");
    }
    // The first one starts at the window base.
    assert!(placed.iter().any(|r| r.0 == 0x1000_0000));
}

#[test]
fn window_choice() {
    let mut a = BarAllocator::new(&qemu_windows());
    // 64-bit, prefetchable or not: MEM64.
    let p64 = a.allocate(req(0x4000, BarWidth::Bits64, true)).unwrap();
    assert_eq!((p64.window, p64.pci_addr), (2, 0x80_0000_0000));
    let n64 = a.allocate(req(0x4000, BarWidth::Bits64, false)).unwrap();
    assert_eq!((n64.window, n64.pci_addr), (2, 0x80_0000_4000));
    // 32-bit: MEM32.
    let m32 = a.allocate(req(0x1000, BarWidth::Bits32, false)).unwrap();
    assert_eq!((m32.window, m32.pci_addr), (1, 0x1000_0000));
    // Legacy below-1MiB BARs have nowhere to go on virt.
    assert_eq!(
        a.allocate(req(0x1000, BarWidth::Below1MiB, false)),
        Err(AllocError::OutOfSpace)
    );
}

#[test]
fn cpu_address_follows_window_offset() {
    let w = window(
        Space::Mem32,
        false,
        0x4000_0000,
        0x12_0000_0000,
        0x1000_0000,
    );
    let mut a = BarAllocator::new(&[w]);
    a.allocate(req(0x1000, BarWidth::Bits32, false)).unwrap();
    let got = a.allocate(req(0x10000, BarWidth::Bits32, false)).unwrap();
    assert_eq!(got.pci_addr, 0x4001_0000);
    assert_eq!(got.cpu_addr, 0x12_0001_0000);
    assert_eq!(a.pci_to_cpu(0x4001_0000, 0x10000), Some(0x12_0001_0000));
    assert_eq!(a.pci_to_cpu(0x4fff_f000, 0x2000), None);
}

#[test]
fn prefetchable_windows_only_for_prefetchable_bars() {
    let windows = [
        window(Space::Mem64, true, 0x100_0000_0000, 0x100_0000_0000, GIB),
        window(Space::Mem32, false, 0x1000_0000, 0x1000_0000, 0x100_0000),
    ];
    let mut a = BarAllocator::new(&windows);
    assert_eq!(window_of(&mut a, req(0x4000, BarWidth::Bits64, true)), 0);
    // A non-prefetchable 64-bit BAR falls back to MEM32.
    assert_eq!(window_of(&mut a, req(0x4000, BarWidth::Bits64, false)), 1);
}

#[test]
fn mem64_full_falls_back_to_mem32() {
    let mut windows = qemu_windows();
    windows[2].size = 0x8000;
    let mut a = BarAllocator::new(&windows);
    assert_eq!(window_of(&mut a, req(0x8000, BarWidth::Bits64, true)), 2);
    let second = a.allocate(req(0x8000, BarWidth::Bits64, true)).unwrap();
    assert_eq!((second.window, second.pci_addr), (1, 0x1000_0000));
    // No MEM64 at all: same.
    let mut a = BarAllocator::new(&windows[..2]);
    assert_eq!(window_of(&mut a, req(0x8000, BarWidth::Bits64, false)), 1);
}

#[test]
fn exhaustion_and_bad_sizes_are_errors() {
    let mut a = BarAllocator::new(&qemu_windows());
    // MEM32 is 0x1000_0000..0x3eff_0000: 256 MiB fits twice, then no aligned slot is left.
    for _ in 0..2 {
        a.allocate(req(0x1000_0000, BarWidth::Bits32, false))
            .unwrap();
    }
    assert_eq!(
        a.allocate(req(0x1000_0000, BarWidth::Bits32, false)),
        Err(AllocError::OutOfSpace)
    );
    // Bigger than every window.
    assert_eq!(
        a.allocate(req(1 << 40, BarWidth::Bits64, true)),
        Err(AllocError::OutOfSpace)
    );
    for size in [0, 3, 0x3000, u64::MAX] {
        assert_eq!(
            a.allocate(req(size, BarWidth::Bits64, false)),
            Err(AllocError::SizeNotPowerOfTwo)
        );
    }
    // Nothing 32-bit without MEM32.
    let mut only64 = BarAllocator::new(&qemu_windows()[2..]);
    assert_eq!(
        only64.allocate(req(0x1000, BarWidth::Bits32, false)),
        Err(AllocError::NoWindow)
    );
    // Nothing at all.
    let mut none = BarAllocator::new(&[]);
    assert_eq!(
        none.allocate(req(0x1000, BarWidth::Bits64, false)),
        Err(AllocError::NoWindow)
    );
}

#[test]
fn bars_32bit_never_above_4gib() {
    // An untrusted "MEM32" window that straddles 4 GiB.
    let w = window(Space::Mem32, false, 0xffff_0000, 0xffff_0000, 0x10_0000);
    let mut a = BarAllocator::new(&[w]);
    let mut n = 0;
    while let Ok(got) = a.allocate(req(0x1000, BarWidth::Bits32, false)) {
        assert!(got.pci_addr + 0x1000 <= LIMIT_4GIB, "{:#x}", got.pci_addr);
        n += 1;
    }
    assert_eq!(n, 16);
    // 64-bit BARs may use the rest of it.
    let got = a.allocate(req(0x1000, BarWidth::Bits64, false)).unwrap();
    assert_eq!(got.pci_addr, LIMIT_4GIB);
}

#[test]
fn invalid_windows_are_ignored() {
    let windows = [
        Window {
            space: Space::Mem64,
            prefetchable: false,
            pci_addr: u64::MAX - 0xfff,
            cpu_addr: 0,
            size: 0x10_0000,
        },
        window(Space::Mem32, false, 0x1000_0000, 0x1000_0000, 0),
    ];
    let mut a = BarAllocator::new(&windows);
    assert_eq!(
        a.allocate(req(0x1000, BarWidth::Bits64, false)),
        Err(AllocError::OutOfSpace)
    );
}

// --- INTx --------------------------------------------------------------------------------------

#[test]
fn route_intx_qemu_virt() {
    let map = qemu_irq_map();
    // virtio-mem at 00:01.0, INTA: SPI 4 = INTID 36.
    assert_eq!(route_intx(&map, 0, 1, 0, 1), Some(36));
    assert_eq!(route_intx(&map, 0, 0, 0, 1), Some(35));
    assert_eq!(route_intx(&map, 0, 3, 0, 4), Some(37));
    // Slots repeat every 4 (mask 0x1800 keeps device bits 1:0), functions and buses don't matter.
    for dev in 0..32u8 {
        for pin in 1..=4u8 {
            let want = 35 + (u32::from(dev % 4) + u32::from(pin) - 1) % 4;
            assert_eq!(route_intx(&map, 0, dev, 0, pin), Some(want));
            assert_eq!(route_intx(&map, 2, dev, 5, pin), Some(want));
        }
    }
    assert_eq!(route_intx(&map, 0, 1, 0, 0), None);
    assert_eq!(route_intx(&map, 0, 1, 0, 5), None);
    assert_eq!(route_intx(&IrqMap::default(), 0, 1, 0, 1), None);
}

// --- fake config space -------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct FakeFunction {
    regs: [u32; 64],
    /// Writable bits of BAR0..5; the rest read back as stored (type bits, zeros).
    bar_writable: [u32; 6],
    /// Bits of BAR0..5 that always read as one (a broken device).
    bar_stuck: [u32; 6],
    /// Registers (dword index) that ignore writes.
    frozen: Vec<usize>,
}

impl FakeFunction {
    fn new(vendor: u16, device: u16, class: u8, header: u8, pin: u8) -> Self {
        let mut regs = [0; 64];
        regs[0] = u32::from(device) << 16 | u32::from(vendor);
        regs[2] = u32::from(class) << 24;
        regs[3] = u32::from(header) << 16;
        regs[0x3c / 4] = u32::from(pin) << 8;
        Self {
            regs,
            bar_writable: [0; 6],
            bar_stuck: [0; 6],
            frozen: Vec::new(),
        }
    }

    fn command(&self) -> u16 {
        self.regs[1] as u16
    }
}

#[derive(Debug, Default)]
struct FakeState {
    functions: BTreeMap<(u8, u8, u8), FakeFunction>,
    /// BAR writes seen while memory or I/O decoding was on.
    bar_writes_while_decoding: usize,
    writes: usize,
}

/// Config space shared between the `PciRoot`, its clones and the test.
#[derive(Debug, Clone, Default)]
struct FakeCam(Rc<RefCell<FakeState>>);

fn key(df: DeviceFunction) -> (u8, u8, u8) {
    (df.bus, df.device, df.function)
}

// SAFETY: the fake keeps its whole state behind one `RefCell`; each access borrows it once.
unsafe impl WritableClone for FakeCam {
    fn write_u16(&mut self, df: DeviceFunction, reg: u8, value: u16) {
        let mut s = self.0.borrow_mut();
        s.writes += 1;
        if let Some(f) = s.functions.get_mut(&key(df)) {
            let i = usize::from(reg / 4);
            let shift = u32::from(reg & 2) * 8;
            f.regs[i] = (f.regs[i] & !(0xffff << shift)) | (u32::from(value) << shift);
        }
    }
}

impl ConfigurationAccess for FakeCam {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        assert_eq!(reg % 4, 0);
        let s = self.0.borrow();
        s.functions.get(&key(df)).map_or(u32::MAX, |f| {
            let stuck = match reg {
                0x10..=0x27 => f.bar_stuck[usize::from((reg - 0x10) / 4)],
                _ => 0,
            };
            f.regs[usize::from(reg / 4)] | stuck
        })
    }

    fn write_word(&mut self, df: DeviceFunction, reg: u8, data: u32) {
        assert_eq!(reg % 4, 0);
        let mut s = self.0.borrow_mut();
        s.writes += 1;
        let Some(f) = s.functions.get_mut(&key(df)) else {
            return;
        };
        let header = (f.regs[3] >> 16) as u8 & 0x7f;
        let nr_bars = if header == 1 { 2 } else { 6 };
        let decoding = f.command() & 0b11 != 0;
        let i = usize::from(reg / 4);
        if f.frozen.contains(&i) {
            return;
        }
        let mut bar_write = false;
        match reg {
            0x04 => f.regs[1] = (f.regs[1] & 0xffff_0000) | (data & 0xffff),
            0x10..=0x27 if usize::from((reg - 0x10) / 4) < nr_bars => {
                let w = f.bar_writable[usize::from((reg - 0x10) / 4)];
                f.regs[i] = (f.regs[i] & !w) | (data & w);
                bar_write = true;
            }
            0x3c => f.regs[i] = (f.regs[i] & !0xff) | (data & 0xff),
            // Bridge bus numbers and the like: store.
            _ if header == 1 => f.regs[i] = data,
            _ => {}
        }
        if bar_write && decoding {
            s.bar_writes_while_decoding += 1;
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        self.clone()
    }
}

pub(super) fn df(bus: u8, device: u8, function: u8) -> DeviceFunction {
    DeviceFunction {
        bus,
        device,
        function,
    }
}

/// A virtio-mem-pci like function: BAR1 32-bit 4 KiB, BAR4+5 64-bit prefetchable 16 KiB, INTA.
fn virtio_mem_like() -> FakeFunction {
    let mut f = FakeFunction::new(0x1af4, 0x1058, 0xff, 0, 1);
    f.regs[0x10 / 4 + 4] = 0b1100;
    f.bar_writable[1] = 0xffff_f000;
    f.bar_writable[4] = 0xffff_c000;
    f.bar_writable[5] = 0xffff_ffff;
    // Start with decoding on, to check that it is off while BARs move.
    f.regs[1] = 0x0010_0003;
    f
}

fn host_with(functions: Vec<((u8, u8, u8), FakeFunction)>) -> (PciHost<FakeCam>, FakeCam) {
    let cam = FakeCam::default();
    cam.0.borrow_mut().functions = functions.into_iter().collect();
    let host = PciHost::new(cam.clone(), 0, 255, &qemu_windows(), qemu_irq_map());
    (host, cam)
}

#[test]
fn enumerate_finds_functions_and_routes_intx() {
    let mut bridge = FakeFunction::new(0x1b36, 0x000c, 0x06, 0x01, 1);
    bridge.regs[6] = 0x0001_0100; // primary 0, secondary 1, subordinate 1
    let (mut host, _) = host_with(vec![
        ((0, 0, 0), FakeFunction::new(0x1b36, 0x0008, 0x06, 0, 0)),
        ((0, 1, 0), virtio_mem_like()),
        ((0, 2, 0), bridge),
    ]);
    let found = host.enumerate();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(found[0].intid, None);
    let vmem = &found[1];
    assert_eq!(vmem.df, df(0, 1, 0));
    assert_eq!((vmem.vendor_id, vmem.device_id), (0x1af4, 0x1058));
    assert_eq!(vmem.virtio, Some(DeviceType::Memory));
    assert_eq!(vmem.header_type, HeaderType::Standard);
    assert_eq!((vmem.interrupt_pin, vmem.intid), (1, Some(36)));
    assert_eq!(found[2].header_type, HeaderType::PciPciBridge);
    assert_eq!(found[2].intid, Some(37));
}

#[test]
fn setup_bars_programs_and_enables() {
    let (mut host, cam) = host_with(vec![((0, 1, 0), virtio_mem_like())]);
    let bars = host.setup_bars(df(0, 1, 0)).unwrap();
    assert_eq!(
        bars,
        vec![
            BarAssignment {
                bar: 1,
                width: BarWidth::Bits32,
                prefetchable: false,
                size_bytes: 0x1000,
                pci_addr: 0x1000_0000,
                cpu_addr: 0x1000_0000,
            },
            BarAssignment {
                bar: 4,
                width: BarWidth::Bits64,
                prefetchable: true,
                size_bytes: 0x4000,
                pci_addr: 0x80_0000_0000,
                cpu_addr: 0x80_0000_0000,
            },
        ]
    );
    let s = cam.0.borrow();
    let f = &s.functions[&(0, 1, 0)];
    assert_eq!(f.regs[0x10 / 4 + 1], 0x1000_0000);
    assert_eq!(f.regs[0x10 / 4 + 4], 0x0000_000c);
    assert_eq!(f.regs[0x10 / 4 + 5], 0x80);
    assert_eq!(f.regs[0x10 / 4], 0, "unimplemented BAR0 untouched");
    assert_eq!(
        f.command(),
        (Command::MEMORY_SPACE | Command::BUS_MASTER).bits()
    );
    assert_eq!(s.bar_writes_while_decoding, 0);
    drop(s);

    // Again: same answer, no new space taken, no config writes.
    let writes = cam.0.borrow().writes;
    assert_eq!(host.setup_bars(df(0, 1, 0)).unwrap(), bars);
    assert_eq!(cam.0.borrow().writes, writes);
}

#[test]
fn two_devices_get_disjoint_bars() {
    let (mut host, _) = host_with(vec![
        ((0, 1, 0), virtio_mem_like()),
        ((0, 2, 0), virtio_mem_like()),
    ]);
    let a = host.setup_bars(df(0, 1, 0)).unwrap();
    let b = host.setup_bars(df(0, 2, 0)).unwrap();
    assert_eq!(b[0].pci_addr, 0x1000_1000);
    assert_eq!(b[1].pci_addr, 0x80_0000_4000);
    assert_ne!(a, b);
}

#[test]
fn untrusted_config_space_gives_errors() {
    // Not a power of two: BAR0 reads back 0xfff0_1000 after writing all ones.
    let mut odd = FakeFunction::new(0x1234, 0x5678, 0x02, 0, 0);
    odd.bar_writable[0] = 0xfff0_1000;
    // 64-bit BAR of 1 TiB: bigger than any window.
    let mut huge = FakeFunction::new(0x1234, 0x5679, 0x02, 0, 0);
    huge.regs[0x10 / 4] = 0b0100;
    huge.bar_writable[0] = 0;
    huge.bar_writable[1] = 0xffff_ff00;
    // 64-bit BAR in the last slot.
    let mut last = FakeFunction::new(0x1234, 0x567a, 0x02, 0, 0);
    last.regs[0x10 / 4 + 5] = 0b0100;
    last.bar_writable[5] = 0xffff_f000;
    // Unknown header type.
    let cardbus = FakeFunction::new(0x1234, 0x567b, 0x06, 0x02, 0);
    // Interrupt pin 9.
    let badpin = FakeFunction::new(0x1234, 0x567c, 0x02, 0, 9);

    let (mut host, cam) = host_with(vec![
        ((0, 3, 0), odd),
        ((0, 4, 0), huge),
        ((0, 5, 0), last),
        ((0, 6, 0), cardbus),
        ((0, 7, 0), badpin),
    ]);
    assert_eq!(
        host.setup_bars(df(0, 3, 0)),
        Err(PciError::Bar {
            df: df(0, 3, 0),
            bar: 0,
            size: 0xf_f000,
            cause: AllocError::SizeNotPowerOfTwo
        })
    );
    assert_eq!(
        host.setup_bars(df(0, 4, 0)),
        Err(PciError::Bar {
            df: df(0, 4, 0),
            bar: 0,
            size: 1 << 40,
            cause: AllocError::OutOfSpace
        })
    );
    assert_eq!(
        host.setup_bars(df(0, 5, 0)),
        Err(PciError::InvalidBarType {
            df: df(0, 5, 0),
            bar: 5
        })
    );
    assert!(matches!(
        host.setup_bars(df(0, 6, 0)),
        Err(PciError::UnsupportedHeader { header: 2, .. })
    ));
    assert_eq!(
        host.setup_bars(df(0, 9, 0)),
        Err(PciError::NotPresent(df(0, 9, 0)))
    );
    // Decoding stays off on failure.
    assert_eq!(cam.0.borrow().functions[&(0, 4, 0)].command() & 0b11, 0);
    let found = host.enumerate();
    assert_eq!(found.len(), 5);
    assert_eq!(found[4].intid, None);
    // Failures gave their space back: a good device still starts at the window bases.
    cam.0
        .borrow_mut()
        .functions
        .insert((0, 1, 0), virtio_mem_like());
    let bars = host.setup_bars(df(0, 1, 0)).unwrap();
    assert_eq!(bars[0].pci_addr, 0x1000_0000);
    assert_eq!(bars[1].pci_addr, 0x80_0000_0000);
}

#[test]
fn bar_that_does_not_hold_its_address() {
    let mut f = virtio_mem_like();
    // BAR1 address bit 20 always reads as one.
    f.bar_stuck[1] = 1 << 20;
    let (mut host, _) = host_with(vec![((0, 1, 0), f)]);
    assert_eq!(
        host.setup_bars(df(0, 1, 0)),
        Err(PciError::BarReadback {
            df: df(0, 1, 0),
            bar: 1,
            wrote: 0x1000_0000,
            read: 0x1010_0000
        })
    );
}

#[test]
fn bridge_bars_only_two() {
    let mut bridge = FakeFunction::new(0x1b36, 0x000c, 0x06, 0x01, 1);
    bridge.bar_writable[0] = 0xffff_f000;
    bridge.regs[6] = 0x0001_0100;
    let (mut host, cam) = host_with(vec![((0, 2, 0), bridge)]);
    let bars = host.setup_bars(df(0, 2, 0)).unwrap();
    assert_eq!(bars.len(), 1);
    // Bus numbers (0x18) untouched by BAR sizing.
    assert_eq!(cam.0.borrow().functions[&(0, 2, 0)].regs[6], 0x0001_0100);
}

#[test]
fn virtio_transport_needs_bars() {
    // The Hal is never reached: `virtio_transport` fails before it maps anything.
    let (mut host, _) = host_with(vec![((0, 1, 0), virtio_mem_like())]);
    assert!(matches!(
        host.virtio_transport::<TestHal>(df(0, 1, 0)),
        Err(PciError::BarsNotAssigned(_))
    ));
    host.setup_bars(df(0, 1, 0)).unwrap();
    // No virtio capabilities in the fake: a transport error, not a panic.
    assert!(matches!(
        host.virtio_transport::<TestHal>(df(0, 1, 0)),
        Err(PciError::Transport(VirtioPciError::MissingCommonConfig))
    ));
}

#[test]
fn ecam_offsets_and_bounds() {
    let mut mem = vec![0u32; 3 * ECAM_BUS_BYTES / 4];
    mem[(ECAM_BUS_BYTES + (1 << 15)) / 4] = 0x1058_1af4;
    // SAFETY: `mem` is 3 MiB of ordinary memory standing in for ECAM, alive for the test.
    let ecam = unsafe { Ecam::new(mem.as_mut_ptr().cast(), mem.len() * 4, 4) }.unwrap();
    assert_eq!(ecam.read_word(df(5, 1, 0), 0), 0x1058_1af4);
    assert_eq!(ecam.read_word(df(4, 1, 0), 0), 0);
    assert_eq!(ecam.read_word(df(3, 0, 0), 0), u32::MAX, "below bus_start");
    assert_eq!(
        ecam.read_word(df(7, 0, 0), 0),
        u32::MAX,
        "beyond the mapping"
    );
    assert_eq!(ecam.read_word(df(4, 32, 0), 0), u32::MAX, "invalid device");
    // SAFETY: null is rejected before any access.
    assert!(unsafe { Ecam::new(core::ptr::null_mut(), 1 << 28, 0) }.is_err());
}

mod bridges;

mod slot;
