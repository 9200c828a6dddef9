//! The console: PL011 output with whole-line atomicity, interrupt-driven input, the `log`
//! backend, and the panic-time writer.
//!
//! Lock rules: `OUT` (IRQ-safe) serialises output and remembers the line being written (the
//! bytes since the last newline). A log record printed while a shell line is half written
//! (the prompt or echoed input) first ends that line, prints itself, then writes the half
//! line again, so log lines always start at column 0, never split a command's output line,
//! and the prompt with what the user typed so far stays whole on its own line. `RX`
//! (IRQ-safe) is the receive ring the UART interrupt fills; readers sleep on `RX_WAIT` (a
//! task wait queue) until the interrupt has added bytes. Both are leaf locks; the scheduler
//! lock may be taken while `OUT` is held, never the reverse.

use core::fmt::{self, Write};
use hotmem_arch::cpu::IrqSpinLock;
use hotmem_drivers::pl011::Pl011;

use super::task::WaitQueue;

static UART: spin::Once<Pl011> = spin::Once::new();
/// Tasks waiting for input (the shell).
static RX_WAIT: WaitQueue = WaitQueue::new();

/// The line being written: the bytes since the last newline (prompt and echo).
struct Out {
    partial: arrayvec::ArrayVec<u8, 256>,
    /// The line outgrew `partial`: it can't be written again.
    lost: bool,
}

impl Out {
    fn at_line_start(&self) -> bool {
        self.partial.is_empty() && !self.lost
    }
}

static OUT: IrqSpinLock<Out> = IrqSpinLock::new(Out {
    partial: arrayvec::ArrayVec::new_const(),
    lost: false,
})
.with_class(hotmem_arch::lock_class!("console"));

const RX_SIZE: usize = 1024;
struct Rx {
    buf: [u8; RX_SIZE],
    head: usize,
    len: usize,
}
static RX: IrqSpinLock<Rx> = IrqSpinLock::new(Rx {
    buf: [0; RX_SIZE],
    head: 0,
    len: 0,
})
.with_class(hotmem_arch::lock_class!("console_rx"));

/// Installs the UART (already mapped at `base_va`).
///
/// # Safety
/// `base_va` must be a live Device mapping of a PL011 that stays mapped forever.
pub unsafe fn init(base_va: usize) {
    UART.call_once(|| {
        // SAFETY: forwarded contract.
        let u = unsafe { Pl011::new(base_va) };
        u.init();
        u
    });
}

/// Writes through the UART translating `\n` to CRLF and tracking the current line.
struct Writer<'a>(&'a Pl011, &'a mut Out);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.write_byte(b'\r');
                self.1.partial.clear();
                self.1.lost = false;
            } else if self.1.partial.try_push(b).is_err() {
                self.1.lost = true;
            }
            self.0.write_byte(b);
        }
        Ok(())
    }
}

impl Writer<'_> {
    /// Writes `args` as a line of its own, then the interrupted half line again.
    fn whole_line(&mut self, args: fmt::Arguments) {
        let half = (!self.1.lost).then(|| self.1.partial.clone());
        if !self.1.at_line_start() {
            let _ = self.write_str("\n");
        }
        let _ = self.write_fmt(args);
        let _ = self.write_str("\n");
        if let Some(half) = half.filter(|h| !h.is_empty()) {
            for &b in &half {
                self.0.write_byte(b);
            }
            self.1.partial = half;
        }
    }
}

fn with_out(f: impl FnOnce(&mut Writer)) {
    let Some(u) = UART.get() else { return };
    let mut out = OUT.lock();
    let mut w = Writer(u, &mut out);
    f(&mut w);
}

/// Prints text as is (used for the prompt and echo).
pub fn print(args: fmt::Arguments) {
    with_out(|w| {
        let _ = w.write_fmt(args);
    });
}

/// Prints one whole line (a CRLF is appended) that nothing can interleave with.
pub fn print_line(args: fmt::Arguments) {
    with_out(|w| w.whole_line(args));
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::kernel::console::print_line(format_args!($($arg)*)) };
}

/// Panic-time output: takes the lock if it can, otherwise writes anyway (the holder may
/// be this CPU, interrupted, and will never release it).
pub fn emergency_line(args: fmt::Arguments) {
    let Some(u) = UART.get() else { return };
    let mut guard = OUT.try_lock();
    // Without the lock we cannot know the column: start a fresh line to be safe.
    let mut unknown = Out {
        partial: arrayvec::ArrayVec::new(),
        lost: true,
    };
    let out = match guard.as_mut() {
        Some(g) => &mut **g,
        None => &mut unknown,
    };
    let mut w = Writer(u, out);
    if !w.1.at_line_start() {
        let _ = w.write_str("\n");
    }
    let _ = w.write_fmt(args);
    let _ = w.write_str("\n");
}

/// UART receive interrupt: drain the FIFO into the ring (oldest bytes are kept when full).
pub fn rx_interrupt(_intid: u32) {
    let Some(u) = UART.get() else { return };
    let mut rx = RX.lock();
    // Acknowledge first, then drain: a byte that arrives after the drain raises the
    // interrupt again instead of being cleared unseen.
    u.ack_rx_interrupt();
    while let Some(b) = u.read_byte() {
        if rx.len < RX_SIZE {
            let i = (rx.head + rx.len) % RX_SIZE;
            rx.buf[i] = b;
            rx.len += 1;
        }
    }
    let any = rx.len > 0;
    drop(rx);
    if any {
        RX_WAIT.wake_all();
    }
}

/// Next input byte, if any.
pub fn try_read() -> Option<u8> {
    let mut rx = RX.lock();
    if rx.len == 0 {
        return None;
    }
    let b = rx.buf[rx.head];
    rx.head = (rx.head + 1) % RX_SIZE;
    rx.len -= 1;
    Some(b)
}

/// Waits for the next input byte (the calling task sleeps until the UART interrupt).
pub fn read_byte() -> u8 {
    loop {
        if let Some(b) = try_read() {
            return b;
        }
        RX_WAIT.wait_until(|| RX.lock().len > 0);
    }
}

/// The `log` backend: `[LEVEL] message` lines.
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            print_line(format_args!("[{}] {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init_logger(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
