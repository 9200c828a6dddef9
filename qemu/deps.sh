#!/usr/bin/env bash
# Installs what building, running and testing hotmem needs. Idempotent and quick when satisfied.
#  - qemu-system-aarch64 >= 10.0 (Debian bookworm-backports' qemu-system-arm when missing or older)
#  - llvm-objcopy (Debian's llvm) to turn the kernel ELF into a raw arm64 Image
#  - gdb-multiarch for `make debug`
#  - the aarch64-unknown-none Rust target, rustfmt and clippy
#  - libvirt (daemon, QEMU driver, virsh; bookworm-backports' 11.x) for `make libvirt-run` and the
#    libvirt test, when virsh, libvirtd, virtlogd or the QEMU driver is missing
set -euo pipefail

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "deps: need root for apt-get (run as root or install $*)" >&2; exit 1; fi; }

qemu_ok() {
    command -v qemu-system-aarch64 >/dev/null 2>&1 || return 1
    local v major
    v=$(qemu-system-aarch64 --version | head -n1 | sed -E 's/.*version ([0-9]+)\..*/\1/')
    major=${v:-0}
    [ "$major" -ge 10 ] 2>/dev/null
}

apt_updated=0
apt_update() { if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi; }

# On bookworm, newer packages come from bookworm-backports: adds that source once (same mirror as
# the existing Debian sources) and sets $target to the apt-get option that selects it (empty
# elsewhere).
target=()
backports() {
    target=()
    . /etc/os-release
    [ "${VERSION_CODENAME:-}" = "bookworm" ] || return 0
    local src=/etc/apt/sources.list.d/hotmem-backports.sources uri
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        uri=$(grep -rhoE '^URIs: *\S+/debian/?$' /etc/apt/sources.list.d/ 2>/dev/null | head -n1 | awk '{print $2}')
        [ -n "$uri" ] || uri=$(grep -hoE '^deb +\S+/debian/? ' /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}')
        [ -n "$uri" ] || uri="http://deb.debian.org/debian"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" > "$src"
        apt_updated=0
    fi
    target=(-t bookworm-backports)
}

if ! qemu_ok; then
    need_root qemu-system-arm
    backports
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${target[@]}" qemu-system-arm >/dev/null
    qemu_ok || { echo "deps: qemu-system-aarch64 >= 10 not available" >&2; exit 1; }
fi

libvirt_ok() {
    command -v virsh >/dev/null 2>&1 && command -v libvirtd >/dev/null 2>&1 \
        && command -v virtlogd >/dev/null 2>&1 || return 1
    # The QEMU driver is a loadable module of libvirtd, not a command.
    ! command -v dpkg-query >/dev/null 2>&1 \
        || dpkg-query -W -f='${Status}' libvirt-daemon-driver-qemu 2>/dev/null | grep -q 'ok installed'
}

if ! libvirt_ok; then
    need_root libvirt-daemon-driver-qemu libvirt-clients libvirt-daemon
    backports
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${target[@]}" --no-install-recommends \
        libvirt-daemon-driver-qemu libvirt-clients libvirt-daemon >/dev/null
    libvirt_ok || { echo "deps: libvirt (virsh, libvirtd, virtlogd, QEMU driver) not available" >&2; exit 1; }
fi

missing=()
command -v llvm-objcopy >/dev/null 2>&1 || missing+=(llvm)
command -v gdb-multiarch >/dev/null 2>&1 || missing+=(gdb-multiarch)
if [ ${#missing[@]} -gt 0 ]; then
    need_root "${missing[@]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx aarch64-unknown-none || rustup target add aarch64-unknown-none
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi
