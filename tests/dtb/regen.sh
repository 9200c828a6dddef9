#!/bin/sh
# Regenerates the QEMU device-tree dumps used by the `dt` host tests (tests/dt/).
#
# Made with qemu-system-aarch64 10.0.2 and dtc 1.6.1; a newer QEMU may move things, so
# re-run `cargo test -p hotmem --test dt` after regenerating. QEMU pads every dump to
# 1 MiB (totalsize = 0x100000); `dtc -I dtb -O dtb` rewrites it compactly with the same
# nodes, properties and order, so the committed files stay small. The `/chosen`
# rng-seed and kaslr-seed differ on every run; nothing tests them.
#
# `reserved.dtb` is not a QEMU dump: it is built by dtc from `reserved.dts` (a
# decompiled `default.dtb` plus a /memreserve/ entry and a /reserved-memory node).
set -eu
cd "$(dirname "$0")"
Q=qemu-system-aarch64
RAW=$(mktemp)
trap 'rm -f "$RAW"' EXIT

dump() { # dump NAME MACHINE-OPTS QEMU-ARGS...
    name=$1; machine=$2; shift 2
    $Q -M "virt${machine:+,$machine},dumpdtb=$RAW" "$@"
    dtc -q -I dtb -O dtb -o "$name.dtb" "$RAW"
}

# The configuration the kernel runs in: GICv3 with ITS, 512M RAM, virtio-mem (4G backend).
dump default gic-version=3 -cpu max -smp 2 -m 512M,maxmem=4608M \
    -object memory-backend-ram,id=mem0,size=4G \
    -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=0 -nic none
# GICv2 with the v2m MSI frame.
dump gicv2 gic-version=2 -cpu max -smp 2 -m 512M -nic none
# GICv3 without an ITS: no MSI.
dump gicv3-noits gic-version=3,its=off -cpu max -smp 2 -m 512M -nic none
# EL2 entry: PSCI through smc.
dump virt-el2 gic-version=3,virtualization=on -cpu max -smp 2 -m 512M -nic none
# Smallest machine (default GIC version: 2).
dump a53 "" -cpu cortex-a53 -smp 1 -m 128M -nic none
# Two NUMA nodes, one socket of two CPUs each.
dump numa2 gic-version=3 -cpu max -m 2G -smp 4,sockets=2,cores=2 \
    -object memory-backend-ram,id=r0,size=1G -object memory-backend-ram,id=r1,size=1G \
    -numa node,nodeid=0,cpus=0-1,memdev=r0 -numa node,nodeid=1,cpus=2-3,memdev=r1 -nic none
# 16 GiB of RAM.
dump mem16g gic-version=3 -cpu max -smp 2 -m 16G -nic none
# Secure world: a second, disabled PL011 and disabled secure memory (must be ignored).
dump secure gic-version=3,secure=on -cpu max -smp 2 -m 512M -nic none

dtc -q -I dts -O dtb -o reserved.dtb reserved.dts
dtc -q -I dts -O dtb -o edge.dtb edge.dts
