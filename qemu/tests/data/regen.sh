#!/bin/sh
# Regenerates the device trees that qemu/tests/mm.rs boots with `-dtb`.
#
# QEMU adds no DT reservations of its own, but `virt` accepts `-dtb FILE` instead of the tree
# it generates. It then still (hw/arm/boot.c, arm_load_dtb) deletes every /memory@... node and
# re-creates them from -m / -numa, and sets /chosen bootargs (and initrd) from -append; it keeps
# everything else, /memreserve/ and /reserved-memory included. So the file must come from a dump
# of exactly the machine it is used with (same -M, -cpu, -smp, -m, devices: the GIC, PCI and
# virtio-mem nodes and their phandles are taken from the file as is). Checked with QEMU 10.0.2:
# `-M virt,...,dumpdtb=OUT -dtb reserved.dtb` dumps reserved.dtb back unchanged.
#
# - plain.dtb:    the dump of `Machine::default()` (make run's machine), compacted by dtc.
#                 The baseline: the same DTB size as reserved.dtb, so `mem` differs only by the
#                 reservations (QEMU's own tree is padded to 1 MiB, which the kernel reserves).
# - reserved.dtb: reserved.dts = the same dump decompiled, plus
#                   /memreserve/ 0x58000000 0x400000          (4 MiB)
#                   /reserved-memory/hotmem-test@50000000      (16 MiB at 0x5000_0000, no `no-map`:
#                                                              still RAM, still linearly mapped)
#                 reserved.dts is committed; this script rebuilds reserved.dtb from it, and only
#                 rewrites reserved.dts from a fresh dump when given `--redump`.
#
# Needs qemu-system-aarch64 and dtc (Debian: device-tree-compiler). The tests only need the
# committed .dtb files. /chosen rng-seed and kaslr-seed differ on every dump; nothing uses them.
set -eu
cd "$(dirname "$0")"
RAW=$(mktemp)
trap 'rm -f "$RAW"' EXIT

# Machine::default(), as `cargo run -p hotmem-qemu -- args` prints it.
qemu-system-aarch64 -M virt,gic-version=3,dumpdtb="$RAW" -cpu max -smp 2 -m 512M,maxmem=4608M \
    -object memory-backend-ram,id=mem0,size=4G \
    -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=0 -nic none -display none
dtc -q -I dtb -O dtb -o plain.dtb "$RAW"

if [ "${1:-}" = --redump ]; then
    {
        echo '/dts-v1/;'
        echo
        echo '/* Machine::default() dumped by QEMU (see regen.sh) plus two DT reservations. */'
        echo '/memreserve/ 0x58000000 0x400000;'
        dtc -q -I dtb -O dts "$RAW" | sed -e '1d' -e '/^\tchosen {/i\
\treserved-memory {\
\t\t#address-cells = <0x02>;\
\t\t#size-cells = <0x02>;\
\t\tranges;\
\
\t\thotmem-test@50000000 {\
\t\t\treg = <0x00 0x50000000 0x00 0x1000000>;\
\t\t};\
\t};\
'
    } >reserved.dts
fi
dtc -q -I dts -O dtb -o reserved.dtb reserved.dts
