//! virtio-mem protocol driver (virtio spec 1.2+, section 5.15 "Memory Device", device id 24).
//!
//! # Model
//!
//! A virtio-mem device owns one range of guest physical address space, `[addr, addr +
//! region_size)`, cut into `block_size` blocks. Each block is *plugged* (backed by host memory,
//! usable like RAM) or *unplugged* (must not be touched). The host sets `requested_size`; the
//! driver asks the device to plug or unplug specific blocks until `plugged_size` matches it.
//! Only the first `usable_region_size` bytes of the region can be plugged; that window grows with
//! `requested_size` and shrinks only on UNPLUG_ALL or reset.
//!
//! The driver talks over one virtqueue ("guest-request", index 0), one request at a time:
//!
//! | request            | what it does                          | responses the spec allows      |
//! |--------------------|---------------------------------------|--------------------------------|
//! | `Plug{addr, n}`    | plug `n` unplugged blocks at `addr`   | ACK, NACK, BUSY, ERROR         |
//! | `Unplug{addr, n}`  | unplug `n` plugged blocks at `addr`   | ACK, BUSY, ERROR               |
//! | `UnplugAll`        | unplug everything, may shrink usable  | ACK, BUSY                      |
//! | `State{addr, n}`   | are these blocks plugged?             | ACK(+state), ERROR             |
//!
//! NACK means "more than requested_size": re-read the config. BUSY means "later". ERROR means
//! the request was wrong (alignment, outside the usable region, block already in that state).
//! [`Response::allowed_for`] encodes this table; [`decode_response`] itself returns whatever known
//! type the device sent, so the kernel's policy decides how to treat a contradiction.
//!
//! # Driver states
//!
//! - **probing** ([`VirtioMem::new`]): reset, feature negotiation (FEATURES_OK read back), queue
//!   set-up, config read and [`validate`]d, then DRIVER_OK. Any failure resets the device, sets
//!   FAILED and returns the error: the device stays disabled and the kernel goes on.
//! - **ready**: [`VirtioMem::request`], [`VirtioMem::config`], [`VirtioMem::ack_interrupt`].
//! - **broken**: the device asked for a reset (DEVICE_NEEDS_RESET, which QEMU sets on a malformed
//!   request) or answered with a descriptor we never gave it. The driver has reset the device,
//!   which drops every plug *request* in flight but — per spec — keeps block states, so memory
//!   already plugged stays plugged and usable. Every further request fails with
//!   [`VirtioMemError::Broken`].
//!
//! # What the caller must guarantee
//!
//! This driver only talks to the device; it never maps, reads or writes the device region. The
//! kernel decides what goes online, and it must:
//! - never read or write an unplugged block (we accept VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE, so
//!   even reads are forbidden); under QEMU/TCG such reads return zero instead of faulting, so
//!   nothing catches a mistake;
//! - only unplug blocks whose memory is no longer in use, and treat freshly plugged memory as
//!   uninitialised;
//! - treat `plugged_size > 0` at probe as leftovers (UNPLUG_ALL, retried on BUSY, or rebuild the
//!   view with STATE) before choosing blocks to plug;
//! - provide a `wait` function to [`VirtioMem::request`] that returns eventually even if the
//!   interrupt it waits for already fired (sleep until the next interrupt *or* timer tick).
//!
//! The encoding ([`encode_request`], [`decode_response`]) and [`validate`] are pure functions,
//! tested on the host directly; the driver itself is tested there against a fake device behind
//! our own [`Transport`] (`virtio_mem/tests/fake.rs`).

use core::fmt;

use hotmem_arch::addr::PhysRange;
use log::{debug, warn};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::Hal;

#[cfg(test)]
mod tests;

/// Smallest block size we support (QEMU's minimum too). Smaller blocks would make the kernel
/// track sub-megabyte holes; 1 MiB is still below a 2 MiB pageblock, which the kernel handles.
pub const BLOCK_SIZE_MIN: u64 = 1 << 20;

/// Virtqueue index of "guest-request" (spec 5.15.2).
pub const QUEUE_IDX: u16 = 0;
/// One request in flight, two descriptors (request, response), no indirect descriptors.
const QUEUE_SIZE: usize = 2;

/// Feature bits (spec 5.15.3 and 6).
pub mod feature {
    /// `node_id` is valid and is an ACPI proximity domain.
    pub const ACPI_PXM: u64 = 1 << 0;
    /// The driver must not even read unplugged memory. QEMU refuses FEATURES_OK without it.
    pub const UNPLUGGED_INACCESSIBLE: u64 = 1 << 1;
    /// Modern (non-legacy) virtio; virtio-mem has no legacy interface.
    pub const VERSION_1: u64 = 1 << 32;
    /// Everything this driver accepts when offered.
    pub const SUPPORTED: u64 = ACPI_PXM | UNPLUGGED_INACCESSIBLE | VERSION_1;
}

/// Request types (spec 5.15.6).
mod req_type {
    pub const PLUG: u16 = 0;
    pub const UNPLUG: u16 = 1;
    pub const UNPLUG_ALL: u16 = 2;
    pub const STATE: u16 = 3;
}

/// Response types (spec 5.15.6).
mod resp_type {
    pub const ACK: u16 = 0;
    pub const NACK: u16 = 1;
    pub const BUSY: u16 = 2;
    pub const ERROR: u16 = 3;
}

/// Block states in a STATE response (spec 5.15.6.4).
mod state {
    pub const PLUGGED: u16 = 0;
    pub const UNPLUGGED: u16 = 1;
    pub const MIXED: u16 = 2;
}

/// Size of `struct virtio_mem_req`: le16 type, 6 bytes padding, le64 addr, le16 nb_blocks,
/// 6 bytes padding. QEMU marks the device broken on any other size.
pub const REQ_SIZE: usize = 24;
/// Size of `struct virtio_mem_resp`: le16 type, 6 bytes padding, le16 state.
pub const RESP_SIZE: usize = 10;

const REQ_OFF_TYPE: usize = 0;
const REQ_OFF_ADDR: usize = 8;
const REQ_OFF_NB_BLOCKS: usize = 16;
const RESP_OFF_TYPE: usize = 0;
const RESP_OFF_STATE: usize = 8;

const _: () = assert!(REQ_OFF_ADDR == REQ_OFF_TYPE + 2 + 6);
const _: () = assert!(REQ_OFF_NB_BLOCKS + 2 + 6 == REQ_SIZE && REQ_SIZE == 24);
const _: () = assert!(RESP_OFF_STATE + 2 == RESP_SIZE && RESP_SIZE == 10);

/// Byte offsets in `struct virtio_mem_config` (spec 5.15.4).
mod cfg_off {
    pub const BLOCK_SIZE: usize = 0;
    pub const NODE_ID: usize = 8;
    pub const ADDR: usize = 16;
    pub const REGION_SIZE: usize = 24;
    pub const USABLE_REGION_SIZE: usize = 32;
    pub const PLUGGED_SIZE: usize = 40;
    pub const REQUESTED_SIZE: usize = 48;
    pub const END: usize = 56;
}
const _: () = assert!(cfg_off::ADDR == cfg_off::NODE_ID + 2 + 6);
const _: () = assert!(cfg_off::REQUESTED_SIZE + 8 == cfg_off::END);
// Every 64-bit field is read as two 4-byte-aligned u32 (the PCI transport's limit).
const _: () = assert!(
    cfg_off::BLOCK_SIZE % 4 == 0
        && cfg_off::ADDR % 4 == 0
        && cfg_off::REGION_SIZE % 4 == 0
        && cfg_off::USABLE_REGION_SIZE % 4 == 0
        && cfg_off::PLUGGED_SIZE % 4 == 0
        && cfg_off::REQUESTED_SIZE % 4 == 0
);

/// How often [`read_config`] retries when the config generation changes under it before giving
/// up with [`VirtioMemError::ConfigUnstable`]. A host updates the config rarely; a generation
/// that never settles is a broken device, and we must not spin on it forever.
const CONFIG_READ_ATTEMPTS: usize = 16;
/// How many status reads we allow for a reset to complete (spec 4.1.4.3.2: the driver waits
/// until device_status reads 0). QEMU resets synchronously.
const RESET_POLLS: usize = 1000;

/// Device configuration (virtio spec 5.15.4), validated.
///
/// `node_id` is only meaningful when the device offered VIRTIO_MEM_F_ACPI_PXM (see
/// [`VirtioMem::node_id_valid`]); otherwise the spec says to ignore it and the driver reports 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Size and alignment of one block in bytes; a power of two >= [`BLOCK_SIZE_MIN`].
    pub block_size: u64,
    /// NUMA node (ACPI PXM; QEMU uses the `node=` index, which equals the DT `numa-node-id`).
    pub node_id: u16,
    /// Guest physical start of the device region.
    pub addr: u64,
    /// Size of the device region in bytes.
    pub region_size: u64,
    /// Bytes from `addr` in which blocks may be plugged.
    pub usable_region_size: u64,
    /// Bytes currently plugged.
    pub plugged_size: u64,
    /// Bytes the host wants plugged.
    pub requested_size: u64,
}

/// A request to the device. `addr` must be block-aligned and `nb_blocks > 0`, else the device
/// answers ERROR (which is harmless; the driver does not check, the device is the authority).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Plug `nb_blocks` consecutive unplugged blocks starting at `addr`.
    Plug {
        /// Guest physical address of the first block.
        addr: u64,
        /// How many blocks.
        nb_blocks: u16,
    },
    /// Unplug `nb_blocks` consecutive plugged blocks starting at `addr`.
    Unplug {
        /// Guest physical address of the first block.
        addr: u64,
        /// How many blocks.
        nb_blocks: u16,
    },
    /// Unplug every block; `usable_region_size` may shrink (without a config interrupt).
    UnplugAll,
    /// Ask whether `nb_blocks` blocks starting at `addr` are plugged.
    State {
        /// Guest physical address of the first block.
        addr: u64,
        /// How many blocks.
        nb_blocks: u16,
    },
}

/// Plug state of a range of blocks, from a STATE response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// Every block in the range is plugged.
    Plugged,
    /// Every block in the range is unplugged.
    Unplugged,
    /// Some are plugged, some are not.
    Mixed,
}

/// The device's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Done (PLUG, UNPLUG, UNPLUG_ALL).
    Ack,
    /// Done; the answer to a STATE request.
    AckState(BlockState),
    /// Refused: it would exceed `requested_size`. Re-read the config, then retry.
    Nack,
    /// Cannot process it now; retry later.
    Busy,
    /// The request was invalid for the current device state.
    Error,
}

impl Response {
    /// Whether the spec allows this response to this request (spec 5.15.6.1-4). A response
    /// outside this table means the device contradicts the spec; the caller's policy decides
    /// whether that makes it broken.
    pub fn allowed_for(&self, req: &Request) -> bool {
        matches!(
            (req, self),
            (
                Request::Plug { .. },
                Response::Ack | Response::Nack | Response::Busy | Response::Error
            ) | (
                Request::Unplug { .. },
                Response::Ack | Response::Busy | Response::Error
            ) | (Request::UnplugAll, Response::Ack | Response::Busy)
                | (
                    Request::State { .. },
                    Response::AckState(_) | Response::Error
                )
        )
    }
}

/// What the kernel knows that validation needs.
pub struct Limits<'a> {
    /// Bits of physical address the CPU (and the kernel's linear map) can reach.
    /// 64 or more means no limit beyond u64.
    pub pa_bits: u32,
    /// RAM and other devices' ranges the region must not overlap.
    pub taken: &'a [PhysRange],
}

/// Everything that can go wrong talking to a virtio-mem device. One variant per cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioMemError {
    /// The transport or the virtqueue failed (config space too small, queue too small, DMA ...).
    Transport(virtio_drivers::Error),
    /// The transport is not a memory device (device id 24).
    WrongDeviceType(DeviceType),
    /// The device does not offer VIRTIO_F_VERSION_1; virtio-mem has no legacy interface.
    Version1NotOffered,
    /// FEATURES_OK did not stick after we wrote our features: the device refused them.
    FeaturesNotAccepted,
    /// block_size is not a power of two, below [`BLOCK_SIZE_MIN`], or above region_size.
    BadBlockSize(u64),
    /// addr, region_size, usable_region_size, plugged_size or requested_size is not a multiple
    /// of block_size (the spec requires all of them to be).
    Unaligned,
    /// region_size is 0. The spec allows it, but such a device can never plug anything; we keep
    /// it disabled rather than special-case it everywhere.
    EmptyRegion,
    /// addr + region_size overflows or ends above 2^pa_bits.
    RegionBeyondPhysLimit,
    /// The region overlaps this range from [`Limits::taken`].
    RegionOverlaps(PhysRange),
    /// usable_region_size > region_size.
    UsableTooLarge,
    /// plugged_size > usable_region_size.
    PluggedTooLarge,
    /// requested_size > usable_region_size (the device must keep usable >= requested).
    RequestedTooLarge,
    /// block_size, node_id, addr or region_size changed after probe (only allowed at reset).
    ConfigChanged,
    /// The config generation kept changing while we read the config.
    ConfigUnstable,
    /// A response type the spec does not define.
    BadResponse(u16),
    /// A STATE response with a state the spec does not define.
    BadState(u16),
    /// The device reported writing fewer than [`RESP_SIZE`] bytes of response.
    ShortResponse(u32),
    /// The device set DEVICE_NEEDS_RESET while a request was in flight; it has been reset.
    DeviceNeedsReset,
    /// An earlier failure reset the device; no more requests are sent.
    Broken,
}

impl From<virtio_drivers::Error> for VirtioMemError {
    fn from(e: virtio_drivers::Error) -> Self {
        Self::Transport(e)
    }
}

impl fmt::Display for VirtioMemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use VirtioMemError::*;
        match self {
            Transport(e) => write!(f, "virtio transport: {e}"),
            WrongDeviceType(t) => write!(f, "not a virtio-mem device: {t:?}"),
            Version1NotOffered => f.write_str("device does not offer VIRTIO_F_VERSION_1"),
            FeaturesNotAccepted => f.write_str("device did not accept our features (FEATURES_OK)"),
            BadBlockSize(s) => write!(f, "bad block size {s:#x}"),
            Unaligned => f.write_str("config address or size not a multiple of block size"),
            EmptyRegion => f.write_str("region size is 0"),
            RegionBeyondPhysLimit => f.write_str("region beyond the physical address limit"),
            RegionOverlaps(r) => write!(f, "region overlaps [{:#x}, +{:#x})", r.base, r.size),
            UsableTooLarge => f.write_str("usable_region_size > region_size"),
            PluggedTooLarge => f.write_str("plugged_size > usable_region_size"),
            RequestedTooLarge => f.write_str("requested_size > usable_region_size"),
            ConfigChanged => f.write_str("immutable config field changed"),
            ConfigUnstable => f.write_str("config generation never settled"),
            BadResponse(t) => write!(f, "unknown response type {t}"),
            BadState(s) => write!(f, "unknown block state {s}"),
            ShortResponse(n) => write!(f, "response of {n} bytes"),
            DeviceNeedsReset => f.write_str("device needs reset"),
            Broken => f.write_str("device was reset after an earlier failure"),
        }
    }
}

impl core::error::Error for VirtioMemError {}

/// Encodes a request into its 24-byte wire form (all fields little-endian, padding zero).
pub fn encode_request(req: &Request) -> [u8; REQ_SIZE] {
    let (ty, addr, nb_blocks) = match *req {
        Request::Plug { addr, nb_blocks } => (req_type::PLUG, addr, nb_blocks),
        Request::Unplug { addr, nb_blocks } => (req_type::UNPLUG, addr, nb_blocks),
        Request::UnplugAll => (req_type::UNPLUG_ALL, 0, 0),
        Request::State { addr, nb_blocks } => (req_type::STATE, addr, nb_blocks),
    };
    let mut out = [0u8; REQ_SIZE];
    out[REQ_OFF_TYPE..REQ_OFF_TYPE + 2].copy_from_slice(&ty.to_le_bytes());
    out[REQ_OFF_ADDR..REQ_OFF_ADDR + 8].copy_from_slice(&addr.to_le_bytes());
    out[REQ_OFF_NB_BLOCKS..REQ_OFF_NB_BLOCKS + 2].copy_from_slice(&nb_blocks.to_le_bytes());
    out
}

fn le16(bytes: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([bytes[off], bytes[off + 1]])
}

/// Decodes a 10-byte response to `req`. The state field is only read for STATE requests (the
/// spec says to ignore everything but the type otherwise). Any defined response type is
/// returned as is; see [`Response::allowed_for`] for which ones the spec allows per request.
pub fn decode_response(req: &Request, bytes: &[u8; RESP_SIZE]) -> Result<Response, VirtioMemError> {
    let resp = match le16(bytes, RESP_OFF_TYPE) {
        resp_type::ACK => match req {
            Request::State { .. } => Response::AckState(match le16(bytes, RESP_OFF_STATE) {
                state::PLUGGED => BlockState::Plugged,
                state::UNPLUGGED => BlockState::Unplugged,
                state::MIXED => BlockState::Mixed,
                other => return Err(VirtioMemError::BadState(other)),
            }),
            _ => Response::Ack,
        },
        resp_type::NACK => Response::Nack,
        resp_type::BUSY => Response::Busy,
        resp_type::ERROR => Response::Error,
        other => return Err(VirtioMemError::BadResponse(other)),
    };
    Ok(resp)
}

/// Checks the fields that cannot change until reset: the region itself.
///
/// Errors here are properties the spec makes the device guarantee (power-of-two block size,
/// block-aligned addr/size) or that our kernel needs (block size we support, region reachable
/// and not on top of RAM or another device).
fn validate_region(raw: &Config, limits: &Limits) -> Result<(), VirtioMemError> {
    let bs = raw.block_size;
    if !bs.is_power_of_two() || bs < BLOCK_SIZE_MIN {
        return Err(VirtioMemError::BadBlockSize(bs));
    }
    if raw.region_size == 0 {
        return Err(VirtioMemError::EmptyRegion);
    }
    if bs > raw.region_size {
        return Err(VirtioMemError::BadBlockSize(bs));
    }
    if raw.addr % bs != 0 || raw.region_size % bs != 0 {
        return Err(VirtioMemError::Unaligned);
    }
    let region =
        PhysRange::new(raw.addr, raw.region_size).ok_or(VirtioMemError::RegionBeyondPhysLimit)?;
    if limits.pa_bits < 64 && region.end() > 1u64 << limits.pa_bits {
        return Err(VirtioMemError::RegionBeyondPhysLimit);
    }
    // The first taken range in the caller's order; an empty one overlaps nothing.
    match limits.taken.iter().find(|t| t.overlaps(region)) {
        Some(&taken) => Err(VirtioMemError::RegionOverlaps(taken)),
        None => Ok(()),
    }
}

/// Checks the fields that may change at runtime against the (already validated) region.
///
/// All three bounds are device guarantees in the spec, so a violation is an error, not
/// something to clamp: usable "can grow up to region_size"; plugged_size is "the amount of
/// plugged memory within the usable region"; the device "MUST set usable_region_size to
/// requested_size or greater". All of them "MUST" be multiples of block_size.
/// `requested_size > plugged_size` (and the reverse) is normal: that is the work to do.
fn validate_sizes(raw: &Config) -> Result<(), VirtioMemError> {
    let bs = raw.block_size;
    if raw.usable_region_size > raw.region_size {
        return Err(VirtioMemError::UsableTooLarge);
    }
    if raw.plugged_size > raw.usable_region_size {
        return Err(VirtioMemError::PluggedTooLarge);
    }
    if raw.requested_size > raw.usable_region_size {
        return Err(VirtioMemError::RequestedTooLarge);
    }
    if raw.usable_region_size % bs != 0
        || raw.plugged_size % bs != 0
        || raw.requested_size % bs != 0
    {
        return Err(VirtioMemError::Unaligned);
    }
    Ok(())
}

/// Validates a config read from the device (spec 5.15.4 device requirements plus what the
/// kernel needs). Checks, in order: block size (power of two, >= [`BLOCK_SIZE_MIN`],
/// <= region_size), region non-empty, addr and region_size block-aligned, region end within
/// `2^pa_bits` without overflow, no overlap with `limits.taken`, then usable <= region,
/// plugged <= usable, requested <= usable, and all sizes block-aligned.
pub fn validate(raw: &Config, limits: &Limits) -> Result<Config, VirtioMemError> {
    validate_region(raw, limits)?;
    validate_sizes(raw)?;
    Ok(*raw)
}

/// Reads a 64-bit config field as two u32 reads (the PCI transport allows at most 4-byte
/// accesses). Tearing is caught by the generation check in [`read_config`].
fn read_u64<T: Transport>(transport: &T, off: usize) -> Result<u64, VirtioMemError> {
    let lo: u32 = transport.read_config_space(off)?;
    let hi: u32 = transport.read_config_space(off + 4)?;
    Ok(u64::from(hi) << 32 | u64::from(lo))
}

fn read_config_once<T: Transport>(
    transport: &T,
    node_id_valid: bool,
) -> Result<Config, VirtioMemError> {
    let node_id: u16 = transport.read_config_space(cfg_off::NODE_ID)?;
    Ok(Config {
        block_size: read_u64(transport, cfg_off::BLOCK_SIZE)?,
        node_id: if node_id_valid { node_id } else { 0 },
        addr: read_u64(transport, cfg_off::ADDR)?,
        region_size: read_u64(transport, cfg_off::REGION_SIZE)?,
        usable_region_size: read_u64(transport, cfg_off::USABLE_REGION_SIZE)?,
        plugged_size: read_u64(transport, cfg_off::PLUGGED_SIZE)?,
        requested_size: read_u64(transport, cfg_off::REQUESTED_SIZE)?,
    })
}

/// Reads the whole config consistently (spec 2.5.1: same generation before and after), with a
/// bounded number of attempts. The raw values are not validated here. Reading the config has
/// no side effects on the device, so a second transport of a probed device may read it this
/// way while the driver works (the kernel's live status does).
pub fn read_config<T: Transport>(
    transport: &T,
    node_id_valid: bool,
) -> Result<Config, VirtioMemError> {
    for _ in 0..CONFIG_READ_ATTEMPTS {
        let before = transport.read_config_generation();
        let config = read_config_once(transport, node_id_valid)?;
        if transport.read_config_generation() == before {
            return Ok(config);
        }
    }
    Err(VirtioMemError::ConfigUnstable)
}

/// Writes 0 to the status (device reset) and waits a bounded time for it to read back as 0.
fn reset<T: Transport>(transport: &mut T) {
    transport.set_status(DeviceStatus::empty());
    for _ in 0..RESET_POLLS {
        if transport.get_status().is_empty() {
            return;
        }
        core::hint::spin_loop();
    }
    warn!("virtio-mem: reset did not complete");
}

/// Gives up on the device during probe: forget the queue, reset, and set FAILED.
fn fail<T: Transport>(transport: &mut T, err: VirtioMemError) -> VirtioMemError {
    warn!("virtio-mem: probe failed: {err}");
    transport.queue_unset(QUEUE_IDX);
    reset(transport);
    transport.set_status(DeviceStatus::FAILED);
    err
}

/// Negotiates features (spec 3.1.1 steps 1-6). Returns whether ACPI_PXM was accepted.
fn negotiate<T: Transport>(transport: &mut T) -> Result<bool, VirtioMemError> {
    reset(transport);
    transport.set_status(DeviceStatus::ACKNOWLEDGE);
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let offered = transport.read_device_features();
    if offered & feature::VERSION_1 == 0 {
        return Err(VirtioMemError::Version1NotOffered);
    }
    let accepted = offered & feature::SUPPORTED;
    debug!("virtio-mem: features offered {offered:#x}, accepted {accepted:#x}");
    transport.write_driver_features(accepted);
    let want = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
    transport.set_status(want);
    // The device clears FEATURES_OK if it refuses our subset (QEMU does without
    // UNPLUGGED_INACCESSIBLE); virtio-drivers' begin_init never checks, so we do.
    if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
        return Err(VirtioMemError::FeaturesNotAccepted);
    }
    // Only meaningful for legacy MMIO; harmless elsewhere.
    transport.set_guest_page_size(virtio_drivers::PAGE_SIZE as u32);
    Ok(accepted & feature::ACPI_PXM != 0)
}

/// A virtio-mem device: owns its transport and its one virtqueue.
pub struct VirtioMem<H: Hal, T: Transport> {
    transport: T,
    queue: VirtQueue<H, QUEUE_SIZE>,
    /// The config as validated at probe; the immutable fields are compared against it.
    first: Config,
    node_id_valid: bool,
    /// A config-change interrupt seen while `request` read the ISR, for the next
    /// [`VirtioMem::ack_interrupt`].
    config_changed_pending: bool,
    /// Set once the device has been reset after a failure.
    broken: bool,
}

impl<H: Hal, T: Transport> VirtioMem<H, T> {
    /// Probes the device: negotiates features (accepts UNPLUGGED_INACCESSIBLE and ACPI_PXM when
    /// offered; requires VERSION_1), checks that FEATURES_OK stuck, sets up the "guest-request"
    /// queue, reads and validates the config, and sets DRIVER_OK.
    ///
    /// On any error the device is reset, FAILED is set, and the error returned: the caller keeps
    /// going without this device. Only a transport that is not a memory device at all
    /// ([`VirtioMemError::WrongDeviceType`]) is left untouched.
    pub fn new(mut transport: T, limits: &Limits) -> Result<Self, VirtioMemError> {
        // Not our device: leave it exactly as it is.
        let ty = transport.device_type();
        if ty != DeviceType::Memory {
            return Err(VirtioMemError::WrongDeviceType(ty));
        }
        let node_id_valid = match negotiate(&mut transport) {
            Ok(v) => v,
            Err(e) => return Err(fail(&mut transport, e)),
        };
        let queue = match VirtQueue::<H, QUEUE_SIZE>::new(&mut transport, QUEUE_IDX, false, false) {
            Ok(q) => q,
            Err(e) => return Err(fail(&mut transport, e.into())),
        };
        let first =
            match read_config(&transport, node_id_valid).and_then(|raw| validate(&raw, limits)) {
                Ok(c) => c,
                Err(e) => {
                    // Reset before `queue` drops, so the device never holds a freed ring.
                    let e = fail(&mut transport, e);
                    drop(queue);
                    return Err(e);
                }
            };
        transport.finish_init();
        debug!("virtio-mem: probed {first:?}");
        Ok(Self {
            transport,
            queue,
            first,
            node_id_valid,
            config_changed_pending: false,
            broken: false,
        })
    }

    /// Whether `node_id` is meaningful (VIRTIO_MEM_F_ACPI_PXM negotiated). If not, `node_id` is
    /// reported as 0.
    pub fn node_id_valid(&self) -> bool {
        self.node_id_valid
    }

    /// Whether an earlier failure reset the device (see the module doc).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Re-reads the config (consistently across the generation counter), checks that
    /// block_size, node_id, addr and region_size did not change since probe, and validates the
    /// sizes. The region checks against [`Limits`] done at probe still hold because the region
    /// did not change.
    pub fn config(&self) -> Result<Config, VirtioMemError> {
        let raw = read_config(&self.transport, self.node_id_valid)?;
        let f = &self.first;
        if raw.block_size != f.block_size
            || raw.node_id != f.node_id
            || raw.addr != f.addr
            || raw.region_size != f.region_size
        {
            return Err(VirtioMemError::ConfigChanged);
        }
        validate_sizes(&raw)?;
        Ok(raw)
    }

    /// Sends one request and waits for its response.
    ///
    /// `wait` is called each time the response is not there yet (the kernel passes a function
    /// that sleeps until the next interrupt or tick). After each `wait` the driver reads the ISR
    /// itself — which de-asserts a level-triggered INTx — and remembers a config change for the
    /// next [`Self::ack_interrupt`]; so an IRQ handler that cannot reach the driver while this
    /// runs may simply mask the line and wake the waiter.
    ///
    /// The request and response buffers live on this stack frame, so this does not return while
    /// the device may still write them: it returns when the device answered, or after resetting
    /// the device because it set DEVICE_NEEDS_RESET (what QEMU does on a malformed request). A
    /// device that neither answers nor asks for a reset blocks the caller, as in Linux.
    pub fn request(
        &mut self,
        req: Request,
        wait: &mut dyn FnMut(),
    ) -> Result<Response, VirtioMemError> {
        if self.broken {
            return Err(VirtioMemError::Broken);
        }
        let req_bytes = encode_request(&req);
        // An unwritten response reads as type 0xffff and decodes to BadResponse, never to ACK.
        let mut resp_bytes = [0xffu8; RESP_SIZE];
        debug!("virtio-mem: request {req:?}");
        // SAFETY: `req_bytes` and `resp_bytes` live until this function returns, and it returns
        // only after `pop_used` gave them back or after a device reset (after which the device no
        // longer accesses the queue). Nothing else touches them until then.
        let token = unsafe { self.queue.add(&[&req_bytes], &mut [&mut resp_bytes]) }?;
        if self.queue.should_notify() {
            self.transport.notify(QUEUE_IDX);
        }
        while !self.queue.can_pop() {
            wait();
            let isr = self.transport.ack_interrupt();
            if isr.contains(InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT) {
                self.config_changed_pending = true;
            }
            if !self.queue.can_pop()
                && self
                    .transport
                    .get_status()
                    .contains(DeviceStatus::DEVICE_NEEDS_RESET)
            {
                self.give_up();
                return Err(VirtioMemError::DeviceNeedsReset);
            }
        }
        // SAFETY: the same buffers as passed to `add` with this token, still alive and untouched.
        let popped = unsafe {
            self.queue
                .pop_used(token, &[&req_bytes], &mut [&mut resp_bytes])
        };
        let len = match popped {
            Ok(len) => len,
            Err(e) => {
                // The device used a descriptor we did not expect: it may still hold ours.
                self.give_up();
                return Err(VirtioMemError::Transport(e));
            }
        };
        if (len as usize) < RESP_SIZE {
            return Err(VirtioMemError::ShortResponse(len));
        }
        let resp = decode_response(&req, &resp_bytes)?;
        debug!("virtio-mem: response {resp:?}");
        Ok(resp)
    }

    /// Acknowledges the device interrupt (reads the ISR); returns (config_changed, queue_used).
    /// Includes a config change that [`Self::request`] saw while waiting.
    pub fn ack_interrupt(&mut self) -> (bool, bool) {
        let isr = self.transport.ack_interrupt();
        let config_changed = isr.contains(InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT)
            || core::mem::take(&mut self.config_changed_pending);
        (
            config_changed,
            isr.contains(InterruptStatus::QUEUE_INTERRUPT),
        )
    }

    /// Resets the device after a failure with a request in flight and refuses further requests.
    /// Block states survive a device reset (spec 5.15.5, device requirements), so plugged memory stays usable.
    fn give_up(&mut self) {
        warn!("virtio-mem: resetting device at {:#x}", self.first.addr);
        reset(&mut self.transport);
        self.transport.set_status(DeviceStatus::FAILED);
        self.broken = true;
    }
}

impl<H: Hal, T: Transport> Drop for VirtioMem<H, T> {
    fn drop(&mut self) {
        self.transport.queue_unset(QUEUE_IDX);
        // The PCI transport cannot unset a queue; a reset makes the device forget it before the
        // queue memory is freed (fields drop after this body).
        reset(&mut self.transport);
    }
}
