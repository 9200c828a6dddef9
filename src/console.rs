//! What the console shows, as plain data: the rule that gives a script exactly one prompt per
//! command while log lines arrive from any CPU, task or interrupt handler at any time.
//!
//! The kernel's console (`src/kernel/console.rs`) keeps one [`Screen`] under its output lock
//! and hands it the UART as a [`Sink`]; host tests drive the same code against a `Vec<u8>`.
//! Every byte the console writes goes through here; `\n` is written as CRLF.
//!
//! Model. The screen knows the line being written (the bytes since the last newline) and its
//! mode:
//! - `Output`: no shell line is open (boot, a command running, its output). Whole lines
//!   print at once; they always start at column 0, because nothing else writes half lines.
//! - `Input { prompt_len }`: the shell wrote its prompt ([`Screen::prompt`]) and is reading a
//!   line; the line holds the first `prompt_len` bytes of prompt (0 once the line has been
//!   interrupted, see rule 3), then the echo. Echoing the line's end (the CRLF of Enter)
//!   returns to `Output`.
//!
//! A whole line ([`Screen::line`]: a log line, or any `println!`) follows the first rule that
//! applies:
//! 1. At the start of a line it prints at once.
//! 2. In the middle of a shell line while input is pending (the UART received bytes the shell
//!    has not read yet: a script's line on its way through the line editor) it is *held*. Held
//!    lines are printed, in order, as soon as the shell echoes the line's end (so they come
//!    after the echo and before the command's output) or as soon as the shell finds no more
//!    input pending ([`Screen::idle`], rule 3).
//! 3. In the middle of a shell line with no input pending (a person typing) the half line is
//!    ended with CRLF, the line printed, and what was typed so far written again on a line
//!    of its own *without the prompt*.
//!
//! So the prompt is written exactly once per command line, by [`Screen::prompt`], after the
//! previous command's output: a script that sends a whole line sees its echo, then the
//! command's output (with log lines, which start with `[`, possibly among it), then one
//! prompt. The echo is only ever split (rule 3) when the line reached the UART in pieces with
//! a log line in between; the pieces are the prompt line and each redraw, every one a prefix
//! of the line, each redraw after at least one log line.
//!
//! The reader takes an input byte and echoes it in one step ([`Screen::input`], called in the
//! same hold of the output lock that took the byte out of the receive ring), so rule 2 and 3
//! never see a byte that left the ring but is not yet on the screen: "no input pending" means
//! that everything received is echoed, and a finished line has already had its CRLF echoed.
//!
//! The hold buffer is bounded ([`HOLD_BYTES`]); holding never blocks the writer (log lines
//! come from interrupt handlers). A line that does not fit is dropped and counted, and the
//! count is printed after the held lines as `[WARN] console: N log lines dropped`. Holds are
//! short: they last while the shell reads bytes that are already in the ring.
//!
//! The panic writer ([`Screen::emergency_line`]) never holds: it ends the half line, prints
//! the held lines and its line at once, and leaves the shell line closed (no redraw).

use core::fmt::{self, Write};

use arrayvec::{ArrayString, ArrayVec};

use crate::shell::{Feed, LineEditor, MAX_LINE};

/// Capacity of the hold buffer (held lines with their newlines).
pub const HOLD_BYTES: usize = 4096;
/// How much of the current line the screen remembers for a redraw (prompt, echo, editing).
pub const LINE_BYTES: usize = 256;

/// Where the screen's bytes go: the UART, or a buffer in tests.
pub trait Sink {
    /// Writes one byte.
    fn put(&mut self, b: u8);
}

impl Sink for alloc::vec::Vec<u8> {
    fn put(&mut self, b: u8) {
        self.push(b);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Output,
    Input { prompt_len: usize },
}

/// The console's output state. See the module docs.
pub struct Screen {
    /// The bytes since the last newline.
    line: ArrayVec<u8, LINE_BYTES>,
    /// The line outgrew `line`: it can't be written again.
    lost: bool,
    mode: Mode,
    /// Held lines, each ending in `\n` (written as CRLF when flushed).
    held: ArrayVec<u8, HOLD_BYTES>,
    /// Lines dropped because `held` was full, not yet reported.
    dropped: u64,
}

impl Default for Screen {
    fn default() -> Self {
        Self::new()
    }
}

impl Screen {
    /// An empty screen at the start of a line, no shell line open.
    pub const fn new() -> Screen {
        Screen {
            line: ArrayVec::new_const(),
            lost: false,
            mode: Mode::Output,
            held: ArrayVec::new_const(),
            dropped: 0,
        }
    }

    /// Whether the cursor is at column 0.
    pub fn at_line_start(&self) -> bool {
        self.line.is_empty() && !self.lost
    }

    /// How many lines are held (rule 2).
    pub fn held_lines(&self) -> usize {
        self.held.iter().filter(|&&b| b == b'\n').count()
    }

    /// Opens a shell line: writes `prompt` (after ending a half line, if one is open).
    pub fn prompt(&mut self, out: &mut impl Sink, prompt: &str) {
        if !self.at_line_start() {
            self.raw(out, b"\n");
        }
        self.flush_held(out);
        self.raw(out, prompt.as_bytes());
        self.mode = Mode::Input {
            prompt_len: prompt.len(),
        };
    }

    /// One whole line (CRLF appended) from anywhere; `input_pending` says whether the UART
    /// received bytes the shell has not read yet. Rules 1 to 3 of the module docs.
    pub fn line(&mut self, out: &mut impl Sink, args: fmt::Arguments, input_pending: bool) {
        if self.at_line_start() {
            self.flush_held(out);
            self.write_line(out, args);
        } else if input_pending && matches!(self.mode, Mode::Input { .. }) {
            self.hold(args);
        } else {
            self.interrupt(out, |s, out| s.write_line(out, args));
        }
    }

    /// The shell's reader found no input pending: held lines are printed now (rule 3).
    pub fn idle(&mut self, out: &mut impl Sink) {
        if self.held.is_empty() && self.dropped == 0 {
            return;
        }
        if self.at_line_start() {
            self.flush_held(out);
        } else {
            self.interrupt(out, |s, out| s.flush_held(out));
        }
    }

    /// One step of the shell's reader: `b` was just taken out of the receive ring (in the same
    /// hold of the output lock) and `pending` says whether more bytes wait there. Echoes what
    /// the line editor says; returns the line once Enter's CRLF is echoed.
    pub fn input(
        &mut self,
        out: &mut impl Sink,
        ed: &mut LineEditor,
        b: u8,
        pending: bool,
    ) -> Option<ArrayString<MAX_LINE>> {
        match ed.feed(b) {
            Feed::None => {}
            Feed::Echo(s) => self.raw(out, s.as_bytes()),
            Feed::Line(line) => {
                self.raw(out, b"\n");
                self.mode = Mode::Output;
                self.flush_held(out);
                return Some(line);
            }
        }
        if !pending {
            self.idle(out);
        }
        None
    }

    /// The panic writer: ends the half line, prints the held lines and `args` at once.
    pub fn emergency_line(&mut self, out: &mut impl Sink, args: fmt::Arguments) {
        if !self.at_line_start() {
            self.raw(out, b"\n");
        }
        self.mode = Mode::Output;
        self.flush_held(out);
        self.write_line(out, args);
    }

    /// Writes `s`, `\n` as CRLF, tracking the line.
    fn raw(&mut self, out: &mut impl Sink, s: &[u8]) {
        for &b in s {
            if b == b'\n' {
                out.put(b'\r');
                self.line.clear();
                self.lost = false;
            } else if self.line.try_push(b).is_err() {
                self.lost = true;
            }
            out.put(b);
        }
    }

    fn write_line(&mut self, out: &mut impl Sink, args: fmt::Arguments) {
        let _ = Writer { screen: self, out }.write_fmt(args);
        self.raw(out, b"\n");
    }

    /// Rule 3: ends the half line, runs `print` (whole lines), then writes the typed input
    /// again without the prompt (nothing if the line outgrew what the screen remembers).
    fn interrupt<S: Sink>(&mut self, out: &mut S, print: impl FnOnce(&mut Self, &mut S)) {
        let skip = match self.mode {
            Mode::Input { prompt_len } => prompt_len.min(self.line.len()),
            Mode::Output => 0,
        };
        let redraw: Option<ArrayVec<u8, LINE_BYTES>> =
            (!self.lost).then(|| self.line[skip..].iter().copied().collect());
        self.raw(out, b"\n");
        print(self, out);
        if let Some(r) = redraw {
            self.raw(out, &r);
        }
        if let Mode::Input { .. } = self.mode {
            self.mode = Mode::Input { prompt_len: 0 };
        }
    }

    /// Rule 2: keeps the line for later; a line that does not fit is dropped and counted.
    fn hold(&mut self, args: fmt::Arguments) {
        let mark = self.held.len();
        let fits =
            HoldWriter(&mut self.held).write_fmt(args).is_ok() && self.held.try_push(b'\n').is_ok();
        if !fits {
            self.held.truncate(mark);
            self.dropped += 1;
        }
    }

    /// Prints the held lines and the dropped count; only at the start of a line.
    fn flush_held(&mut self, out: &mut impl Sink) {
        debug_assert!(self.at_line_start());
        put_text(out, &self.held);
        self.held.clear();
        let dropped = core::mem::take(&mut self.dropped);
        if dropped > 0 {
            self.write_line(
                out,
                format_args!("[WARN] console: {dropped} log lines dropped"),
            );
        }
    }
}

/// Formats into the screen (through [`Screen::raw`]).
struct Writer<'a, S: Sink> {
    screen: &'a mut Screen,
    out: &'a mut S,
}

impl<S: Sink> Write for Writer<'_, S> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.screen.raw(self.out, s.as_bytes());
        Ok(())
    }
}

/// Formats into the hold buffer; fails when it is full.
struct HoldWriter<'a>(&'a mut ArrayVec<u8, HOLD_BYTES>);

impl Write for HoldWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0
            .try_extend_from_slice(s.as_bytes())
            .map_err(|_| fmt::Error)
    }
}

/// The panic writer without the output lock (its holder may be this CPU, interrupted, and
/// will never release it): the column is unknown, so a fresh line is started first.
pub fn emergency_line_unlocked(out: &mut impl Sink, args: fmt::Arguments) {
    struct Raw<'a, S>(&'a mut S);
    impl<S: Sink> Write for Raw<'_, S> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            put_text(self.0, s.as_bytes());
            Ok(())
        }
    }
    let mut w = Raw(out);
    let _ = w.write_str("\n");
    let _ = w.write_fmt(args);
    let _ = w.write_str("\n");
}

/// Writes `s` with `\n` as CRLF (no line tracking).
fn put_text(out: &mut impl Sink, s: &[u8]) {
    for &b in s {
        if b == b'\n' {
            out.put(b'\r');
        }
        out.put(b);
    }
}

#[cfg(test)]
mod tests;
