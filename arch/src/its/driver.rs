//! The live ITS: one per system, behind one lock.
//!
//! Bring-up ([`init`], once, on the boot CPU after [`crate::gic::enable_lpis`]): the ITS is
//! disabled and quiescent; the command queue (one 4 KiB page, 128 commands) goes into
//! GITS_CBASER; each implemented GITS_BASER<n> of type Devices or Collections gets a flat
//! table: 4 KiB pages when the ITS takes them (else the size it reads back), entry size as
//! read, as many pages as the DeviceIDs the caller asks for (at most 256 pages; the IDs
//! that then fit are remembered and a larger DeviceID is refused); then the ITS is enabled
//! and collection 0 is mapped to the boot CPU's redistributor (`MAPC`, `SYNC`). Every LPI
//! therefore targets CPU 0.
//!
//! Devices ([`map_device`]): an ITT for a power-of-two number of events, `MAPD`. Events
//! ([`map_event`]): a fresh LPI INTID, its configuration byte enabled, `MAPTI`, `INV`,
//! `SYNC`. LPI INTIDs are handed out upwards from 8192 and never reused.
//!
//! Commands are written at GITS_CWRITER's offset, published by advancing it, and waited
//! for until GITS_CREADR reaches it (bounded: a stalled or dead ITS is an error, not a
//! hang). When a table or the queue reads back non-shareable, the GIC does not snoop the
//! caches: everything written to it is cleaned to memory first.
//!
//! Lock: `ITS` (an `IrqSpinLock`) guards the queue and the device list; callers are in
//! thread context (bring-up, probe), never the interrupt path.

use super::{
    baser_value, cbaser_value, itt_plan, shareability, table_plan, Baser, Command, GicMemory,
    ItsTyper, RdTarget, TableType, COMMAND_BYTES, FIRST_LPI, TRANSLATER_OFFSET,
};
use crate::cpu::IrqSpinLock;
use crate::mmio::Mmio;
use devices::DeviceList;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

register_structs! {
    /// ITS control frame (IHI 0069 12.19).
    pub ItsRegs {
        (0x000 => ctlr: ReadWrite<u32>),
        (0x004 => iidr: ReadOnly<u32>),
        (0x008 => typer: ReadOnly<u64>),
        (0x010 => _reserved0),
        (0x080 => cbaser: ReadWrite<u64>),
        (0x088 => cwriter: ReadWrite<u64>),
        (0x090 => creadr: ReadOnly<u64>),
        (0x098 => _reserved1),
        (0x100 => baser: [ReadWrite<u64>; 8]),
        (0x140 => @END),
    }
}

/// Why an ITS call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItsError {
    /// [`init`] has not run (or failed).
    NotInitialised,
    /// The ITS does not translate to physical LPIs.
    NoPhysicalLpis,
    /// The kernel allocator had no memory for a table.
    NoMemory,
    /// The ITS did not become quiescent, or stopped consuming commands.
    Timeout,
    /// GITS_CREADR.Stalled: a command was refused.
    Stalled,
    /// A DeviceID beyond what the device table holds.
    DeviceIdTooBig(u32),
    /// More events than the ITS's EventID bits.
    TooManyEvents(u32),
    /// The DeviceID was not mapped with [`map_device`], or the event is beyond its ITT.
    UnknownEvent(u32, u32),
    /// No LPI INTID left under the property table's limit.
    NoLpi,
    /// Every device slot is taken.
    TooManyDevices,
}

const CTLR_ENABLED: u32 = 1;
const CTLR_QUIESCENT: u32 = 1 << 31;
const CREADR_STALLED: u64 = 1;
/// Spin iterations before a command or the quiescent wait counts as lost.
const SPIN_LIMIT: u32 = 50_000_000;
const QUEUE_BYTES: usize = 4096;
/// The collection every LPI goes to.
const ICID: u16 = 0;

/// DeviceIDs mapped so far and their event counts, without a heap.
mod devices {
    /// Most devices the ITS maps.
    pub const MAX_DEVICES: usize = 64;

    /// (DeviceID, events) of every mapped device.
    pub struct DeviceList {
        ids: [(u32, u32); MAX_DEVICES],
        len: usize,
    }

    impl DeviceList {
        pub const fn new() -> Self {
            DeviceList {
                ids: [(0, 0); MAX_DEVICES],
                len: 0,
            }
        }
        pub fn events(&self, device_id: u32) -> Option<u32> {
            self.ids[..self.len]
                .iter()
                .find(|(d, _)| *d == device_id)
                .map(|&(_, e)| e)
        }
        pub fn insert(&mut self, device_id: u32, events: u32) -> bool {
            if let Some(slot) = self.ids[..self.len]
                .iter_mut()
                .find(|(d, _)| *d == device_id)
            {
                slot.1 = events;
                return true;
            }
            match self.ids.get_mut(self.len) {
                Some(slot) => {
                    *slot = (device_id, events);
                    self.len += 1;
                    true
                }
                None => false,
            }
        }
    }
}

struct Its {
    regs: Mmio<ItsRegs>,
    doorbell_pa: u64,
    typer: ItsTyper,
    target: RdTarget,
    queue_va: usize,
    /// Byte offset of the next command (GITS_CWRITER).
    write: usize,
    /// DeviceIDs below this fit the device table.
    device_ids: u64,
    /// The GIC does not snoop the caches: clean what it reads.
    clean: bool,
    devices: DeviceList,
    next_lpi: u32,
    lpi_end: u32,
}

// SAFETY: `Its` holds MMIO and table addresses that any CPU may use; the lock serialises.
unsafe impl Send for Its {}

static ITS: IrqSpinLock<Option<Its>> = IrqSpinLock::new(None).with_class(crate::lock_class!("its"));

/// What [`init`] set up, for the boot log.
#[derive(Debug, Clone, Copy)]
pub struct ItsInfo {
    /// GITS_TYPER decoded.
    pub typer: ItsTyper,
    /// DeviceIDs below this fit the device table.
    pub device_ids: u64,
    /// Whether the tables had to be cleaned to memory (non-shareable read back).
    pub clean: bool,
}

fn clean(on: bool, va: usize, bytes: usize) {
    if on {
        crate::cpu::clean_dcache_range(va as u64, bytes as u64);
    }
}

fn spin_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..SPIN_LIMIT {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Brings the ITS up (see the module doc). `device_ids` is how many DeviceIDs the device
/// table should hold (the host bridge's requester-ID range); LPIs from 8192 up to
/// [`crate::gic::lpi_limit`] may be handed out.
///
/// # Safety
/// `va` must be a live Device mapping of the ITS control frame at physical `pa` (the DT's
/// `reg`, 128 KiB), mapped forever and used by nothing else; call once, after
/// [`crate::gic::enable_lpis`] succeeded on the calling (boot) CPU.
pub unsafe fn init(
    va: usize,
    pa: u64,
    mem: &mut dyn GicMemory,
    device_ids: u64,
) -> Result<ItsInfo, ItsError> {
    // SAFETY: the caller's contract.
    let regs = unsafe { Mmio::<ItsRegs>::new(va) };
    let typer = ItsTyper::from(regs.typer.get());
    if !typer.physical {
        return Err(ItsError::NoPhysicalLpis);
    }
    regs.ctlr.set(regs.ctlr.get() & !CTLR_ENABLED);
    if !spin_until(|| regs.ctlr.get() & CTLR_QUIESCENT != 0) {
        return Err(ItsError::Timeout);
    }
    let (queue_pa, queue_va) = mem
        .alloc_zeroed(QUEUE_BYTES, QUEUE_BYTES)
        .ok_or(ItsError::NoMemory)?;
    regs.cbaser.set(cbaser_value(queue_pa, QUEUE_BYTES / 4096));
    let mut clean_tables = shareability(regs.cbaser.get()) == 0;
    regs.cwriter.set(0);

    let wanted = device_ids.min(1 << typer.device_id_bits);
    let mut covered = 0;
    for baser in regs.baser.iter() {
        let raw = baser.get();
        let info = Baser::from(raw);
        let ids = match info.kind {
            TableType::Devices => wanted,
            TableType::Collections => 1,
            _ => continue,
        };
        // Ask for 4 KiB pages; an ITS with fixed pages reads back its own size.
        baser.set(baser_value(raw, 0, 4096, 1) & !(1 << 63));
        let page_bytes = Baser::from(baser.get()).page_bytes;
        let (pages, fits) = table_plan(info.entry_bytes, page_bytes, ids);
        let bytes = pages * page_bytes;
        let (table_pa, table_va) = mem
            .alloc_zeroed(bytes, page_bytes)
            .ok_or(ItsError::NoMemory)?;
        clean(true, table_va, bytes);
        baser.set(baser_value(raw, table_pa, page_bytes, pages));
        clean_tables |= shareability(baser.get()) == 0;
        if info.kind == TableType::Devices {
            covered = fits.min(wanted);
        }
    }
    let (rd_pa, processor) = crate::gic::boot_redistributor().ok_or(ItsError::NotInitialised)?;
    let mut its = Its {
        regs,
        doorbell_pa: pa + TRANSLATER_OFFSET,
        typer,
        target: RdTarget::new(typer.pta, rd_pa, processor),
        queue_va,
        write: 0,
        device_ids: covered,
        clean: clean_tables,
        devices: DeviceList::new(),
        next_lpi: FIRST_LPI,
        lpi_end: crate::gic::lpi_limit(),
    };
    regs.ctlr.set(regs.ctlr.get() | CTLR_ENABLED);
    let target = its.target;
    its.run(&[
        Command::mapc(ICID, target),
        Command::invall(ICID),
        Command::sync(target),
    ])?;
    let info = ItsInfo {
        typer,
        device_ids: covered,
        clean: clean_tables,
    };
    *ITS.lock() = Some(its);
    Ok(info)
}

impl Its {
    /// Queues `cmds` and waits until the ITS consumed them.
    fn run(&mut self, cmds: &[Command]) -> Result<(), ItsError> {
        for c in cmds {
            let slot = (self.queue_va + self.write) as *mut u64;
            for (i, dw) in c.0.iter().enumerate() {
                // SAFETY: `slot` is a 32-byte command slot inside the queue page, which is
                // ours (`GicMemory` contract); the ITS reads it only after CWRITER moves.
                unsafe { slot.add(i).write_volatile(dw.to_le()) };
            }
            clean(self.clean, slot as usize, COMMAND_BYTES);
            self.write = (self.write + COMMAND_BYTES) % QUEUE_BYTES;
            // The command is in memory before the ITS is told.
            aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
            self.regs.cwriter.set(self.write as u64);
            let regs = self.regs;
            let want = self.write as u64;
            let mut stalled = false;
            let done = spin_until(|| {
                let r = regs.creadr.get();
                stalled = r & CREADR_STALLED != 0;
                stalled || r & 0xf_ffe0 == want
            });
            if stalled {
                return Err(ItsError::Stalled);
            }
            if !done {
                return Err(ItsError::Timeout);
            }
        }
        Ok(())
    }
}

/// The doorbell physical address (GITS_TRANSLATER) an MSI writes its EventID to.
pub fn doorbell() -> Result<u64, ItsError> {
    ITS.lock()
        .as_ref()
        .map(|i| i.doorbell_pa)
        .ok_or(ItsError::NotInitialised)
}

/// Maps `device_id` with an ITT for at least `events` events (`MAPD`). Mapping a
/// DeviceID again replaces its ITT (its events must be mapped again).
pub fn map_device(device_id: u32, events: u32, mem: &mut dyn GicMemory) -> Result<(), ItsError> {
    let mut g = ITS.lock();
    let its = g.as_mut().ok_or(ItsError::NotInitialised)?;
    if u64::from(device_id) >= its.device_ids {
        return Err(ItsError::DeviceIdTooBig(device_id));
    }
    let (bits, bytes) = itt_plan(events, its.typer.itt_entry_bytes, its.typer.event_id_bits)
        .ok_or(ItsError::TooManyEvents(events))?;
    // The ITT takes any 256-byte aligned memory; the allocator hands out pages anyway.
    let (itt_pa, itt_va) = mem.alloc_zeroed(bytes, 256).ok_or(ItsError::NoMemory)?;
    clean(true, itt_va, bytes);
    let target = its.target;
    if !its.devices.insert(device_id, 1 << bits) {
        return Err(ItsError::TooManyDevices);
    }
    its.run(&[
        Command::mapd(device_id, itt_pa, bits, true),
        Command::sync(target),
    ])
}

/// A fresh LPI for event `event_id` of `device_id`: enabled, mapped to collection 0
/// (CPU 0), its configuration re-read (`MAPTI`, `INV`, `SYNC`). Returns its INTID; the
/// caller registers a handler before the device may signal it.
pub fn map_event(device_id: u32, event_id: u32) -> Result<u32, ItsError> {
    let mut g = ITS.lock();
    let its = g.as_mut().ok_or(ItsError::NotInitialised)?;
    match its.devices.events(device_id) {
        Some(n) if event_id < n => {}
        _ => return Err(ItsError::UnknownEvent(device_id, event_id)),
    }
    if its.next_lpi >= its.lpi_end {
        return Err(ItsError::NoLpi);
    }
    let intid = its.next_lpi;
    its.next_lpi += 1;
    crate::gic::set_lpi_enabled(intid, true).map_err(|_| ItsError::NoLpi)?;
    let target = its.target;
    its.run(&[
        Command::mapti(device_id, event_id, intid, ICID),
        Command::inv(device_id, event_id),
        Command::sync(target),
    ])?;
    Ok(intid)
}
