//! aarch64 glue: boot, exception vectors, MMU, GIC, generic timer, PSCI.
#![cfg_attr(target_os = "none", no_std)]
