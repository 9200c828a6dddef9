//! The kernel binary: boot sequence and hardware glue (`kernel/`). On the host this is an
//! empty program so that `cargo test` builds the workspace.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod kernel;

#[cfg(not(target_os = "none"))]
fn main() {}
