//! Stage 1: the header and the structure block, checked before the `fdt` crate sees them.
//!
//! The `fdt` crate's arithmetic is not overflow-safe on hostile headers and its node
//! iterator silently stops below 15 levels, so a blob reaches it only after
//! [`Header::read`] and [`check_structure`] have accepted it:
//! - [`Header::read`]: magic, `totalsize` against the slice, version 17 readable, every
//!   block inside `totalsize` without `u32` overflow, the alignments the spec requires.
//! - [`check_structure`]: one pass over the structure block's tokens in the order `fdt`
//!   will read them (nesting, property lengths, name offsets, UTF-8 names, depth at most
//!   [`MAX_DEPTH`]).
//!
//! Both return [`DtError`]: a blob that fails here cannot be read at all. Everything after
//! this stage reaches the tree through the aliases [`Fdt`] and [`Node`] below, which pick
//! `fdt`'s unaligned, non-panicking parser.

use super::cells::be32;
use super::{DtError, MAX_DEPTH};

type Mode<'a> = (
    fdt::parsing::unaligned::UnalignedParser<'a>,
    fdt::parsing::NoPanic,
);
/// The tree as the `fdt` crate reads it (unaligned input, no panics).
pub(super) type Fdt<'a> = fdt::Fdt<'a, Mode<'a>>;
/// One node of [`Fdt`].
pub(super) type Node<'a> = fdt::nodes::Node<'a, Mode<'a>>;

pub(super) const FDT_MAGIC: u32 = 0xd00d_feed;
/// Header size of a version 17 blob (DT spec 5.2).
const HEADER_BYTES: usize = 40;
/// Structure block tokens (DT spec 5.4.1).
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// The header fields we use, each already checked against `total_size`.
pub(super) struct Header {
    pub(super) total_size: usize,
    pub(super) off_struct: usize,
    pub(super) size_struct: usize,
    pub(super) off_strings: usize,
    pub(super) size_strings: usize,
    pub(super) off_rsvmap: usize,
}

impl Header {
    pub(super) fn read(blob: &[u8]) -> Result<Self, DtError> {
        let total_size = super::total_size(blob)?;
        if blob.len() < HEADER_BYTES {
            return Err(DtError::Truncated);
        }
        if total_size < HEADER_BYTES {
            return Err(DtError::Malformed);
        }
        if blob.len() < total_size {
            return Err(DtError::Truncated);
        }
        let field = |index: usize| {
            be32(blob, index * 4)
                .map(|v| v as usize)
                .ok_or(DtError::Truncated)
        };
        let header = Header {
            total_size,
            off_struct: field(2)?,
            off_strings: field(3)?,
            off_rsvmap: field(4)?,
            size_strings: field(8)?,
            size_struct: field(9)?,
        };
        let (version, last_compatible) = (field(5)?, field(6)?);
        // Version 17 added `size_dt_struct`, which we need; a blob that is not readable by
        // a version 17 reader is refused.
        if version < 17 || last_compatible > 17 {
            return Err(DtError::Malformed);
        }
        let inside =
            |off: usize, size: usize| off.checked_add(size).is_some_and(|end| end <= total_size);
        if !inside(header.off_struct, header.size_struct)
            || !inside(header.off_strings, header.size_strings)
            || !inside(header.off_rsvmap, 16)
            || header.off_struct % 4 != 0
            || header.size_struct % 4 != 0
            || header.off_rsvmap % 8 != 0
        {
            return Err(DtError::Malformed);
        }
        Ok(header)
    }
}

/// The `size` bytes at `off` of `blob`.
pub(super) fn block(blob: &[u8], off: usize, size: usize) -> Result<&[u8], DtError> {
    blob.get(off..off.checked_add(size).ok_or(DtError::Malformed)?)
        .ok_or(DtError::Malformed)
}

/// `n` rounded up to a whole token (4 bytes).
fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// A NUL-terminated UTF-8 string at the start of `bytes`; its length without the NUL.
fn cstr_len(bytes: &[u8]) -> Option<usize> {
    let len = bytes.iter().position(|&b| b == 0)?;
    core::str::from_utf8(bytes.get(..len)?).ok()?;
    Some(len)
}

/// Walks the structure block the way `fdt` will, and refuses anything it would choke on:
/// exactly one root, balanced nodes, properties only before a node's children, every
/// property and name inside its block, names valid UTF-8, `FDT_END` as the last token.
pub(super) fn check_structure(structs: &[u8], strings: &[u8]) -> Result<(), DtError> {
    const BAD: DtError = DtError::Malformed;
    let mut pos = 0usize;
    // Open nodes; `has_child[d]` says the open node at depth d already has a child.
    let mut depth = 0usize;
    let mut has_child = [false; MAX_DEPTH + 1];
    let mut seen_root = false;
    loop {
        let token = be32(structs, pos).ok_or(BAD)?;
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                if depth == 0 && seen_root {
                    return Err(BAD);
                }
                if depth > 0 {
                    *has_child.get_mut(depth - 1).ok_or(BAD)? = true;
                }
                let name_len = cstr_len(structs.get(pos..).ok_or(BAD)?).ok_or(BAD)?;
                pos = pos
                    .checked_add(align4(name_len + 1).ok_or(BAD)?)
                    .ok_or(BAD)?;
                depth += 1;
                if depth > MAX_DEPTH + 1 {
                    return Err(BAD);
                }
                *has_child.get_mut(depth - 1).ok_or(BAD)? = false;
                seen_root = true;
            }
            FDT_END_NODE => {
                depth = depth.checked_sub(1).ok_or(BAD)?;
            }
            FDT_PROP => {
                if depth == 0 || *has_child.get(depth - 1).ok_or(BAD)? {
                    return Err(BAD);
                }
                let len = be32(structs, pos).ok_or(BAD)? as usize;
                let name_off = be32(structs, pos + 4).ok_or(BAD)? as usize;
                pos += 8;
                let end = pos.checked_add(len).ok_or(BAD)?;
                if end > structs.len() {
                    return Err(BAD);
                }
                pos = pos.checked_add(align4(len).ok_or(BAD)?).ok_or(BAD)?;
                cstr_len(strings.get(name_off..).ok_or(BAD)?).ok_or(BAD)?;
            }
            FDT_NOP => {}
            FDT_END => {
                return if depth == 0 && seen_root && pos == structs.len() {
                    Ok(())
                } else {
                    Err(BAD)
                };
            }
            _ => return Err(BAD),
        }
    }
}

/// What an `fdt` crate error means to our caller.
pub(super) fn from_fdt(e: fdt::FdtError) -> DtError {
    match e {
        fdt::FdtError::BadMagic => DtError::BadMagic,
        fdt::FdtError::SliceTooSmall => DtError::Truncated,
        _ => DtError::Malformed,
    }
}
