//! Unreadable blobs are [`DtError`]s; damaged but readable ones never panic, and what
//! they yield still keeps `BootInfo`'s invariants.
use hotmem::dt::DtError;
use proptest::prelude::*;

use super::*;

/// QEMU pads its blob to 1 MiB and the caller may pass more than `totalsize` bytes.
#[test]
fn padded_blob_and_longer_slice() {
    let mut blob = load("default");
    let compact = blob.len();
    blob.resize(0x10_0000, 0);
    set_be32(&mut blob, 4, 0x10_0000);
    assert_eq!(dt::total_size(&blob), Ok(0x10_0000));
    let info = parse_ok(&blob);
    assert_eq!(info.dtb, range(DTB_PA, 0x10_0000));
    assert_eq!(info.gic, Some(GICV3));

    let mut longer = load("default");
    longer.extend_from_slice(&[0xff; 4096]);
    let info = parse_ok(&longer);
    assert_eq!(info.dtb, range(DTB_PA, compact as u64));
    assert_virt_common(&info);
}

#[test]
fn unreadable_blobs_are_errors() {
    let good = load("default");
    assert_eq!(dt::parse(&[], 0).err(), Some(DtError::Truncated));
    assert_eq!(dt::total_size(&good[..7]), Err(DtError::Truncated));
    assert_eq!(dt::total_size(&good), Ok(good.len()));

    let mut bad = good.clone();
    bad[0] ^= 1;
    assert_eq!(dt::parse(&bad, 0).err(), Some(DtError::BadMagic));
    assert_eq!(dt::total_size(&bad), Err(DtError::BadMagic));

    let patched = |field: usize, value: u32| {
        let mut b = good.clone();
        set_be32(&mut b, field * 4, value);
        dt::parse(&b, 0).err()
    };
    assert_eq!(patched(1, good.len() as u32 + 1), Some(DtError::Truncated)); // totalsize
    assert_eq!(patched(1, 39), Some(DtError::Malformed));
    assert_eq!(patched(2, u32::MAX - 3), Some(DtError::Malformed)); // off_dt_struct
    assert_eq!(patched(3, u32::MAX), Some(DtError::Malformed)); // off_dt_strings
    assert_eq!(patched(4, good.len() as u32), Some(DtError::Malformed)); // off_mem_rsvmap
    assert_eq!(patched(5, 16), Some(DtError::Malformed)); // version
    assert_eq!(patched(8, u32::MAX), Some(DtError::Malformed)); // size_dt_strings
    assert_eq!(patched(9, 4), Some(DtError::Malformed)); // size_dt_struct
}

#[test]
fn every_prefix_is_truncated() {
    for name in ["default", "edge"] {
        let blob = load(name);
        for len in 0..blob.len() {
            assert_eq!(
                dt::parse(&blob[..len], DTB_PA).err(),
                Some(DtError::Truncated),
                "{name} len {len}"
            );
        }
    }
}

/// A prefix whose header claims exactly the prefix length: the structure block runs out
/// mid-tree, which must be an error or a (warned) partial result, never a panic.
#[test]
fn every_prefix_with_patched_sizes_never_panics() {
    for name in ["default", "edge", "reserved"] {
        let blob = load(name);
        for len in 40..=blob.len() {
            let mut b = blob[..len].to_vec();
            set_be32(&mut b, 4, len as u32);
            for (field, limit) in [(8usize, 3usize), (9, 2)] {
                // Shrink size_dt_strings / size_dt_struct to fit.
                let off = be32_at(&b, limit * 4) as usize;
                let size = be32_at(&b, field * 4) as usize;
                let fit = size.min(len.saturating_sub(off)) & !3;
                set_be32(&mut b, field * 4, fit as u32);
            }
            let _ = dt::parse(&b, DTB_PA);
        }
    }
}

/// Every single-bit flip of two real blobs.
#[test]
fn every_bit_flip_never_panics() {
    for name in ["default", "edge"] {
        let blob = load(name);
        let mut b = blob.clone();
        for i in 0..b.len() {
            for bit in 0..8 {
                b[i] ^= 1 << bit;
                let _ = dt::parse(&b, DTB_PA);
                b[i] ^= 1 << bit;
            }
        }
    }
}

/// Every aligned word of the structure block overwritten with values that hit edge
/// cases (zero cell counts, lengths past the end, all ones, tokens).
#[test]
fn every_word_overwrite_never_panics() {
    let values = [
        0u32,
        1,
        2,
        3,
        4,
        9,
        0x10,
        0xff,
        0x8003,
        0x7fff_ffff,
        0xffff_fffc,
        u32::MAX,
    ];
    for name in ["default", "edge", "reserved"] {
        let blob = load(name);
        let mut b = blob.clone();
        for off in (0..b.len() - 3).step_by(4) {
            let saved = be32_at(&b, off);
            for v in values {
                set_be32(&mut b, off, v);
                if let Ok(info) = dt::parse(&b, DTB_PA) {
                    check_invariants(&info);
                }
            }
            set_be32(&mut b, off, saved);
        }
    }
}

fn check_invariants(info: &BootInfo<'_>) {
    for pair in info.memory.windows(2) {
        assert!(
            pair[0].range.base + pair[0].range.size <= pair[1].range.base,
            "{:?}",
            info.memory
        );
    }
    for m in &info.memory {
        assert!(m.range.size > 0 && m.range.base.checked_add(m.range.size).is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A few random bytes overwritten anywhere in a random dump.
    #[test]
    fn random_corruption_never_panics(
        which in 0..ALL.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut blob = load(ALL[which]);
        let len = blob.len();
        for (at, byte) in edits {
            blob[at.index(len)] = byte;
        }
        if let Ok(info) = dt::parse(&blob, DTB_PA) {
            check_invariants(&info);
        }
    }

    /// Arbitrary bytes behind a valid-looking header.
    #[test]
    fn random_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), words in any::<[u32; 8]>()) {
        let total = (40 + body.len()) as u32;
        let mut blob = Vec::new();
        blob.extend_from_slice(&0xd00d_feedu32.to_be_bytes());
        blob.extend_from_slice(&total.to_be_bytes());
        for w in words {
            blob.extend_from_slice(&(w % (total + 1)).to_be_bytes());
        }
        blob.extend_from_slice(&body);
        let _ = dt::parse(&blob, DTB_PA);
    }
}
