//! A minimal flattened-device-tree writer for hand-made corner cases.
//!
//! Calls chain like the tree reads: `begin(name)`, its properties, its children, `end()`;
//! `build()` adds `FDT_END` and lays out header, `/memreserve/`, structure and strings
//! (version 17, last compatible 16). Nothing is checked: the point is to write broken
//! trees too.

/// The blob under construction.
#[derive(Default)]
pub(super) struct Fdt {
    structs: Vec<u8>,
    strings: Vec<u8>,
    /// `/memreserve/` entries (address, size); `build` adds the (0, 0) end marker.
    memreserve: Vec<(u64, u64)>,
}

impl Fdt {
    /// An empty tree whose header block lists `memreserve`.
    pub(super) fn with_memreserve(memreserve: Vec<(u64, u64)>) -> Self {
        Fdt {
            memreserve,
            ..Fdt::default()
        }
    }

    /// A raw structure-block word (a token, or anything else).
    pub(super) fn word(&mut self, w: u32) -> &mut Self {
        self.structs.extend_from_slice(&w.to_be_bytes());
        self
    }

    fn pad(&mut self) {
        while self.structs.len() % 4 != 0 {
            self.structs.push(0);
        }
    }

    pub(super) fn begin(&mut self, name: &str) -> &mut Self {
        self.word(1);
        self.structs.extend_from_slice(name.as_bytes());
        self.structs.push(0);
        self.pad();
        self
    }

    pub(super) fn end(&mut self) -> &mut Self {
        self.word(2)
    }

    pub(super) fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.word(3).word(value.len() as u32).word(off);
        self.structs.extend_from_slice(value);
        self.pad();
        self
    }

    /// A property of big-endian cells.
    pub(super) fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
        let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.prop(name, &bytes)
    }

    /// A NUL-terminated string property.
    pub(super) fn str(&mut self, name: &str, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.prop(name, &v)
    }

    /// `#address-cells` and `#size-cells` for this node's children.
    pub(super) fn cell_counts(&mut self, address: u32, size: u32) -> &mut Self {
        self.cells("#address-cells", &[address])
            .cells("#size-cells", &[size])
    }

    pub(super) fn compatible(&mut self, s: &str) -> &mut Self {
        self.str("compatible", s)
    }

    pub(super) fn device_type(&mut self, s: &str) -> &mut Self {
        self.str("device_type", s)
    }

    pub(super) fn build(&mut self) -> Vec<u8> {
        self.word(9);
        let rsv_off = 40u32;
        let rsv_len = (self.memreserve.len() as u32 + 1) * 16;
        let struct_off = rsv_off + rsv_len;
        let strings_off = struct_off + self.structs.len() as u32;
        let total = strings_off + self.strings.len() as u32;
        let mut b = Vec::new();
        for w in [
            0xd00d_feed,
            total,
            struct_off,
            strings_off,
            rsv_off,
            17,
            16,
            0,
            self.strings.len() as u32,
        ] {
            b.extend_from_slice(&u32::to_be_bytes(w));
        }
        b.extend_from_slice(&(self.structs.len() as u32).to_be_bytes());
        for &(a, s) in self.memreserve.iter().chain([(0, 0)].iter()) {
            b.extend_from_slice(&a.to_be_bytes());
            b.extend_from_slice(&s.to_be_bytes());
        }
        b.extend_from_slice(&self.structs);
        b.extend_from_slice(&self.strings);
        b
    }
}
