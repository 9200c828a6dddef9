//! The screen's rules against a simulated shell: a receive ring, the line editor and the
//! reader loop of the kernel (take a byte and echo it in one step, idle when the ring is
//! empty), with log lines injected between any two steps.

use super::*;
use crate::shell::PROMPT;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use proptest::prelude::*;

/// The shell and its console, one step at a time.
struct Sim {
    screen: Screen,
    out: Vec<u8>,
    ring: VecDeque<u8>,
    ed: LineEditor,
}

impl Sim {
    /// A shell that has written its first prompt.
    fn new() -> Sim {
        let mut s = Sim {
            screen: Screen::new(),
            out: Vec::new(),
            ring: VecDeque::new(),
            ed: LineEditor::default(),
        };
        s.screen.prompt(&mut s.out, PROMPT);
        s
    }

    /// Bytes reach the receive ring (the UART interrupt).
    fn arrive(&mut self, s: &str) {
        self.ring.extend(s.bytes());
    }

    /// A log line from anywhere.
    fn log(&mut self, msg: &str) {
        let pending = !self.ring.is_empty();
        self.screen
            .line(&mut self.out, format_args!("{msg}"), pending);
    }

    /// One step of the reader: a byte if there is one (its echo in the same step), else idle.
    fn step(&mut self) -> Option<String> {
        match self.ring.pop_front() {
            Some(b) => {
                let pending = !self.ring.is_empty();
                let line = self.screen.input(&mut self.out, &mut self.ed, b, pending)?;
                Some(String::from(line.as_str()))
            }
            None => {
                self.screen.idle(&mut self.out);
                None
            }
        }
    }

    /// Reads until a line is finished (the bytes must be in the ring).
    fn read_line(&mut self) -> String {
        loop {
            if let Some(l) = self.step() {
                return l;
            }
            assert!(!self.ring.is_empty(), "no line in the ring");
        }
    }

    /// Runs `line` as a command: one output line, then the prompt.
    fn execute(&mut self, line: &str) {
        let pending = !self.ring.is_empty();
        self.screen
            .line(&mut self.out, format_args!("{line}: ok"), pending);
        self.screen.prompt(&mut self.out, PROMPT);
    }

    fn text(&self) -> String {
        String::from_utf8(self.out.clone()).unwrap()
    }
}

#[test]
fn whole_line_in_the_ring_holds_logs_until_the_echo_is_done() {
    // A script's whole line is in the ring; a log line lands before any of the reader's
    // steps: it is held, and printed after the echo, before the output.
    for at in 0..=6 {
        let mut s = Sim::new();
        s.arrive("check\r");
        let mut line = None;
        for _ in 0..at {
            line = s.step();
        }
        s.log("[INFO] x");
        let line = line.unwrap_or_else(|| s.read_line());
        assert_eq!(line, "check");
        s.execute(&line);
        assert_eq!(
            s.text(),
            "hotmem> check\r\n[INFO] x\r\ncheck: ok\r\nhotmem> ",
            "log after {at} steps"
        );
    }
}

#[test]
fn log_lines_while_input_is_pending_produce_no_prompt_between_echo_and_output() {
    // The line reaches the ring in two pieces with log lines in the gap: the half line is
    // interrupted and written again without the prompt.
    let mut s = Sim::new();
    s.arrive("ch");
    assert_eq!(s.step(), None);
    assert_eq!(s.step(), None);
    s.log("[INFO] a");
    s.log("[DEBUG] b");
    s.arrive("eck\r");
    let line = s.read_line();
    s.execute(&line);
    assert_eq!(
        s.text(),
        "hotmem> ch\r\n[INFO] a\r\nch\r\n[DEBUG] b\r\nch\
         eck\r\ncheck: ok\r\nhotmem> "
    );
    assert_eq!(s.text().matches(PROMPT).count(), 2);
}

#[test]
fn a_person_typing_sees_log_lines_above_the_half_line() {
    let mut s = Sim::new();
    s.log("[INFO] at the prompt");
    s.arrive("mex\x7f");
    while s.step().is_none() && !s.ring.is_empty() {}
    s.log("[INFO] while typing");
    s.arrive("m\r");
    let line = s.read_line();
    assert_eq!(line, "mem");
    assert_eq!(
        s.text(),
        "hotmem> \r\n[INFO] at the prompt\r\nmex\x08 \x08\r\n[INFO] while typing\r\n\
         mex\x08 \x08m\r\n"
    );
}

#[test]
fn a_full_hold_buffer_drops_and_counts_and_never_blocks() {
    let mut s = Sim::new();
    s.arrive("vmem\r");
    let msg = "[DEBUG] 0123456789012345678901234567890123456789012345678901234567890123456789";
    let fit = HOLD_BYTES / (msg.len() + 1);
    for _ in 0..fit + 7 {
        s.log(msg);
    }
    assert_eq!(s.screen.held_lines(), fit);
    let line = s.read_line();
    s.execute(&line);
    let text = s.text();
    assert_eq!(text.matches(msg).count(), fit);
    assert!(
        text.contains("\r\n[WARN] console: 7 log lines dropped\r\nvmem: ok\r\n"),
        "{text}"
    );
    assert_eq!(text.matches(PROMPT).count(), 2);
    // The count is reported once.
    s.arrive("x\r");
    s.log("[INFO] y");
    let line = s.read_line();
    s.execute(&line);
    assert_eq!(s.text().matches("dropped").count(), 1);
}

#[test]
fn the_panic_writer_never_holds() {
    let mut s = Sim::new();
    s.arrive("check\r");
    s.step();
    s.log("[INFO] held");
    s.screen
        .emergency_line(&mut s.out, format_args!("PANIC: boom"));
    assert_eq!(
        s.text(),
        "hotmem> c\r\n[INFO] held\r\nPANIC: boom\r\n",
        "held lines first, then the panic line; no redraw"
    );
    let mut raw = Vec::new();
    emergency_line_unlocked(&mut raw, format_args!("PANIC: {}", 1));
    assert_eq!(raw, b"\r\nPANIC: 1\r\n");
}

#[test]
fn command_output_and_logs_of_a_running_command_print_at_once() {
    let mut s = Sim::new();
    s.arrive("mem\rcheck\r");
    let line = s.read_line();
    // The next line is already pending, but the shell line is closed: nothing is held.
    s.log("[INFO] during mem");
    assert_eq!(s.screen.held_lines(), 0);
    s.execute(&line);
    s.log("[INFO] at the next prompt");
    let line = s.read_line();
    s.execute(&line);
    assert_eq!(
        s.text(),
        "hotmem> mem\r\n[INFO] during mem\r\nmem: ok\r\nhotmem> check\r\n\
         [INFO] at the next prompt\r\ncheck: ok\r\nhotmem> "
    );
}

/// What a strict client checks for one command: the text from its prompt (exclusive) to the
/// next prompt (inclusive) is the echo — pieces that are each a prefix of the line, a redraw
/// only right after a log line — then log and output lines, and the prompt only at the end.
/// A line equal to the whole command right after the echo and a log line is a redraw too (the
/// line was interrupted before its Enter arrived).
fn check_command(block: &str, cmd: &str, logs: &mut Vec<String>) -> Result<(), String> {
    let body = block
        .strip_suffix(PROMPT)
        .ok_or_else(|| format!("no prompt at the end of {block:?}"))?;
    if body.contains(PROMPT) {
        return Err(format!("a second prompt in {block:?}"));
    }
    let lines: Vec<&str> = body.split("\r\n").collect();
    let (last, lines) = lines.split_last().unwrap();
    if !last.is_empty() {
        return Err(format!("output ends in a half line: {block:?}"));
    }
    let (mut echo_done, mut first, mut after_log) = (false, true, false);
    let mut output = Vec::new();
    for l in lines {
        if l.starts_with('[') {
            logs.push(String::from(*l));
            after_log = true;
            continue;
        }
        if !echo_done {
            if !first && !after_log {
                return Err(format!(
                    "an echo piece {l:?} not after a log line: {block:?}"
                ));
            }
            if *l == cmd {
                echo_done = true;
            } else if !cmd.starts_with(l) {
                return Err(format!("echo piece {l:?} of {cmd:?}"));
            }
        } else if !(output.is_empty() && after_log && *l == cmd) {
            output.push(*l);
        }
        first = false;
        after_log = false;
    }
    if output != [format!("{cmd}: ok")] {
        return Err(format!("output of {cmd:?}: {output:?}"));
    }
    Ok(())
}

/// One thing that happens next in the random schedule.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// The next `n` bytes of the script reach the ring.
    Arrive(usize),
    /// A log line.
    Log,
    /// The reader takes one step.
    Step,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (1usize..12).prop_map(Event::Arrive),
        Just(Event::Log),
        Just(Event::Step),
        Just(Event::Step),
    ]
}

proptest! {
    /// Any schedule of arrivals (a script's lines in pieces of any size), log lines and reader
    /// steps: one prompt per command, after its output; no prompt between echo and output;
    /// every log line printed once, whole, in order; nothing dropped at this volume.
    #[test]
    fn one_prompt_per_command_whatever_the_interleaving(
        events in proptest::collection::vec(event(), 1..200)
    ) {
        let cmds = ["check", "vmem", "mem", "hog status", ""];
        let script: String = cmds.iter().map(|c| format!("{c}\r")).collect();
        let mut sent = 0;
        let mut s = Sim::new();
        let mut nlog = 0;
        let mut done = 0;
        let mut run = |s: &mut Sim| {
            if let Some(line) = s.step() {
                s.execute(&line);
                done += 1;
            }
        };
        for e in events.iter().copied().chain(core::iter::repeat_n(Event::Step, 200)) {
            match e {
                Event::Arrive(n) => {
                    let n = n.min(script.len() - sent);
                    s.arrive(&script[sent..sent + n]);
                    sent += n;
                }
                Event::Log => {
                    s.log(&format!("[INFO] log {nlog}"));
                    nlog += 1;
                }
                Event::Step => run(&mut s),
            }
        }
        // Whatever did not arrive arrives now, and the shell reads it all.
        s.arrive(&script[sent..]);
        while !s.ring.is_empty() {
            run(&mut s);
        }
        run(&mut s);
        prop_assert_eq!(done, cmds.len());
        let text = s.text();
        prop_assert!(text.starts_with(PROMPT));
        // Split at each prompt: block k runs from prompt k (exclusive) to prompt k+1.
        let mut rest = &text[PROMPT.len()..];
        let mut logs = Vec::new();
        for cmd in cmds {
            let end = rest.find(PROMPT).map(|i| i + PROMPT.len());
            let end = end.ok_or_else(|| {
                TestCaseError::fail(format!("no prompt after {cmd:?}: {text:?}"))
            })?;
            check_command(&rest[..end], cmd, &mut logs)
                .map_err(|e| TestCaseError::fail(format!("{e}\nin {text:?}")))?;
            rest = &rest[end..];
        }
        // Logs after the last prompt (nothing pending) interrupt it like a person's line.
        for l in rest.split("\r\n").filter(|l| l.starts_with('[')) {
            logs.push(String::from(l));
        }
        let want: Vec<String> = (0..nlog).map(|i| format!("[INFO] log {i}")).collect();
        prop_assert_eq!(logs, want);
    }
}
