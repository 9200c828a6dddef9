//! Host side of hotmem: QEMU launcher, QMP client, console client.
