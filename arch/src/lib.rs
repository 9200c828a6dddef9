//! aarch64 glue for hotmem: boot, exception vectors, MMU, GIC, generic timer, PSCI.
//!
//! This crate knows the CPU and the interrupt controller; it decides nothing. The kernel
//! (`src/`) calls in with addresses it took from the device tree.
//!
//! Split:
//! - Pure logic that runs under host `cargo test`: [`addr`] (physical and virtual
//!   addresses, half-open physical ranges: the vocabulary of every crate above this one),
//!   [`layout`] (the virtual memory map),
//!   [`pgtable`] (descriptor encoding and the table walker over the `unsafe trait
//!   TableMemory`, table pages named by `TablePa`),
//!   [`esr`] (exception syndrome decoding), [`irq`] (the handler registry), [`lockstat`]
//!   (hold-time statistics of the IRQ-masking locks), [`tlb`] (which broadcast TLB
//!   invalidations cover a range; issuing them is its target-only part), [`its`] (GICv3
//!   ITS command encoding and table sizes; the live ITS, `its::driver`, is target-only),
//!   [`gicv2m`] (the v2m frame's SPI allocator).
//! - Hardware glue, only for `target_os = "none"`: [`boot`] (entry, EL2 -> EL1, first page
//!   tables), [`exception`] (vectors, trap frame, fixup table), [`mmu`] (the live kernel
//!   page table), [`gic`], [`timer`], [`psci`], [`cpu`],
//!   [`context`] (thread context switch), [`uspace`] (per-task TTBR0 address spaces).
//!
//! Contracts the kernel must keep are `unsafe fn`s with a `# Safety` section: the one-time
//! setup others rely on (`mmu::init`, `mmu::set_table_allocator`, `gic::init`), whatever
//! takes an address or an allocator on trust (`mmio::Mmio::new`, `pgtable::TablePa::new`,
//! `uspace::AddressSpace::new`), and the context switch. Every public item is documented
//! (`missing_docs`, which CI's `-D warnings` makes an error).
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod addr;
pub mod esr;
pub mod gicv2m;
pub mod irq;
pub mod its;
pub mod layout;
pub mod lockstat;
pub mod mmio;
pub mod pgtable;
pub mod tlb;

#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod context;
#[cfg(target_os = "none")]
pub mod copy;
#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(target_os = "none")]
pub mod exception;
#[cfg(target_os = "none")]
pub mod gic;
#[cfg(target_os = "none")]
pub mod mmu;
#[cfg(target_os = "none")]
pub mod psci;
#[cfg(target_os = "none")]
pub mod timer;
#[cfg(target_os = "none")]
pub mod uspace;
