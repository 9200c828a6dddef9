//! The policy's vocabulary: what it needs from the driver ([`Device`]) and from the memory
//! side ([`HotplugMemory`], [`PhysRange`], [`MemError`]), and what it reports to the kernel
//! glue ([`Next`] after each step; [`State`], [`Reason`] and [`Progress`] for `vmem`;
//! [`Resized`] for the log line). Plain data and traits, no state: the policy itself is
//! [`Vmem`](super::Vmem).

use crate::mm::{self, NodeId};
use alloc::vec::Vec;
use core::fmt;
use hotmem_arch::addr::PhysRange;
use hotmem_drivers::virtio_mem::{Config, Request, Response};

/// The driver as the policy sees it.
pub trait Device {
    /// A transport failure (the policy logs it and disables the device).
    type Error: fmt::Debug;
    /// Re-reads the configuration.
    fn config(&mut self) -> Result<Config, Self::Error>;
    /// Sends one request and waits for the response.
    fn request(&mut self, req: Request) -> Result<Response, Self::Error>;
}

/// Why the memory side refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// No memory for mem_maps or page tables, or no free page to migrate to.
    NoMemory,
    /// Some page in the range is in use and cannot move (not movable, or no migration).
    InUse,
    /// Some page in the range holds extra references (pinned, like in-flight DMA).
    Pinned,
    /// Taking the range would leave less free memory than the unplug floor.
    Floor,
    /// The memory model refused the call for another reason (its state does not allow it:
    /// a bug, or a range the policy and the model disagree about).
    Mm(mm::Error),
    /// A refusal outside the memory model (no model yet, an unmap that failed, a node id
    /// the model cannot hold); the text says what.
    Other(&'static str),
}

/// What plugging and unplugging need from the memory model and the linear map.
pub trait HotplugMemory {
    /// Whether the mem_maps of the sections `range` would add fit in free Normal memory
    /// while keeping a reserve. `node` is the node `range` would join; the model's
    /// implementation ([`mm_can_add`](super::mm_can_add)) does not use it: it counts the free Normal memory of
    /// all nodes together.
    fn can_add(&mut self, range: PhysRange, node: NodeId) -> bool;
    /// Adds `range` to `node` (sections, mem_map, linear map) and onlines it (into the
    /// Movable zone unless the implementation is configured for Normal). On error nothing
    /// of `range` is left added.
    fn add_online(&mut self, range: PhysRange, node: NodeId) -> Result<(), MemError>;
    /// Takes `range` offline: isolate it, move what can move out of it, and offline it once
    /// every page is free. On error the range is left online as it was (pages already moved
    /// stay moved). Returns the number of pages it moved.
    fn offline(&mut self, range: PhysRange) -> Result<u64, MemError>;
    /// Takes the units `ranges` offline in one pass: the unplug floor is checked for them
    /// together (the units beyond the longest prefix it allows fail with
    /// [`MemError::Floor`]), every unit is isolated before any page moves (so no page moves
    /// into a unit of the pass), then each unit's pages move out and it goes offline. Per
    /// range, in order: the pages moved, or why it stays online as it was.
    fn offline_pass(&mut self, ranges: &[PhysRange]) -> Vec<Result<u64, MemError>>;
    /// Pages of `range` that are allocated (victim choice: fewest first).
    fn used_pages(&mut self, range: PhysRange) -> u64;
    /// Undoes [`HotplugMemory::offline`].
    fn reonline(&mut self, range: PhysRange) -> Result<(), MemError>;
    /// Takes the offline `range` down: removes it from the model and unmaps it from the
    /// linear map (before the device is asked to unplug it).
    fn remove(&mut self, range: PhysRange) -> Result<(), MemError>;
}

/// Device state as the shell shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Converged, or converging without trouble.
    Ok,
    /// The device answered BUSY (or NACK too often): backing off.
    Busy,
    /// The memory side or the device refused (a PLUG of a single unit answered BUSY: the
    /// host backs no more): backing off, the reason says why.
    Stalled,
    /// Disabled for good (a transport error, a device that contradicts itself, or one the
    /// kernel cannot drive).
    Broken,
}

impl State {
    /// The name `vmem` prints (`state=`).
    pub fn name(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Busy => "busy",
            State::Stalled => "stalled",
            State::Broken => "broken",
        }
    }
}

/// Why the device is not where it was asked to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Nothing in the way.
    None,
    /// The device answered BUSY, or kept answering NACK.
    DeviceBusy,
    /// No free memory for new mem_maps, or for the pages an unplug must move.
    NoMemory,
    /// Memory to unplug is in use and cannot move.
    Unmovable,
    /// Memory to unplug holds pinned pages.
    Pinned,
    /// Unplugging more would leave less free memory than the floor.
    Floor,
    /// The requested size is not a multiple of the plug unit.
    Granularity,
    /// The device contradicts itself or its configuration is invalid.
    DeviceError,
    /// The device region's address or size is not a multiple of the plug unit
    /// (max(block, 2 MiB)). Found at probe; the device stays broken.
    UnalignedRegion,
    /// The device's node id is not one the memory model holds (`>= MAX_NODES`). Found at
    /// probe; the device stays broken.
    UnsupportedNode,
}

impl Reason {
    /// The name `vmem` prints (`reason=`).
    pub fn name(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::DeviceBusy => "device_busy",
            Reason::NoMemory => "no_memory",
            Reason::Unmovable => "unmovable",
            Reason::Pinned => "pinned",
            Reason::Floor => "floor",
            Reason::Granularity => "granularity",
            Reason::DeviceError => "device_error",
            Reason::UnalignedRegion => "unaligned_region",
            Reason::UnsupportedNode => "unsupported_node",
        }
    }
}

/// What the caller should do after [`Vmem::step`](super::Vmem::step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Call again at once.
    Again,
    /// Call again at this time (ns, the clock passed to `step`).
    RetryAt(u64),
    /// Nothing to do until the configuration changes.
    Idle,
}

/// What the last resize did, for the log and the shell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes plugged and onlined.
    pub plugged_bytes: u64,
    /// Bytes offlined and unplugged.
    pub unplugged_bytes: u64,
    /// Bytes of used pages moved out of unplugged memory.
    pub migrated_bytes: u64,
    /// Requests sent to the device.
    pub requests: u64,
    /// When the current resize started (ns), `None` when converged.
    pub started_ns: Option<u64>,
}

/// A finished resize, for the `vmemN: resized to …` log line. The caller logs it (see
/// [`Vmem::take_resized`](super::Vmem::take_resized)) once what `vmem` shows is up to date, so whoever reacts to the
/// line finds the new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resized {
    /// The device (`vmemN`).
    pub id: usize,
    /// The device's plugged size at the end, in bytes.
    pub plugged_size: u64,
    /// The size it was asked for, in bytes.
    pub requested_size: u64,
    /// What the resize did.
    pub progress: Progress,
    /// From the first step of the resize to the converged one.
    pub took_ns: u64,
}

impl core::fmt::Display for Resized {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let p = &self.progress;
        write!(
            f,
            "vmem{}: resized to {} MiB (requested {} MiB): plugged {} MiB, unplugged {} MiB, \
             migrated {} MiB, {} requests, {} us",
            self.id,
            self.plugged_size >> 20,
            self.requested_size >> 20,
            p.plugged_bytes >> 20,
            p.unplugged_bytes >> 20,
            p.migrated_bytes >> 20,
            p.requests,
            self.took_ns / 1000
        )
    }
}
