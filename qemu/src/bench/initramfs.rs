//! The Linux comparison guest's initramfs: a newc cpio archive written here, and its `/init`.
//!
//! The archive ([`Cpio`]) is a sequence of entries, each a 110-byte ASCII header (`070701` and
//! thirteen 8-digit hex fields: inode, mode, uid, gid, nlink, mtime, file size, device
//! major/minor, rdev major/minor, name size with its NUL, checksum 0), the name and its NUL
//! padded to a multiple of 4 bytes, then the data padded the same way; the entry named
//! `TRAILER!!!` ends it. Entries are written in order, so a directory comes before what it holds;
//! every entry gets its own inode number (no hard links) and mtime 0, so the same inputs give
//! the same bytes. The archive is not compressed: Linux unpacks a plain newc archive as well,
//! and the busybox binary, the biggest member, is about 2 MiB.
//!
//! [`build`] lays out the guest: the directories `/init` needs, `/dev/console` (the kernel opens
//! it for init's stdio before anything is mounted), `/bin/busybox`, the decompressed
//! `virtio_mem.ko` and [`init_script`]. The script mounts proc, sysfs and devtmpfs, installs the
//! busybox applets, loads the module, prints [`READY_LINE`] and then reads commands from the
//! console, one per line, without echo, answering each with its output and a
//! `DONE_MARKER <status>` line (see [`super::linux`]). [`parse`] reads an archive back (for the
//! tests).

use std::fmt::Write as _;

/// What `/init` prints once the shell loop reads commands: the end of the Linux guest's boot.
pub const READY_LINE: &str = "hotmem-bench: ready";
/// Starts the line `/init`'s loop prints after each command, followed by its exit status.
pub const DONE_MARKER: &str = "@@done";
/// Where the module goes in the initramfs.
pub const MODULE_PATH: &str = "lib/virtio_mem.ko";
/// Mount point for the tmpfs that holds the data an unplug must migrate.
pub const DATA_DIR: &str = "/mnt/data";

/// `S_IFDIR`, `S_IFREG`, `S_IFCHR` (the file type bits of a cpio mode).
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
/// newc magic.
const MAGIC: &str = "070701";
/// Header length: magic and 13 fields of 8 hex digits.
const HEADER_LEN: usize = 6 + 13 * 8;
/// Name of the last entry.
const TRAILER: &str = "TRAILER!!!";

const _: () = assert!(HEADER_LEN == 110);

/// A newc cpio archive under construction. See the module docs.
#[derive(Debug, Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Cpio {
        Cpio::default()
    }

    /// A directory (`mode` holds the permission bits).
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Cpio {
        self.entry(name, S_IFDIR | mode, 2, (0, 0), &[])
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Cpio {
        self.entry(name, S_IFREG | mode, 1, (0, 0), data)
    }

    /// A character device node with device number `major:minor`.
    pub fn char_dev(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> &mut Cpio {
        self.entry(name, S_IFCHR | mode, 1, (major, minor), &[])
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.next_ino = 0;
        self.entry(TRAILER, 0, 1, (0, 0), &[]);
        self.out
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> &mut Cpio {
        let ino = self.next_ino;
        if name != TRAILER {
            self.next_ino += 1;
        }
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len()).expect("initramfs member above 4 GiB"),
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("name length"),
            0, // check
        ];
        let mut header = String::with_capacity(HEADER_LEN);
        header.push_str(MAGIC);
        for f in fields {
            let _ = write!(header, "{f:08x}");
        }
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }
}

/// One entry read back by [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive.
    pub name: String,
    /// Type and permission bits.
    pub mode: u32,
    /// `nlink`.
    pub nlink: u32,
    /// `rdevmajor`, `rdevminor`.
    pub rdev: (u32, u32),
    /// File contents.
    pub data: Vec<u8>,
}

impl Entry {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == S_IFDIR
    }

    /// Whether the entry is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == S_IFREG
    }

    /// Whether the entry is a character device.
    pub fn is_char_dev(&self) -> bool {
        self.mode & 0o170000 == S_IFCHR
    }
}

/// Reads a newc archive back: its entries before the trailer. Fails on a bad magic, a bad hex
/// field, a truncated entry, misaligned padding that is not zero, or a missing trailer.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut at = 0usize;
    let mut entries = Vec::new();
    loop {
        let header = bytes
            .get(at..at + HEADER_LEN)
            .ok_or_else(|| format!("truncated header at {at}"))?;
        if &header[..6] != MAGIC.as_bytes() {
            return Err(format!("bad magic at {at}"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let text = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| format!("non-ASCII header at {at}"))?;
            u32::from_str_radix(text, 16).map_err(|_| format!("bad field {i} {text:?} at {at}"))
        };
        let (mode, nlink, size) = (field(1)?, field(4)?, field(6)? as usize);
        let (rdev, namesize) = ((field(9)?, field(10)?), field(11)? as usize);
        let name_at = at + HEADER_LEN;
        let raw_name = bytes
            .get(name_at..name_at + namesize)
            .ok_or_else(|| format!("truncated name at {name_at}"))?;
        let (last, name) = raw_name
            .split_last()
            .ok_or_else(|| format!("empty name at {name_at}"))?;
        if *last != 0 {
            return Err(format!("name at {name_at} does not end in NUL"));
        }
        let name = String::from_utf8(name.to_vec()).map_err(|_| "non-UTF-8 name".to_string())?;
        let data_at = padded(name_at + namesize);
        check_zero(bytes, name_at + namesize, data_at)?;
        let data = bytes
            .get(data_at..data_at + size)
            .ok_or_else(|| format!("truncated data of {name}"))?
            .to_vec();
        let next = padded(data_at + size);
        check_zero(bytes, data_at + size, next)?;
        at = next;
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(Entry {
            name,
            mode,
            nlink,
            rdev,
            data,
        });
    }
}

fn padded(n: usize) -> usize {
    n.div_ceil(4) * 4
}

fn check_zero(bytes: &[u8], from: usize, to: usize) -> Result<(), String> {
    match bytes.get(from..to) {
        Some(pad) if pad.iter().all(|&b| b == 0) => Ok(()),
        Some(_) => Err(format!("non-zero padding at {from}")),
        None => Err(format!("truncated padding at {from}")),
    }
}

/// The `/init` script: see the module docs. Its loop answers every command line with the
/// command's output and `DONE_MARKER <status>`; `memtotal_wait KIB` polls `/proc/meminfo` every
/// 2 ms until MemTotal is at least `KIB` (the "usable" time of a plug is when that line arrives).
pub fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
insmod /{MODULE_PATH} || echo "init: insmod {MODULE_PATH} failed"
memtotal_wait() {{
    while :; do
        while read -r key value unit; do
            [ "$key" = MemTotal: ] && break
        done < /proc/meminfo
        [ "$value" -ge "$1" ] && return 0
        usleep 2000
    done
}}
stty -echo
echo "{READY_LINE}"
while read -r line; do
    eval "$line"
    echo "{DONE_MARKER} $?"
done
poweroff -f
"#
    )
}

/// The initramfs of the Linux guest: directories, `/dev/console`, busybox, the module and
/// `/init`.
pub fn build(busybox: &[u8], module: &[u8]) -> Vec<u8> {
    let mut cpio = Cpio::new();
    for dir in [
        "bin", "dev", "lib", "mnt", "mnt/data", "proc", "sbin", "sys", "tmp", "usr", "usr/bin",
        "usr/sbin",
    ] {
        cpio.dir(dir, 0o755);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1)
        .file("bin/busybox", 0o755, busybox)
        .file(MODULE_PATH, 0o644, module)
        .file("init", 0o755, init_script().as_bytes());
    cpio.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_newc() {
        let mut c = Cpio::new();
        c.file("a", 0o644, b"xyz");
        let bytes = c.finish();
        let header = std::str::from_utf8(&bytes[..HEADER_LEN]).unwrap();
        // magic, ino 0, mode 0100644, uid, gid, nlink 1, mtime, size 3, dev, rdev, namesize 2.
        let fields = [0, 0o100644, 0, 0, 1, 0, 3, 0, 0, 0, 0, 2, 0];
        let want: String = fields.iter().map(|f: &u32| format!("{f:08x}")).collect();
        assert_eq!(header, format!("070701{want}"));
        assert_eq!(&header[14..22], "000081a4");
        // Name "a\0" ends at 112: already aligned; data "xyz" padded to 116; trailer follows.
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..116], b"xyz\0");
        assert_eq!(&bytes[116..122], MAGIC.as_bytes());
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn build_parses_back() {
        let busybox = vec![0xab; 4097];
        let module = b"\x7fELF module".to_vec();
        let bytes = build(&busybox, &module);
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.ends_with(&[0; 4]) || bytes.len() % 4 == 0);
        let entries = parse(&bytes).unwrap();
        let get = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
        for dir in ["bin", "dev", "lib", "mnt/data", "proc", "sys", "usr/sbin"] {
            let e = get(dir);
            assert!(e.is_dir(), "{e:?}");
            assert_eq!(e.mode & 0o777, 0o755);
        }
        let console = get("dev/console");
        assert!(console.is_char_dev());
        assert_eq!(console.rdev, (5, 1));
        let bb = get("bin/busybox");
        assert!(bb.is_file());
        assert_eq!(bb.mode & 0o777, 0o755);
        assert_eq!(bb.data, busybox);
        let m = get(MODULE_PATH);
        assert_eq!((m.mode & 0o777, &m.data), (0o644, &module));
        let init = get("init");
        assert_eq!(init.mode, S_IFREG | 0o755);
        assert_eq!(init.data, init_script().as_bytes());
        // Parents come before their children; names are unique.
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.name.rsplit_once('/') {
                let p = entries.iter().position(|d| d.name == parent).unwrap();
                assert!(p < i, "{} before {parent}", e.name);
            }
            assert_eq!(entries.iter().filter(|d| d.name == e.name).count(), 1);
        }
        // The same inputs give the same bytes.
        assert_eq!(build(&busybox, &module), bytes);
    }

    #[test]
    fn parse_rejects_damage() {
        let bytes = build(b"bb", b"ko");
        assert!(parse(&bytes[..bytes.len() - 8]).is_err(), "no trailer");
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert!(parse(&bad).unwrap_err().contains("magic"));
        let mut bad = bytes.clone();
        bad[6 + 8 * 6] = b'z';
        assert!(parse(&bad).is_err(), "bad hex");
    }

    #[test]
    fn init_script_mounts_loads_and_loops() {
        let s = init_script();
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} in {s}"));
        // proc before --install (busybox finds itself through /proc/self/exe), devtmpfs after.
        assert!(pos("mount -t proc proc /proc") < pos("--install -s"));
        assert!(pos("--install -s") < pos("mount -t devtmpfs devtmpfs /dev"));
        assert!(pos("mount -t sysfs sysfs /sys") < pos("insmod"));
        assert!(s.contains(&format!("insmod /{MODULE_PATH}")));
        // No echo before the ready line, then the loop that answers every line.
        assert!(pos("stty -echo") < pos(READY_LINE));
        assert!(pos(READY_LINE) < pos("while read -r line"));
        assert!(s.contains(&format!("echo \"{DONE_MARKER} $?\"")));
        assert!(s.contains("memtotal_wait()"));
        assert!(s.contains("usleep 2000"));
    }
}
