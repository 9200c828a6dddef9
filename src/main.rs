//! The kernel binary. On the host this is an empty program so that `cargo test` builds.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}
