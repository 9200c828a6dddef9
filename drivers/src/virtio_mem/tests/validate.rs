//! [`validate`]: QEMU's config and leftovers pass; each field that breaks a spec or kernel
//! rule is refused with its own error.

use super::*;

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
        Err(VirtioMemError::RegionOverlaps(PhysRange {
            base: 0x4000_0000,
            size: GIB
        }))
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
        Err(VirtioMemError::RegionOverlaps(PhysRange {
            base: 0x0800_0000,
            size: 0x0100_0000
        }))
    );
    // The message names the range it hit.
    assert_eq!(
        check(on_ram).unwrap_err().to_string(),
        "region overlaps [0x40000000, +0x40000000)"
    );
    // Zero-sized taken entries never overlap.
    let l = Limits {
        pa_bits: 48,
        taken: &[PhysRange {
            base: 0x9000_0000,
            size: 0,
        }],
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
