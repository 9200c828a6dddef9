//! Host side of hotmem: start the kernel under QEMU `virt`, drive its shell, ask QMP for the truth.
//!
//! The crate is a library first; the integration tests in `tests/` and the CLI in `main.rs` are
//! thin users of it. Its floors run one way: a module uses only modules of its own floor or of
//! the floors above it, and no two modules use each other.
//!
//! 1. Plumbing: [`deadline`] (every wait takes a [`Deadline`], or a `Duration` from now),
//!    [`error`] (one [`Error`] per way a launch, a wait or a QMP command fails), [`record`]
//!    (`key=value` status records), [`stats`] (median, min, max).
//! 2. The machine: [`machine`] (a [`Machine`] describes the board: CPU model, GIC, EL2 entry,
//!    CPUs, RAM or NUMA nodes, virtio-mem devices, bootargs, and renders QEMU's command line;
//!    the default is `make run`'s machine).
//! 3. Talking to QEMU: [`console`] (a [`Console`] records everything the guest prints and runs
//!    shell commands; waits fail at once on a `PANIC:` line or when QEMU exits), [`qmp`] (a
//!    [`Qmp`] client with a transcript and deadlines), [`instance`] ([`Qemu::launch`] spawns QEMU
//!    with the console on its stdio and QMP on a private socket; dropping it kills QEMU;
//!    [`Qemu::report`] is what a failing test prints), [`interactive`] (the same machine on this
//!    terminal, `hotmem-qemu run`, behind `make run` and `make debug`), [`libvirt`] (the same
//!    kernel as a libvirt domain: the daemons, `qemu/libvirt/hotmem.xml`, `virsh` operations and
//!    events, the console on the domain's serial socket; behind `make libvirt-run`).
//! 4. The guest's view: [`guest`] (what `mem`, `vmem` and the hog print and the resize log line,
//!    as types; the actions resize, hog start/stop, wait for a resize or a reboot).
//! 5. Users: [`mod@bench`] (the timings of `hotmem-qemu bench`: scenarios, measuring loop, table,
//!    JSON), [`stress`] (the seeded stress runner of `hotmem-qemu stress`: scenarios, runner,
//!    agreement oracle, failure reports) and [`plot`] (the SVG plot of a stress run). Neither
//!    bench nor stress uses the other.
//!
//! Typical use:
//! ```no_run
//! use hotmem_qemu::{Machine, Qemu};
//! use std::time::Duration;
//! let mut vm = Qemu::launch(&Machine::default().smp(4))?;
//! vm.wait_for_boot(Duration::from_secs(60))?;
//! let mem = hotmem_qemu::guest::mem(vm.console(), Duration::from_secs(20))?;
//! let base = vm.qmp().memory_size_summary(Duration::from_secs(5))?.base_bytes;
//! vm.poweroff(Duration::from_secs(20))?;
//! assert_eq!(mem.total()?.present_kib * 1024, base);
//! # Ok::<(), hotmem_qemu::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod console;
pub mod deadline;
pub mod error;
pub mod guest;
pub mod instance;
pub mod interactive;
pub mod libvirt;
pub mod machine;
pub mod plot;
pub mod qmp;
pub mod record;
pub mod stats;
pub mod stress;

pub use console::{CommandOutput, Console, PANIC_MARKER, PROMPT};
pub use deadline::Deadline;
pub use error::{Error, Result};
pub use instance::{default_image, workspace_root, LaunchOptions, Qemu};
pub use machine::{
    format_size, parse_size, Backend, Gic, Machine, NumaNode, Prop, RootPort, VirtioMem, GIB, KIB,
    MIB,
};
pub use qmp::{MemorySummary, Qmp, VirtioMemInfo};
pub use record::{parse_records, Record};
