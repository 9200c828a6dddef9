//! Low-level decoding: big-endian words in the blob, and property values.
//!
//! Property values are decoded here from raw bytes, not with the `fdt` crate's typed
//! helpers (its `Reg` divides by the entry width, which is zero when both cell counts are
//! 0). Every read is bounds-checked and returns `None` on short or malformed input; what a
//! `None` means (a warning, a default) is decided by the stage that asked.
//!
//! [`Props`] gathers, in one pass over a node's properties, every property some stage
//! looks at, so that the walk reads each node once.

use super::header::{from_fdt, Node};
use super::DtError;

/// The big-endian `u32` at byte `off` of `bytes`.
pub(super) fn be32(bytes: &[u8], off: usize) -> Option<u32> {
    let word = bytes.get(off..off.checked_add(4)?)?;
    <[u8; 4]>::try_from(word).ok().map(u32::from_be_bytes)
}

/// The big-endian `u64` at byte `off` of `bytes`.
pub(super) fn be64(bytes: &[u8], off: usize) -> Option<u64> {
    let word = bytes.get(off..off.checked_add(8)?)?;
    <[u8; 8]>::try_from(word).ok().map(u64::from_be_bytes)
}

/// A big-endian cell reader over a property value. Every read is bounds-checked.
#[derive(Clone, Copy)]
pub(super) struct Cells<'a>(pub(super) &'a [u8]);

impl<'a> Cells<'a> {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    /// `n` cells read as one number; `None` when the data runs out or the value does
    /// not fit 64 bits.
    pub(super) fn number(&mut self, n: u32) -> Option<u64> {
        let mut value = 0u64;
        for _ in 0..n {
            let cell = self.u32()?;
            if value >> 32 != 0 {
                return None;
            }
            value = (value << 32) | u64::from(cell);
        }
        Some(value)
    }

    /// The next `n` cells as their own reader; `None` when the data runs out.
    pub(super) fn split(&mut self, n: u64) -> Option<Cells<'a>> {
        let bytes = usize::try_from(n).ok()?.checked_mul(4)?;
        let (head, rest) = self.0.split_at_checked(bytes)?;
        self.0 = rest;
        Some(Cells(head))
    }

    /// Skips `n` cells; `None` when the data runs out.
    pub(super) fn skip(&mut self, n: u32) -> Option<()> {
        let bytes = usize::try_from(n).ok()?.checked_mul(4)?;
        self.0 = self.0.get(bytes..)?;
        Some(())
    }
}

/// A single-cell property such as `#address-cells` or `numa-node-id`.
pub(super) fn prop_u32(value: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(value).ok().map(u32::from_be_bytes)
}

/// The strings of a string-list property (`compatible`), skipping non-UTF-8 pieces.
fn strings(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| core::str::from_utf8(s).ok())
}

/// A single-string property: the bytes up to the first NUL, if UTF-8.
pub(super) fn prop_str(value: &[u8]) -> Option<&str> {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    core::str::from_utf8(value.get(..end)?).ok()
}

/// Whether a `compatible` value (absent: no) lists any of `any_of`.
pub(super) fn compatible_with(value: Option<&[u8]>, any_of: &[&str]) -> bool {
    value.is_some_and(|v| strings(v).any(|s| any_of.contains(&s)))
}

/// Declares [`Props`] from one table: each plain field with the property name whose value
/// it keeps (a later property of the same name wins), then the fields [`Props::of`] fills
/// by hand.
macro_rules! props {
    ($($field:ident = $name:literal,)* ; $($(#[$doc:meta])* $extra:ident: $ty:ty,)*) => {
        /// The properties of one node that we look at, gathered in one pass.
        #[derive(Default, Clone, Copy)]
        pub(super) struct Props<'a> {
            $(#[doc = concat!("`", $name, "`")] pub(super) $field: Option<&'a [u8]>,)*
            $($(#[$doc])* pub(super) $extra: $ty,)*
        }

        impl<'a> Props<'a> {
            /// Keeps `value` if `name` is one of the plain properties.
            fn keep(&mut self, name: &str, value: &'a [u8]) {
                match name {
                    $($name => self.$field = Some(value),)*
                    _ => {}
                }
            }
        }
    };
}

props! {
    reg = "reg",
    ranges = "ranges",
    compatible = "compatible",
    device_type = "device_type",
    status = "status",
    address_cells = "#address-cells",
    size_cells = "#size-cells",
    interrupt_cells = "#interrupt-cells",
    interrupt_parent = "interrupt-parent",
    interrupts = "interrupts",
    numa_node_id = "numa-node-id",
    method = "method",
    bus_range = "bus-range",
    interrupt_map = "interrupt-map",
    interrupt_map_mask = "interrupt-map-mask",
    msi_map = "msi-map",
    msi_map_mask = "msi-map-mask",
    msi_parent = "msi-parent",
    msi_base_spi = "arm,msi-base-spi",
    msi_num_spis = "arm,msi-num-spis",
    ;
    /// `interrupt-controller` is present.
    interrupt_controller: bool,
    /// `phandle`, else `linux,phandle`: the first of them in the node.
    phandle: Option<&'a [u8]>,
    /// `msi-parent` or `msi-map` is present.
    msi: bool,
    /// `msi-controller` is present.
    msi_controller: bool,
}

impl<'a> Props<'a> {
    pub(super) fn of(node: &Node<'a>) -> Result<Self, DtError> {
        let mut p = Props::default();
        for prop in node.properties().map_err(from_fdt)?.iter() {
            let prop = prop.map_err(from_fdt)?;
            match prop.name {
                "interrupt-controller" => p.interrupt_controller = true,
                "phandle" | "linux,phandle" => p.phandle = p.phandle.or(Some(prop.value)),
                "msi-controller" => p.msi_controller = true,
                name => {
                    p.msi |= matches!(name, "msi-parent" | "msi-map");
                    p.keep(name, prop.value)
                }
            }
        }
        Ok(p)
    }

    /// `status` absent, "okay" or "ok" (DT spec 2.3.4).
    pub(super) fn enabled(&self) -> bool {
        self.status
            .is_none_or(|s| matches!(prop_str(s), Some("okay" | "ok")))
    }

    pub(super) fn device_type_is(&self, ty: &str) -> bool {
        self.device_type.and_then(prop_str) == Some(ty)
    }
}
