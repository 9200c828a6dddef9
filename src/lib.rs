//! hotmem kernel core: policy that runs both in the kernel and under host `cargo test`.
//!
//! Layers point one way: `hotmem-arch` knows the CPU, `hotmem-drivers` knows devices, and
//! this crate decides (device tree interpretation, memory model, shell). Hardware glue
//! that only makes sense on the target lives in the binary (`src/main.rs`, `src/kernel/`).
#![cfg_attr(target_os = "none", no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod console;
#[allow(missing_docs)] // documented separately
pub mod dt;
pub mod inject;
#[allow(missing_docs)] // documented separately
pub mod mm;
pub mod sched;
pub mod shell;
pub mod vmem;
