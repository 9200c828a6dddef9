//! Host tests: pure encoding/validation, and the driver against a fake virtio-mem device.
//!
//! - `fake`: the fake device behind our own [`Transport`] (virtio-drivers' fake is
//!   private). It keeps a config-space byte array, feature bits and the status, and serves
//!   the one queue by reading descriptors from the memory [`TestHal`] allocated (identity:
//!   physical == virtual). Requests are decoded with the test's own little-endian reads,
//!   not with `encode_request`. [`fake::probe_with`] is the one way a test sets it up.
//! - `encoding`: request and response wire forms, and the spec's response table.
//! - `validate`: [`validate`] against QEMU's config and each way it can be wrong.
//! - `probe`: feature negotiation, probe failures, config re-reads.
//! - `requests`: requests over the fake queue, interrupts, reset and drop.
//!
//! This file holds the fixtures they share: QEMU's config and the kernel's limits.

use super::*;
use crate::test_hal::TestHal;

mod encoding;
mod fake;
mod probe;
mod requests;
mod validate;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// QEMU 10's virtio-mem-pci config on arm virt (2 MiB blocks, a 4 GiB region at 2 GiB) once
/// 1 GiB is requested: usable_region_size is then requested + 1 GiB. Node 1, as with `node=1`.
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
const TAKEN: &[PhysRange] = &[
    PhysRange {
        base: 0x4000_0000,
        size: GIB,
    },
    PhysRange {
        base: 0x0800_0000,
        size: 0x0100_0000,
    },
];

fn limits() -> Limits<'static> {
    Limits {
        pa_bits: 40,
        taken: TAKEN,
    }
}
