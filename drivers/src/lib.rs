//! Device drivers: PL011 UART, PCI host bridge, virtio-mem.
#![cfg_attr(target_os = "none", no_std)]
