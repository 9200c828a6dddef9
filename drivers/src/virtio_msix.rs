//! MSI-X vectors of a virtio-pci device: which table entry signals a configuration change
//! and which signals the queue (virtio 1.2, 4.1.4.3 and 4.1.5.1.2).
//!
//! virtio-drivers' `PciTransport` never writes `msix_config` or `queue_msix_vector`, so
//! this module writes them through its own view of the common configuration structure
//! (found by the vendor capability with `cfg_type` 1, like the transport finds it). The
//! spec's order, which the caller keeps: reset and feature negotiation first (a reset sets
//! every vector to NO_VECTOR), then `msix_config`, then for each queue select it and write
//! `queue_msix_vector` **before** `queue_enable`, then DRIVER_OK. The device answers a
//! refused mapping by reading back NO_VECTOR (0xffff); [`outcome`] turns the read-back
//! values into the decision: MSI-X, or INTx for the whole device (with MSI-X enabled and
//! a vector refused, that event would never be signalled at all).
//!
//! [`Vectors`] is written from the transport's `queue_set` hook and records what it read
//! back in atomics, so the prober can ask after the driver took the transport.

use core::sync::atomic::{AtomicU32, Ordering};

use hotmem_arch::mmio::Mmio;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::ReadWrite;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

use crate::pci::msix::{capabilities, MsixError};

/// "No vector": written to unmap, read back when the device refused a mapping.
pub const NO_VECTOR: u16 = 0xffff;
const CAP_VENDOR: u8 = 0x09;
const COMMON_CFG: u8 = 1;

register_structs! {
    /// The head of `struct virtio_pci_common_cfg` (virtio 1.2, 4.1.4.3).
    CommonCfg {
        (0x00 => _features),
        (0x10 => msix_config: ReadWrite<u16>),
        (0x12 => _num_queues),
        (0x16 => queue_select: ReadWrite<u16>),
        (0x18 => _queue_size),
        (0x1a => queue_msix_vector: ReadWrite<u16>),
        (0x1c => @END),
    }
}

/// Where the common configuration is: (BAR, offset in it).
pub fn find_common_cfg(
    access: &impl ConfigurationAccess,
    df: DeviceFunction,
) -> Result<Option<(u8, u32)>, MsixError> {
    for (off, id) in capabilities(access, df)? {
        if id != CAP_VENDOR || (access.read_word(df, off) >> 24) as u8 != COMMON_CFG {
            continue;
        }
        let bar = access.read_word(df, off + 4) as u8;
        return Ok((bar <= 5).then(|| (bar, access.read_word(df, off + 8))));
    }
    Ok(None)
}

/// The table entries a device's events use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorPlan {
    /// For configuration changes (`msix_config`).
    pub config: u16,
    /// For the (one) queue (`queue_msix_vector`).
    pub queue: u16,
}

/// What the device did with the vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not written yet (no queue was set up).
    Unset,
    /// Both read back as written: the device signals through MSI-X.
    Msix,
    /// The device refused one (read back these values): use INTx.
    Refused {
        /// `msix_config` as read back.
        config: u16,
        /// `queue_msix_vector` as read back.
        queue: u16,
    },
}

/// The decision from what was written and what was read back.
pub fn outcome(plan: VectorPlan, config_read: u16, queue_read: u16) -> Outcome {
    match (config_read, queue_read) {
        (c, q) if c == plan.config && q == plan.queue && c != NO_VECTOR && q != NO_VECTOR => {
            Outcome::Msix
        }
        (config, queue) => Outcome::Refused { config, queue },
    }
}

/// Programs a device's vectors (see the module doc) and remembers what it read back.
pub struct Vectors {
    regs: Mmio<CommonCfg>,
    plan: VectorPlan,
    /// The read-back values, `config << 16 | queue`; `u32::MAX` while unset.
    read: AtomicU32,
}

// SAFETY: `Vectors` is an MMIO address and atomics; the device registers may be written
// from any CPU, and the caller orders the writes (the driver owns the transport).
unsafe impl Send for Vectors {}
// SAFETY: as above; shared references only read the atomics or write the registers in
// the driver's single-threaded initialisation.
unsafe impl Sync for Vectors {}

impl Vectors {
    /// The common configuration mapped at `va`, to be given `plan`.
    ///
    /// # Safety
    /// `va` must be a live Device mapping of the device's common configuration structure
    /// (at least 0x1c bytes), mapped for as long as the value is used.
    pub unsafe fn new(va: usize, plan: VectorPlan) -> Vectors {
        Vectors {
            // SAFETY: the caller's contract.
            regs: unsafe { Mmio::new(va) },
            plan,
            read: AtomicU32::new(u32::MAX),
        }
    }

    /// Writes `msix_config` and `queue`'s `queue_msix_vector`, reads both back. Call after
    /// feature negotiation and before the queue is enabled.
    pub fn program(&self, queue: u16) -> Outcome {
        self.regs.msix_config.set(self.plan.config);
        let config = self.regs.msix_config.get();
        self.regs.queue_select.set(queue);
        self.regs.queue_msix_vector.set(self.plan.queue);
        let q = self.regs.queue_msix_vector.get();
        self.read
            .store(u32::from(config) << 16 | u32::from(q), Ordering::Release);
        outcome(self.plan, config, q)
    }

    /// What [`Vectors::program`] last read back.
    pub fn outcome(&self) -> Outcome {
        match self.read.load(Ordering::Acquire) {
            u32::MAX => Outcome::Unset,
            v => outcome(self.plan, (v >> 16) as u16, v as u16),
        }
    }

    /// The plan given to [`Vectors::new`].
    pub fn plan(&self) -> VectorPlan {
        self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: VectorPlan = VectorPlan {
        config: 0,
        queue: 1,
    };

    #[test]
    fn no_vector_means_intx() {
        assert_eq!(outcome(PLAN, 0, 1), Outcome::Msix);
        assert_eq!(
            outcome(PLAN, NO_VECTOR, 1),
            Outcome::Refused {
                config: NO_VECTOR,
                queue: 1
            }
        );
        assert_eq!(
            outcome(PLAN, 0, NO_VECTOR),
            Outcome::Refused {
                config: 0,
                queue: NO_VECTOR
            }
        );
        // A device that answers another vector than asked is not trusted either.
        assert_eq!(
            outcome(PLAN, 1, 1),
            Outcome::Refused {
                config: 1,
                queue: 1
            }
        );
        let both = VectorPlan {
            config: NO_VECTOR,
            queue: NO_VECTOR,
        };
        assert!(matches!(
            outcome(both, NO_VECTOR, NO_VECTOR),
            Outcome::Refused { .. }
        ));
    }

    #[test]
    fn program_reads_back_through_the_registers() {
        // A fake common configuration in memory: it keeps what is written.
        let mut cfg = [0u16; 0x1c / 2];
        // SAFETY: `cfg` is 0x1c bytes that live for the test, accessed only through `v`.
        let v = unsafe { Vectors::new(cfg.as_mut_ptr() as usize, PLAN) };
        assert_eq!(v.outcome(), Outcome::Unset);
        assert_eq!(v.program(0), Outcome::Msix);
        assert_eq!(v.outcome(), Outcome::Msix);
        assert_eq!((cfg[0x10 / 2], cfg[0x16 / 2], cfg[0x1a / 2]), (0, 0, 1));
    }
}
