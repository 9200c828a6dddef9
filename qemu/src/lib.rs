//! Host side of hotmem: start the kernel under QEMU `virt`, drive its shell, ask QMP for the truth.
//!
//! The crate is a library first; the integration tests in `tests/` and the CLI in `main.rs` (and
//! later the stress runner and benchmarks of issue 6) are thin users of it.
//!
//! - [`machine`]: a [`Machine`] describes the board (CPU model, GIC, EL2 entry, CPUs, RAM or NUMA
//!   nodes, virtio-mem devices, bootargs) and renders QEMU's command line. The default is `make
//!   run`'s machine.
//! - [`instance`]: [`Qemu::launch`] spawns QEMU with the console on its stdio and QMP on a unix
//!   socket in a private temporary directory; dropping it kills QEMU. [`Qemu::report`] is what a
//!   failing test prints (command line, stderr, QMP transcript, console tail).
//! - [`console`]: a [`Console`] records everything the guest prints and runs shell commands
//!   ([`Console::command`] returns the lines between the echo and the next `hotmem> ` prompt).
//!   Waits fail at once on a `PANIC:` line or when QEMU exits; nothing waits for a timeout to
//!   learn of a crash.
//! - [`qmp`]: a [`Qmp`] client over the `qapi` crate, with a transcript and deadlines.
//! - [`record`]: `key=value` status records.
//! - [`deadline`]: every wait takes a [`Deadline`] (or a `Duration` from now).
//! - [`stress`]: the seeded stress runner behind `hotmem-qemu stress` and `make stress`.
//!
//! Typical use:
//! ```no_run
//! use hotmem_qemu::{Machine, Qemu};
//! use std::time::Duration;
//! let mut vm = Qemu::launch(&Machine::default().smp(4))?;
//! vm.wait_for_boot(Duration::from_secs(60))?;
//! let mem = vm.console().command("mem", Duration::from_secs(20))?.records()?;
//! let base = vm.qmp().memory_size_summary(Duration::from_secs(5))?.base_bytes;
//! vm.poweroff(Duration::from_secs(20))?;
//! # let _ = (mem, base);
//! # Ok::<(), hotmem_qemu::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod bench;
pub mod console;
pub mod deadline;
pub mod error;
pub mod guest;
pub mod instance;
pub mod interactive;
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
pub use machine::{format_size, parse_size, Gic, Machine, NumaNode, VirtioMem, GIB, KIB, MIB};
pub use qmp::{MemorySummary, Qmp, VirtioMemInfo};
pub use record::{parse_records, Record};
