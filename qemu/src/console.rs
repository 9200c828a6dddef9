//! Console client: the guest's serial console on QEMU's stdio, as a transcript plus a shell driver.
//!
//! A reader thread appends everything the guest prints to one shared transcript and wakes waiters
//! through a condvar; it marks end of file when QEMU closes the pipe (QEMU exited). The
//! [`Console`] keeps a cursor into that transcript: each successful wait consumes text up to the
//! end of what it matched, so consecutive commands never see each other's output.
//!
//! Every wait ([`Console::wait_for`], [`Console::command`], ...) takes a deadline and fails *at
//! once*, not at the deadline, when
//! - the transcript anywhere shows a line containing `PANIC:`, unless the caller announced it with
//!   [`Console::expect_panic`] (the `fault` test), or
//! - the console reached end of file (QEMU exited).
//!
//! The console protocol it relies on (README, "Console protocol"), and checks: the shell writes
//! exactly one `hotmem> ` prompt per command line, at the start of a line, after the previous
//! command's output; it echoes input; lines end in CRLF; log lines start with `[` and never split
//! an output line. A log line that interrupts a half-typed line ends it and is followed by what was
//! typed so far, written again without the prompt, so the echo of a line may come in pieces, each
//! a prefix of the line, each after a log line. [`Console::command`] sends the command and `\r`,
//! finds its echo (after applying backspace/DEL editing and dropping ANSI escapes), and returns
//! the lines between it and the next prompt, with log lines split off. It is strict: a prompt
//! between the echo and the output, a second prompt after the one the command was typed at, or
//! an echo that is not the command is an [`Error::Protocol`].

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::record::{parse_records, Record};

/// The shell prompt.
pub const PROMPT: &str = "hotmem> ";
/// What the kernel's panic handler prints at the start of its last line.
pub const PANIC_MARKER: &str = "PANIC:";
/// How long a wait that saw `PANIC:` waits for the rest of that line before failing.
const PANIC_LINE_GRACE: Duration = Duration::from_millis(500);

struct State {
    text: String,
    eof: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    /// Copy guest output to our stdout as it arrives (the CLI's live console).
    echo: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases `st` and sleeps until the reader thread appends text or reaches end of file, for
    /// at most `left`; returns the state locked again. Like [`Shared::lock`] it ignores
    /// poisoning: the reader holds no invariant across a panic.
    fn wait<'a>(&'a self, st: MutexGuard<'a, State>, left: Duration) -> MutexGuard<'a, State> {
        self.cond
            .wait_timeout(st, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }
}

/// What one shell command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Output lines, without CRLF and without log lines.
    pub lines: Vec<String>,
    /// Log lines (starting with `[`) that arrived between the echo and the prompt.
    pub logs: Vec<String>,
}

impl CommandOutput {
    /// Parses every output line as a `key=value` record.
    pub fn records(&self) -> Result<Vec<Record>> {
        parse_records(&self.lines)
    }

    /// Output lines joined with `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// The guest console. See the module docs.
pub struct Console {
    input: Box<dyn Write + Send>,
    shared: Arc<Shared>,
    cursor: usize,
    panic_expected: bool,
}

impl Console {
    /// Starts a reader thread on `output` (the guest's console output) and sends input to
    /// `input`. QEMU's stdout and stdin in practice; anything in tests.
    pub fn new(output: impl Read + Send + 'static, input: impl Write + Send + 'static) -> Console {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                text: String::new(),
                eof: false,
            }),
            cond: Condvar::new(),
            echo: AtomicBool::new(false),
        });
        let reader_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("hotmem-console".into())
            .spawn(move || read_loop(output, &reader_shared))
            .expect("spawn console reader thread");
        Console {
            input: Box::new(input),
            shared,
            cursor: 0,
            panic_expected: false,
        }
    }

    /// Copies guest output to this process's stdout as it arrives (for the CLI).
    pub fn set_echo(&self, on: bool) {
        self.shared.echo.store(on, Ordering::Relaxed);
    }

    /// Announces that a `PANIC:` line is expected, so waits do not fail on it.
    pub fn expect_panic(&mut self, expected: bool) {
        self.panic_expected = expected;
    }

    /// Everything the guest printed so far.
    pub fn transcript(&self) -> String {
        self.shared.lock().text.clone()
    }

    /// The last `lines` lines of the transcript.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.transcript();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Byte offset up to which waits have consumed the transcript.
    pub fn position(&self) -> usize {
        self.cursor
    }

    /// Transcript text from byte offset `position` (from [`Console::position`]) to now.
    pub fn text_since(&self, position: usize) -> String {
        let st = self.shared.lock();
        st.text.get(position..).unwrap_or_default().to_string()
    }

    /// The first line containing `PANIC:`, if any.
    pub fn panic_line(&self) -> Option<String> {
        find_panic_line(&self.shared.lock().text)
    }

    /// Whether QEMU closed the console (it exited).
    pub fn closed(&self) -> bool {
        self.shared.lock().eof
    }

    /// Sends raw bytes to the guest.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let res = self
            .input
            .write_all(bytes)
            .and_then(|()| self.input.flush());
        res.map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Error::QemuExited {
                    what: format!("console input {:?}", String::from_utf8_lossy(bytes)),
                    status: None,
                    stderr: String::new(),
                }
            } else {
                Error::io("writing to the guest console", e)
            }
        })
    }

    /// Waits until `pattern` appears after the cursor; returns the text up to and including it and
    /// moves the cursor past it.
    pub fn wait_for(&mut self, pattern: &str, deadline: impl Into<Deadline>) -> Result<String> {
        self.wait_until(
            &format!("{pattern:?} on the console"),
            deadline.into(),
            |text| {
                text.find(pattern).map(|at| {
                    let end = at + pattern.len();
                    (end, text[..end].to_string())
                })
            },
        )
    }

    /// Waits for the shell prompt (e.g. after boot); returns what came before it.
    pub fn wait_for_prompt(&mut self, deadline: impl Into<Deadline>) -> Result<String> {
        self.wait_for(PROMPT, deadline)
    }

    /// Runs one shell command: sends `cmd` and `\r`, returns the lines between the echoed command
    /// and the next prompt. The prompt the command is typed at must already be consumed or still
    /// unread after the cursor; both work. Fails on output that breaks the protocol (see the
    /// module docs).
    pub fn command(&mut self, cmd: &str, deadline: impl Into<Deadline>) -> Result<CommandOutput> {
        let deadline = deadline.into();
        let prompt_consumed = self.shared.lock().text[..self.cursor].ends_with(PROMPT);
        self.send(format!("{cmd}\r").as_bytes())?;
        let typed = render(cmd);
        let expected = typed.trim_end();
        self.wait_until(&format!("the output of `{expected}`"), deadline, |text| {
            parse_command_output(text, &typed, prompt_consumed)
        })?
    }

    /// The core wait: `scan` looks at the unconsumed text and returns how much it consumed and a
    /// value once it is satisfied.
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        deadline: Deadline,
        mut scan: impl FnMut(&str) -> Option<(usize, T)>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut deadline = deadline;
        let mut st = self.shared.lock();
        loop {
            if !self.panic_expected {
                if let Some((line, complete)) = find_panic(&st.text) {
                    // Fail now, but let the rest of the panic line (message and location)
                    // arrive first, for at most PANIC_LINE_GRACE.
                    let grace = Deadline::after(PANIC_LINE_GRACE);
                    if complete || st.eof || deadline.min(grace).expired() {
                        return Err(Error::GuestPanic {
                            what: what.to_string(),
                            line,
                        });
                    }
                    deadline = deadline.min(grace);
                }
            }
            if let Some((consumed, value)) = scan(&st.text[self.cursor..]) {
                self.cursor += consumed;
                return Ok(value);
            }
            if st.eof {
                return Err(Error::QemuExited {
                    what: what.to_string(),
                    status: None,
                    stderr: String::new(),
                });
            }
            let Some(left) = deadline.remaining() else {
                if let Some((line, _)) = find_panic(&st.text).filter(|_| !self.panic_expected) {
                    return Err(Error::GuestPanic {
                        what: what.to_string(),
                        line,
                    });
                }
                return Err(Error::Timeout {
                    what: what.to_string(),
                    waited: started.elapsed(),
                });
            };
            st = self.shared.wait(st, left);
        }
    }

    /// Waits until the console is closed (QEMU exited), so the transcript is complete.
    pub fn wait_closed(&mut self, deadline: impl Into<Deadline>) -> Result<()> {
        let deadline = deadline.into();
        let started = Instant::now();
        let mut st = self.shared.lock();
        while !st.eof {
            let Some(left) = deadline.remaining() else {
                return Err(Error::Timeout {
                    what: "the console to close".into(),
                    waited: started.elapsed(),
                });
            };
            st = self.shared.wait(st, left);
        }
        Ok(())
    }
}

fn read_loop(mut output: impl Read, shared: &Shared) {
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match output.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shared.echo.load(Ordering::Relaxed) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
        pending.extend_from_slice(&buf[..n]);
        let decoded = decode_utf8(&mut pending);
        let mut st = shared.lock();
        st.text.push_str(&decoded);
        drop(st);
        shared.cond.notify_all();
    }
    let mut st = shared.lock();
    if !pending.is_empty() {
        let rest = String::from_utf8_lossy(&pending).into_owned();
        st.text.push_str(&rest);
    }
    st.eof = true;
    drop(st);
    shared.cond.notify_all();
}

/// Decodes the complete UTF-8 prefix of `pending` (invalid bytes become U+FFFD) and leaves an
/// incomplete trailing sequence in `pending` for the next read.
fn decode_utf8(pending: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = pending;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // `good` was just validated, so this never falls back to the default.
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                match e.error_len() {
                    Some(len) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &bad[len..];
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.to_vec();
    *pending = keep;
    out
}

/// The whole line containing the first `PANIC:` in `text`.
fn find_panic_line(text: &str) -> Option<String> {
    find_panic(text).map(|(line, _)| line)
}

/// The line containing the first `PANIC:` in `text`, and whether its end has arrived.
fn find_panic(text: &str) -> Option<(String, bool)> {
    let at = text.find(PANIC_MARKER)?;
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map(|i| at + i);
    let line = &text[start..end.unwrap_or(text.len())];
    Some((line.trim_end_matches('\r').to_string(), end.is_some()))
}

/// What a terminal shows for `raw`: backspace and DEL delete the previous character, ANSI CSI
/// sequences (`ESC [ ... final`) and other control characters vanish.
pub fn render(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{8}' | '\u{7f}' => {
                out.pop();
            }
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for f in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&f) {
                            break;
                        }
                    }
                }
            }
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Where [`parse_command_output`] is in one command's text.
#[derive(Clone, Copy)]
enum Phase {
    /// Before the prompt the command was typed at (stale output may come first).
    Before,
    /// In the echo: the prompt line's rest, then pieces written again after log lines.
    Echo { first: bool, after_log: bool },
    /// After the echo, until the next prompt.
    Output { after_log: bool },
}

/// Scans unconsumed console text for `[<PROMPT>]<echo of typed>\n ... \n<PROMPT>`; returns the
/// consumed length (through the prompt) and the output in between, or a protocol error.
/// `prompt_consumed`: the text starts right after the prompt the command was typed at.
fn parse_command_output(
    text: &str,
    typed: &str,
    prompt_consumed: bool,
) -> Option<(usize, Result<CommandOutput>)> {
    let expected = typed.trim_end();
    let broken = |why: String| Some((text.len(), Err(Error::Protocol(why))));
    let mut phase = if prompt_consumed {
        Phase::Echo {
            first: true,
            after_log: false,
        }
    } else {
        Phase::Before
    };
    let mut pos = 0;
    let mut out = CommandOutput::default();
    loop {
        if text[pos..].starts_with(PROMPT) {
            match phase {
                Phase::Before => {
                    pos += PROMPT.len();
                    phase = Phase::Echo {
                        first: true,
                        after_log: false,
                    };
                    continue;
                }
                Phase::Output { .. } => return Some((pos + PROMPT.len(), Ok(out))),
                Phase::Echo { .. } => {
                    return broken(format!(
                        "a prompt between the echo of `{expected}` and its output:\n{text}"
                    ))
                }
            }
        }
        let nl = text[pos..].find('\n')?;
        let raw = &text[pos..pos + nl];
        pos += nl + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let is_log = line.starts_with('[');
        match phase {
            // Stale output before the prompt (e.g. the boot banner); logs are kept.
            Phase::Before => {
                if is_log {
                    out.logs.push(line.to_string());
                }
            }
            Phase::Echo { first, .. } if is_log && !first => {
                out.logs.push(line.to_string());
                phase = Phase::Echo {
                    first: false,
                    after_log: true,
                };
            }
            Phase::Echo { first, after_log } => {
                let shown = render(line);
                if !first && !after_log {
                    return broken(format!(
                        "echo piece `{shown}` of `{expected}` not after a log line:\n{text}"
                    ));
                }
                if shown.trim_end() == expected {
                    phase = Phase::Output { after_log: false };
                } else if typed.starts_with(shown.as_str()) {
                    phase = Phase::Echo {
                        first: false,
                        after_log: false,
                    };
                } else {
                    return broken(format!(
                        "`{shown}` is not the echo of `{expected}`:\n{text}"
                    ));
                }
            }
            Phase::Output { .. } if is_log => {
                out.logs.push(line.to_string());
                phase = Phase::Output { after_log: true };
            }
            Phase::Output { after_log } => {
                // The whole line written again after a log line that came before its Enter
                // was read: still the echo (no command prints its own command line).
                let redraw =
                    after_log && out.lines.is_empty() && render(line).trim_end() == expected;
                if !redraw {
                    out.lines.push(line.to_string());
                }
                phase = Phase::Output { after_log: false };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, cmd: &str, prompt_consumed: bool) -> Result<(usize, CommandOutput)> {
        let (end, out) = parse_command_output(text, &render(cmd), prompt_consumed)
            .expect("the command's text is complete");
        out.map(|o| (end, o))
    }

    #[test]
    fn an_echo_in_pieces_around_log_lines_is_one_echo() {
        let text =
            "vm\r\n[INFO] a\r\nvm\r\n[INFO] b\r\nvmem\r\n[INFO] c\r\nid=vmem0 x=1\r\nhotmem> ";
        let (end, out) = parse(text, "vmem", true).unwrap();
        assert_eq!(end, text.len());
        assert_eq!(out.lines, vec!["id=vmem0 x=1"]);
        assert_eq!(out.logs, vec!["[INFO] a", "[INFO] b", "[INFO] c"]);
        // Interrupted after the whole line was typed but before its Enter was read.
        let text = "hotmem> vmem\r\n[INFO] a\r\nvmem\r\nid=vmem0\r\nhotmem> ";
        let (_, out) = parse(text, "vmem", false).unwrap();
        assert_eq!(out.lines, vec!["id=vmem0"]);
        // A log at an idle prompt: the empty first piece, then the echo.
        let (_, out) = parse(
            "\r\n[INFO] a\r\ncheck\r\ncheck: ok\r\nhotmem> ",
            "check",
            true,
        )
        .unwrap();
        assert_eq!(out.lines, vec!["check: ok"]);
        // Still arriving: wait.
        assert!(parse_command_output("vm\r\n[INFO] a\r\nvm", "vmem", true).is_none());
        // A command with no output still ends at the real prompt.
        let (_, out) = parse("\r\nhotmem> ", "", true).unwrap();
        assert!(out.lines.is_empty());
        let (_, out) = parse("\r\n[INFO] a\r\n\r\nhotmem> ", "", true).unwrap();
        assert!(out.lines.is_empty());
    }

    #[test]
    fn a_prompt_between_echo_and_output_is_an_error() {
        let bad = [
            // A redrawn prompt with the half line.
            (
                "chec\r\n[INFO] x\r\nhotmem> check\r\ncheck: ok\r\nhotmem> ",
                true,
            ),
            (
                "hotmem> chec\r\n[INFO] x\r\nhotmem> check\r\ncheck: ok\r\nhotmem> ",
                false,
            ),
            // A bare redrawn prompt before the first byte was echoed.
            (
                "\r\n[INFO] x\r\nhotmem> check\r\ncheck: ok\r\nhotmem> ",
                true,
            ),
            // Two prompts after the previous command.
            ("hotmem> check\r\ncheck: ok\r\nhotmem> ", true),
            // Not the echo; an echo piece without a log line before it.
            ("chex\r\ncheck: ok\r\nhotmem> ", true),
            ("che\r\ncheck\r\ncheck: ok\r\nhotmem> ", true),
        ];
        for (text, consumed) in bad {
            let err = parse(text, "check", consumed).unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{text:?}: {err}");
        }
    }

    use std::sync::mpsc;

    /// A pipe made of a channel: the fake guest writes, the console reads.
    struct ChanReader {
        rx: mpsc::Receiver<Vec<u8>>,
        buf: Vec<u8>,
    }

    impl Read for ChanReader {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            while self.buf.is_empty() {
                match self.rx.recv() {
                    Ok(b) => self.buf = b,
                    Err(_) => return Ok(0),
                }
            }
            let n = out.len().min(self.buf.len());
            out[..n].copy_from_slice(&self.buf[..n]);
            self.buf.drain(..n);
            Ok(n)
        }
    }

    struct ChanWriter(mpsc::Sender<Vec<u8>>);

    impl Write for ChanWriter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .send(b.to_vec())
                .map_err(|_| std::io::ErrorKind::BrokenPipe)?;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A fake shell speaking the console contract: echo (backspace as `\b \b`), CRLF, prompt.
    fn fake_guest(boot_banner: &str) -> Console {
        let (to_host, from_guest) = mpsc::channel::<Vec<u8>>();
        let (to_guest, from_host) = mpsc::channel::<Vec<u8>>();
        let banner = boot_banner.to_string();
        thread::spawn(move || {
            let out = |s: &str| to_host.send(s.as_bytes().to_vec()).is_ok();
            out(&banner);
            out("[INFO] booted\r\nhotmem> ");
            let mut line = String::new();
            for chunk in from_host {
                for b in chunk {
                    match b {
                        b'\r' => {
                            out("\r\n");
                            let reply = match line.as_str() {
                                "mem" => {
                                    "[INFO] racing log\r\nnode=all zone=all present_kib=524288\r\n"
                                        .to_string()
                                }
                                "panic" => "PANIC: at src/x.rs:1\r\n".to_string(),
                                "" => String::new(),
                                other => format!("unknown command: {other}\r\n"),
                            };
                            // Split the reply to exercise partial reads.
                            let (a, b) = reply.split_at(reply.len() / 2);
                            out(a);
                            thread::sleep(Duration::from_millis(5));
                            out(b);
                            if line == "panic" {
                                return;
                            }
                            out("hotmem> ");
                            line.clear();
                        }
                        0x7f => {
                            if line.pop().is_some() {
                                out("\u{8} \u{8}");
                            }
                        }
                        b => {
                            line.push(b as char);
                            out(&(b as char).to_string());
                        }
                    }
                }
            }
        });
        Console::new(
            ChanReader {
                rx: from_guest,
                buf: Vec::new(),
            },
            ChanWriter(to_guest),
        )
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn command_output_between_echo_and_prompt() {
        let mut c = fake_guest("hello\r\n");
        c.wait_for_prompt(T).unwrap();
        let out = c.command("mem", T).unwrap();
        assert_eq!(out.lines, vec!["node=all zone=all present_kib=524288"]);
        assert_eq!(out.logs, vec!["[INFO] racing log"]);
        assert_eq!(
            out.records().unwrap()[0].u64("present_kib").unwrap(),
            524288
        );
        let out = c.command("bogus x", T).unwrap();
        assert_eq!(out.text(), "unknown command: bogus x");
        let out = c.command("", T).unwrap();
        assert!(out.lines.is_empty());
    }

    #[test]
    fn backspace_editing_matches_rendered_echo() {
        let mut c = fake_guest("");
        // Prompt not consumed first: the command still finds its echo.
        let out = c.command("memx\u{7f}", T).unwrap();
        assert_eq!(out.lines, vec!["node=all zone=all present_kib=524288"]);
    }

    #[test]
    fn panic_fails_fast_unless_expected() {
        let mut c = fake_guest("");
        c.wait_for_prompt(T).unwrap();
        let started = Instant::now();
        let err = c.command("panic", Duration::from_secs(30)).unwrap_err();
        assert!(matches!(err, Error::GuestPanic { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(c.panic_line().unwrap(), "PANIC: at src/x.rs:1");

        let mut c = fake_guest("");
        c.expect_panic(true);
        c.wait_for_prompt(T).unwrap();
        c.send(b"panic\r").unwrap();
        c.wait_for(PANIC_MARKER, T).unwrap();
        // The fake guest hung up: the next wait reports it at once.
        let err = c.wait_for("never", Duration::from_secs(30)).unwrap_err();
        assert!(matches!(err, Error::QemuExited { .. }), "{err}");
        c.wait_closed(T).unwrap();
    }

    #[test]
    fn timeout_names_the_wait() {
        let mut c = fake_guest("");
        let err = c.wait_for("never", Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("\"never\""), "{err}");
    }

    #[test]
    fn render_and_utf8() {
        assert_eq!(render("memx\u{8} \u{8}"), "mem");
        assert_eq!(render("a\u{1b}[2Kb\u{7f}c"), "ac");
        let mut p = vec![b'a', 0xc3];
        assert_eq!(decode_utf8(&mut p), "a");
        p.push(0xa9);
        assert_eq!(decode_utf8(&mut p), "é");
        let mut bad = vec![0xff, b'x'];
        assert_eq!(decode_utf8(&mut bad), "\u{fffd}x");
        assert_eq!(
            find_panic_line("a\r\nPANIC: boom\r\nb"),
            Some("PANIC: boom".into())
        );
    }
}
