//! Arm PL011 UART (Arm DDI 0183G): polled transmit, interrupt-driven receive.
//!
//! The kernel maps the UART, calls [`Pl011::init`], registers an IRQ handler that drains the
//! receive FIFO with [`Pl011::read_byte`] and clears the interrupt with
//! [`Pl011::ack_rx_interrupt`].

use hotmem_arch::mmio::Mmio;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_bitfields! {u32,
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    LCR_H [
        WLEN OFFSET(5) NUMBITS(2) [EightBit = 0b11],
        FEN OFFSET(4) NUMBITS(1) []
    ],
    CR [
        RXE OFFSET(9) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) []
    ],
    INT [
        /// Receive timeout.
        RT OFFSET(6) NUMBITS(1) [],
        /// Receive.
        RX OFFSET(4) NUMBITS(1) []
    ]
}

register_structs! {
    /// The PL011 register block (DDI 0183G, 3.2 "Summary of registers"), up to UARTICR.
    pub Pl011Regs {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => rsr: ReadWrite<u32>),
        (0x08 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x24 => ibrd: ReadWrite<u32>),
        (0x28 => fbrd: ReadWrite<u32>),
        (0x2c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x30 => cr: ReadWrite<u32, CR::Register>),
        (0x34 => ifls: ReadWrite<u32>),
        (0x38 => imsc: ReadWrite<u32, INT::Register>),
        (0x3c => ris: ReadOnly<u32>),
        (0x40 => mis: ReadOnly<u32>),
        (0x44 => icr: WriteOnly<u32, INT::Register>),
        (0x48 => @END),
    }
}

/// One PL011 through its register mapping; all access is through `&self` (the registers
/// themselves are the state).
pub struct Pl011 {
    regs: Mmio<Pl011Regs>,
}

impl Pl011 {
    /// # Safety
    /// `base_va` must be a live Device mapping of a PL011's registers (at least 0x48 bytes)
    /// that stays mapped while the driver is used.
    pub const unsafe fn new(base_va: usize) -> Self {
        // SAFETY: forwarded contract.
        let regs = unsafe { Mmio::new(base_va) };
        Pl011 { regs }
    }

    /// 8N1 with FIFOs, receive interrupts (data and timeout) unmasked.
    pub fn init(&self) {
        let r = &self.regs;
        r.cr.set(0);
        r.icr.set(0x7ff);
        // QEMU ignores the divisor; these give 115200 baud at a 24 MHz reference clock.
        r.ibrd.set(13);
        r.fbrd.set(1);
        r.lcr_h.write(LCR_H::WLEN::EightBit + LCR_H::FEN::SET);
        r.ifls.set(0); // RX interrupt at 1/8 full; timeout covers the rest.
        r.imsc.write(INT::RX::SET + INT::RT::SET);
        r.cr.write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// Sends one byte, spinning while the transmit FIFO is full.
    pub fn write_byte(&self, b: u8) {
        while self.regs.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.regs.dr.set(b as u32);
    }

    /// Sends every byte of `s` ([`Pl011::write_byte`] each).
    pub fn write_bytes(&self, s: &[u8]) {
        for &b in s {
            self.write_byte(b);
        }
    }

    /// One received byte, if the FIFO holds any.
    pub fn read_byte(&self) -> Option<u8> {
        if self.regs.fr.is_set(FR::RXFE) {
            None
        } else {
            Some(self.regs.dr.get() as u8)
        }
    }

    /// Clears the receive interrupts (after draining the FIFO).
    pub fn ack_rx_interrupt(&self) {
        self.regs.icr.write(INT::RX::SET + INT::RT::SET);
    }
}
