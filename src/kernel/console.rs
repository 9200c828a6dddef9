//! The console: PL011 output through the screen rules of `hotmem::console`, interrupt-driven
//! input, the shell's line reader, the `log` backend, and the panic-time writer.
//!
//! Every byte written goes through one [`Screen`] under `OUT`: the prompt, the echo, whole
//! lines (`println!` and log lines) and the panic line. The screen decides, from the line
//! being written and whether input is pending in `RX`, whether a whole line prints now, is
//! held until the shell has echoed a line that is already in the ring, or interrupts a half
//! line that a person is typing (written again without the prompt), so a script that sends a
//! whole line sees exactly one prompt per command (the protocol is in the README).
//!
//! The shell's reader ([`read_line`]) takes one byte out of `RX` and echoes it in the same
//! hold of `OUT`, so the screen never sees a byte that was read but not echoed.
//!
//! Lock rules: `OUT` (IRQ-safe) serialises output and holds the screen; `RX` (IRQ-safe) is
//! the receive ring the UART interrupt fills. Order: `OUT` before `RX` (the reader and
//! [`print_line`] ask `RX` whether input is pending while holding `OUT`); the interrupt
//! handler takes `RX` alone. Readers sleep on `RX_WAIT` (a task wait queue) until the
//! interrupt has added bytes, with neither lock held. The scheduler lock may be taken while
//! `OUT` is held, never the reverse.

use core::fmt;
use hotmem::console::{self as screen, Screen, Sink};
use hotmem::shell::{LineEditor, MAX_LINE};
use hotmem_arch::cpu::IrqSpinLock;
use hotmem_drivers::pl011::Pl011;

use super::task::WaitQueue;

static UART: spin::Once<Pl011> = spin::Once::new();
/// Tasks waiting for input (the shell).
static RX_WAIT: WaitQueue = WaitQueue::new();

static OUT: IrqSpinLock<Screen> =
    IrqSpinLock::new(Screen::new()).with_class(hotmem_arch::lock_class!("console"));

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

/// The UART as the screen's sink.
struct Uart<'a>(&'a Pl011);

impl Sink for Uart<'_> {
    fn put(&mut self, b: u8) {
        self.0.write_byte(b);
    }
}

/// Runs `f` on the screen and the UART under `OUT`; `None` before [`init`].
fn with_out<R>(f: impl FnOnce(&mut Screen, &mut Uart) -> R) -> Option<R> {
    let u = UART.get()?;
    let mut out = OUT.lock();
    Some(f(&mut out, &mut Uart(u)))
}

/// Prints one whole line (a CRLF is appended) that nothing can interleave with; it may be
/// held for a moment while the shell echoes input that is already received.
pub fn print_line(args: fmt::Arguments) {
    with_out(|s, u| s.line(u, args, input_pending()));
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::kernel::console::print_line(format_args!($($arg)*)) };
}

/// Opens a shell line: writes the prompt.
pub fn prompt(prompt: &str) {
    with_out(|s, u| s.prompt(u, prompt));
}

/// Reads one line for the shell through `ed`, echoing as it goes (the calling task sleeps
/// until the UART interrupt while the ring is empty). Returns once Enter's CRLF is echoed.
pub fn read_line(ed: &mut LineEditor) -> arrayvec::ArrayString<MAX_LINE> {
    loop {
        // One byte per hold of OUT: take it, echo it, and if the ring is now empty print
        // what was held.
        let step = with_out(|s, u| match take_input() {
            Some((b, pending)) => Some(s.input(u, ed, b, pending)),
            None => {
                s.idle(u);
                None
            }
        });
        // Outer `None`: no byte (or no UART yet): sleep until the interrupt adds one.
        match step.flatten() {
            Some(Some(line)) => return line,
            Some(None) => {}
            None => RX_WAIT.wait_until(|| RX.lock().len > 0),
        }
    }
}

/// Panic-time output: takes the lock if it can, otherwise writes anyway (the holder may
/// be this CPU, interrupted, and will never release it). Never held.
pub fn emergency_line(args: fmt::Arguments) {
    let Some(u) = UART.get() else { return };
    match OUT.try_lock().as_mut() {
        Some(s) => s.emergency_line(&mut Uart(u), args),
        None => screen::emergency_line_unlocked(&mut Uart(u), args),
    }
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

/// The next input byte and whether more are pending, if any.
fn take_input() -> Option<(u8, bool)> {
    let mut rx = RX.lock();
    if rx.len == 0 {
        return None;
    }
    let b = rx.buf[rx.head];
    rx.head = (rx.head + 1) % RX_SIZE;
    rx.len -= 1;
    Some((b, rx.len > 0))
}

/// Whether the UART received bytes the shell has not read yet.
fn input_pending() -> bool {
    RX.lock().len > 0
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
