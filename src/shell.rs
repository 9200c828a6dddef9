//! The console shell's pure half: line editing, command parsing and bootargs parsing.
//! Executing commands is kernel glue (`src/kernel/shell.rs`); everything here runs under
//! host tests.
//!
//! Console contract (tests rely on it): the shell echoes input; every line ends in CRLF;
//! each command's output is followed by exactly one fresh `hotmem> ` prompt, the only one
//! written for that command line (how log lines keep that is `crate::console`'s rule); log
//! lines start with `[` and never split an output line; status output is one record per line
//! of `key=value` tokens. Bad input gets a usage message, never a panic.

use arrayvec::ArrayString;

/// Printed before every command line.
pub const PROMPT: &str = "hotmem> ";
/// Most tasks `spin` starts.
pub const MAX_SPIN_TASKS: u64 = 64;
/// How long `vmem wait` waits when not told.
pub const VMEM_WAIT_DEFAULT_MS: u64 = 60_000;
/// Longest `vmem wait` timeout (a day).
pub const VMEM_WAIT_MAX_MS: u64 = 86_400_000;
/// Longest input line; further characters are refused (a bell is echoed).
pub const MAX_LINE: usize = 200;

/// What the terminal should see after one input byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// Nothing to echo.
    None,
    /// Echo these bytes.
    Echo(ArrayString<4>),
    /// The line is complete: echo CRLF, then run it.
    Line(ArrayString<MAX_LINE>),
}

/// Line editor: printable ASCII appends, backspace/DEL erases, CR or LF ends the line
/// (LF right after CR is ignored so CRLF terminals don't produce empty lines).
#[derive(Default)]
pub struct LineEditor {
    buf: ArrayString<MAX_LINE>,
    last_cr: bool,
}

impl LineEditor {
    /// Takes one input byte and says what to echo, or hands out the finished line.
    pub fn feed(&mut self, b: u8) -> Feed {
        let was_cr = core::mem::replace(&mut self.last_cr, b == b'\r');
        match b {
            b'\n' if was_cr => Feed::None,
            b'\r' | b'\n' => Feed::Line(core::mem::take(&mut self.buf)),
            0x08 | 0x7f => {
                if self.buf.pop().is_some() {
                    Feed::Echo(ArrayString::from("\x08 \x08").unwrap_or_default())
                } else {
                    Feed::None
                }
            }
            0x20..=0x7e => {
                if self.buf.try_push(b as char).is_ok() {
                    let mut e = ArrayString::new();
                    e.push(b as char);
                    Feed::Echo(e)
                } else {
                    Feed::Echo(ArrayString::from("\x07").unwrap_or_default())
                }
            }
            _ => Feed::None,
        }
    }
}

/// A parsed command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `help`: one line per command.
    Help,
    /// `mem`: memory per node and zone.
    Mem,
    /// `cpus`: one line per CPU.
    Cpus,
    /// `irqs`: one line per interrupt source (kind, INTID, MSI-X vector, count).
    Irqs,
    /// `fault`: a deliberate data abort.
    Fault,
    /// `poweroff`.
    Poweroff,
    /// `reboot`.
    Reboot,
    /// `sections`: one line per present memory section.
    Sections,
    /// `check`: the memory model's invariant checker.
    Check,
    /// `memtest <MiB>`: allocate, fill, verify and free movable memory.
    Memtest {
        /// How much, in MiB (> 0).
        mib: u64,
    },
    /// `memtest sample`: write and verify one page in every online Movable section.
    MemtestSample,
    /// `peek <phys-addr>`: read 8 bytes of physical memory.
    Peek {
        /// The address (8-byte aligned).
        pa: u64,
    },
    /// `vmem`: one line per virtio-mem device.
    Vmem,
    /// `vmem wait [vmemN] [timeout_ms]`: wait until the device (every device) is settled.
    VmemWait {
        /// `vmemN`, or every device.
        dev: Option<usize>,
        /// How long to wait at most, in ms (default [`VMEM_WAIT_DEFAULT_MS`]).
        timeout_ms: u64,
    },
    /// `vmem state <vmemN> <addr> <size>`: the device's STATE over a range next to the
    /// guest's bitmap.
    VmemState {
        /// `vmemN`.
        dev: usize,
        /// Start of the range (physical).
        addr: u64,
        /// Its size in bytes.
        size: u64,
    },
    /// One line per task.
    Ps,
    /// Test load: `tasks` busy tasks counting iterations for `ms` milliseconds.
    Spin {
        /// How many tasks (1..=[`MAX_SPIN_TASKS`]).
        tasks: u32,
        /// How long, in ms (1..=60000).
        ms: u64,
    },
    /// `hog <MiB>`: start the workload.
    HogStart {
        /// How much memory it maps, in MiB.
        mib: u64,
        /// How many tasks (default max(1, CPUs - 1)).
        tasks: Option<u64>,
    },
    /// `hog status`.
    HogStatus,
    /// `hog stop`.
    HogStop,
    /// `pin <MiB>`: pin that much hog memory.
    Pin {
        /// How much, in MiB.
        mib: u64,
    },
    /// `unpin`.
    Unpin,
    /// `vmem stats`: the unplug profile, one record per phase.
    VmemStats,
    /// `vmem stats reset`: zero the unplug profile.
    VmemStatsReset,
    /// `locks`: hold times of the IRQ-masking locks, one line per lock class.
    Locks,
    /// `locks reset`: forget the hold times recorded so far.
    LocksReset,
    /// `inject …`: show or change the fault-injection plan ([`crate::inject`]).
    Inject(crate::inject::Command),
    /// Blank line.
    Empty,
}

/// One line per command for `help`, also used in usage messages.
pub const HELP: &[(&str, &str)] = &[
    ("help", "list commands"),
    ("mem", "memory per node and zone (KiB)"),
    ("sections", "present memory sections"),
    ("check", "run the memory-model invariant checker"),
    (
        "memtest <MiB>",
        "allocate, fill, verify and free MiB of movable memory",
    ),
    (
        "memtest sample",
        "fill, verify and free one page in every online Movable section",
    ),
    (
        "peek <phys-addr>",
        "read 8 bytes of physical memory (faults are caught)",
    ),
    (
        "vmem",
        "virtio-mem devices: sizes, state, why not converged",
    ),
    (
        "vmem wait [vmemN] [ms]",
        "wait until converged, stalled or broken (default 60000 ms), then print vmem",
    ),
    (
        "vmem state <vmemN> <addr> <size>",
        "device STATE of a block-aligned range next to the guest's view (size: bytes, K/M/G)",
    ),
    (
        "vmem stats [reset]",
        "unplug profile: calls, time and pages per phase, TLB broadcasts",
    ),
    ("cpus", "CPUs, their MPIDR, timer ticks, TLB broadcasts"),
    (
        "irqs",
        "interrupt sources: kind, INTID, MSI-X vector, count",
    ),
    ("ps", "tasks: cpu, state, switches"),
    (
        "locks [reset]",
        "IRQ-masking lock holds per lock: count, longest, 99th percentile (us)",
    ),
    (
        "hog <MiB> [tasks]|status|stop",
        "movable workload that verifies every byte while memory moves",
    ),
    (
        "pin <MiB>",
        "pin that much hog memory (highest addresses first), like in-flight DMA",
    ),
    ("unpin", "release the pins"),
    (
        "spin <tasks> <ms>",
        "run busy tasks for ms milliseconds (preemption and SMP test)",
    ),
    (
        "fault",
        "trigger a deliberate data abort (the kernel panics)",
    ),
    ("poweroff", "power the machine off"),
    ("reboot", "reset the machine"),
    (
        "inject [...]",
        "fault injection: alone what is armed; 'inject help' for the grammar",
    ),
];

/// Why a command line was refused (printed as the reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No such command (its first 28 characters).
    Unknown(ArrayString<32>),
    /// The command exists; this is its usage string.
    Usage(&'static str),
    /// The command and its words are right but a value is not (`<cmd>: FAIL <reason>`).
    Fail {
        /// The command as it prints itself (`vmem wait`).
        cmd: &'static str,
        /// Why, one word (`bad_timeout`).
        reason: &'static str,
    },
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParseError::Unknown(c) => write!(f, "unknown command '{c}'; try 'help'"),
            ParseError::Usage(u) => write!(f, "usage: {u}"),
            ParseError::Fail { cmd, reason } => write!(f, "{cmd}: FAIL {reason}"),
        }
    }
}

/// Parses one command line (words separated by ASCII whitespace).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let mut words = line.split_ascii_whitespace();
    let Some(cmd) = words.next() else {
        return Ok(Command::Empty);
    };
    let args: ArrayVecStr = words.collect();
    let no_args = |c: Command, usage: &'static str| {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Usage(usage))
        }
    };
    match cmd {
        "help" => no_args(Command::Help, "help"),
        "mem" => no_args(Command::Mem, "mem"),
        "cpus" => no_args(Command::Cpus, "cpus"),
        "irqs" => no_args(Command::Irqs, "irqs"),
        "fault" => no_args(Command::Fault, "fault"),
        "poweroff" => no_args(Command::Poweroff, "poweroff"),
        "reboot" => no_args(Command::Reboot, "reboot"),
        "sections" => no_args(Command::Sections, "sections"),
        "check" => no_args(Command::Check, "check"),
        "vmem" => parse_vmem(args.as_slice()),
        "ps" => no_args(Command::Ps, "ps"),
        "hog" => match args.as_slice() {
            ["status"] => Ok(Command::HogStatus),
            ["stop"] => Ok(Command::HogStop),
            [n, rest @ ..] if rest.len() <= 1 => {
                let tasks = rest.first().map(|t| parse_u64(t));
                match (parse_u64(n), tasks) {
                    (Some(mib), None | Some(Some(1..=64))) if (1..=1 << 20).contains(&mib) => {
                        Ok(Command::HogStart {
                            mib,
                            tasks: tasks.flatten(),
                        })
                    }
                    _ => Err(ParseError::Usage(HOG_USAGE)),
                }
            }
            _ => Err(ParseError::Usage(HOG_USAGE)),
        },
        "pin" => match args.as_slice() {
            [n] => match parse_u64(n) {
                Some(mib) if (1..=1 << 20).contains(&mib) => Ok(Command::Pin { mib }),
                _ => Err(ParseError::Usage("pin <MiB>")),
            },
            _ => Err(ParseError::Usage("pin <MiB>")),
        },
        "unpin" => no_args(Command::Unpin, "unpin"),
        "locks" => match args.as_slice() {
            [] => Ok(Command::Locks),
            ["reset"] => Ok(Command::LocksReset),
            _ => Err(ParseError::Usage("locks [reset]")),
        },
        "inject" => crate::inject::parse(args.as_slice())
            .map(Command::Inject)
            .map_err(ParseError::Usage),
        "spin" => match args.as_slice() {
            [t, m] => match (parse_u64(t), parse_u64(m)) {
                (Some(tasks @ 1..=MAX_SPIN_TASKS), Some(ms @ 1..=60_000)) => Ok(Command::Spin {
                    tasks: tasks as u32,
                    ms,
                }),
                _ => Err(ParseError::Usage(
                    "spin <tasks> <ms>  (tasks 1-64, ms 1-60000)",
                )),
            },
            _ => Err(ParseError::Usage("spin <tasks> <ms>")),
        },
        "memtest" => match args.as_slice() {
            ["sample"] => Ok(Command::MemtestSample),
            [n] => match parse_u64(n) {
                Some(mib) if mib > 0 => Ok(Command::Memtest { mib }),
                _ => Err(ParseError::Usage("memtest <MiB>  (MiB > 0)")),
            },
            _ => Err(ParseError::Usage("memtest <MiB> | memtest sample")),
        },
        "peek" => match args.as_slice() {
            [a] => match parse_u64(a) {
                Some(pa) if pa % 8 == 0 => Ok(Command::Peek { pa }),
                _ => Err(ParseError::Usage(
                    "peek <phys-addr>  (8-byte aligned, 0x... or decimal)",
                )),
            },
            _ => Err(ParseError::Usage("peek <phys-addr>")),
        },
        other => {
            let mut name = ArrayString::new();
            for c in other.chars().take(28) {
                let _ = name.try_push(c);
            }
            Err(ParseError::Unknown(name))
        }
    }
}

const HOG_USAGE: &str = "hog <MiB> [tasks]|status|stop";

const VMEM_USAGE: &str =
    "vmem | vmem wait [vmemN] [timeout_ms] | vmem state <vmemN> <addr> <size> | vmem stats [reset]";

/// `vmem` and its subcommands.
fn parse_vmem(args: &[&str]) -> Result<Command, ParseError> {
    const WAIT: &str = "vmem wait";
    const STATE: &str = "vmem state";
    let fail = |cmd, reason| Err(ParseError::Fail { cmd, reason });
    match args {
        [] => Ok(Command::Vmem),
        ["wait", rest @ ..] if rest.len() <= 2 => {
            let (dev, rest) = match rest {
                [d, rest @ ..] if d.starts_with("vmem") => match parse_vmem_id(d) {
                    Some(i) => (Some(i), rest),
                    None => return fail(WAIT, "bad_device"),
                },
                _ => (None, rest),
            };
            let timeout_ms = match rest {
                [] => VMEM_WAIT_DEFAULT_MS,
                [t] => match parse_u64(t) {
                    Some(ms) if ms <= VMEM_WAIT_MAX_MS => ms,
                    _ => return fail(WAIT, "bad_timeout"),
                },
                _ => return Err(ParseError::Usage("vmem wait [vmemN] [timeout_ms]")),
            };
            Ok(Command::VmemWait { dev, timeout_ms })
        }
        ["state", d, a, n] => match (parse_vmem_id(d), parse_u64(a), parse_size(n)) {
            (None, _, _) => fail(STATE, "bad_device"),
            (_, None, _) => fail(STATE, "bad_addr"),
            (_, _, None) => fail(STATE, "bad_size"),
            (Some(dev), Some(addr), Some(size)) => Ok(Command::VmemState { dev, addr, size }),
        },
        ["stats"] => Ok(Command::VmemStats),
        ["stats", "reset"] => Ok(Command::VmemStatsReset),
        ["stats", ..] => Err(ParseError::Usage("vmem stats [reset]")),
        ["wait", ..] => Err(ParseError::Usage("vmem wait [vmemN] [timeout_ms]")),
        ["state", ..] => Err(ParseError::Usage("vmem state <vmemN> <addr> <size>")),
        _ => Err(ParseError::Usage(VMEM_USAGE)),
    }
}

/// `vmemN` as the device index N.
fn parse_vmem_id(s: &str) -> Option<usize> {
    let n = s.strip_prefix("vmem")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// A size in bytes: decimal or 0x-hex, with an optional `K`, `M` or `G` suffix (binary).
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    parse_u64(num)?.checked_mul(1 << shift)
}

type ArrayVecStr<'a> = WordList<'a>;

/// Up to 8 argument words (more are a usage error in every command).
#[derive(Default)]
pub struct WordList<'a> {
    words: [&'a str; 8],
    len: usize,
}

impl<'a> WordList<'a> {
    fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn as_slice(&self) -> &[&'a str] {
        &self.words[..self.len]
    }
}

impl<'a> FromIterator<&'a str> for WordList<'a> {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut w = WordList::default();
        for s in iter {
            if w.len == w.words.len() {
                // Too many: the list stays full, which no command's pattern accepts.
                break;
            }
            w.words[w.len] = s;
            w.len += 1;
        }
        w
    }
}

/// Decimal or 0x-prefixed hexadecimal.
pub fn parse_u64(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Kernel command line options (`/chosen/bootargs`), space separated `key=value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootArgs {
    /// `loglevel=off|error|warn|info|debug|trace` (or 0-5): the console's log level
    /// (default info).
    pub loglevel: log::LevelFilter,
    /// `unplug_floor_mib=`: free memory unplug never goes below (default 64 MiB).
    pub unplug_floor_mib: u64,
    /// `memhp_online=movable|normal`: the zone hot-plugged memory goes to (default
    /// movable). With `normal`, kernel allocations may land there and unplug is best effort.
    pub memhp_online_normal: bool,
    /// `inject=<spec>;<spec>…`: fault injection armed from boot, the shell's `inject` specs
    /// with `,` between words (see [`crate::inject`]).
    pub inject: crate::inject::Plan,
    /// `memmap_on_memory=on|off`: hot-plugged sections keep their page descriptors in the
    /// plugged memory itself (`on`) or in Normal memory (`off`, the default; see
    /// [`crate::mm::memmap`]).
    pub memmap_on_memory: bool,
    /// `pci_msi=on|off`: PCI functions (virtio-mem, hotplug ports) use MSI-X through the
    /// DT's MSI controller (`on`, the default) or stay on INTx (`off`).
    pub pci_msi: bool,
}

impl Default for BootArgs {
    fn default() -> Self {
        BootArgs {
            loglevel: log::LevelFilter::Info,
            unplug_floor_mib: 64,
            memhp_online_normal: false,
            inject: crate::inject::Plan::new(),
            memmap_on_memory: false,
            pci_msi: true,
        }
    }
}

impl BootArgs {
    /// Parses `args`; unknown or malformed options are returned through `bad` so the kernel
    /// can warn about them once the console is up.
    pub fn parse<'a>(args: &'a str, mut bad: impl FnMut(&'a str)) -> BootArgs {
        let mut out = BootArgs::default();
        for opt in args.split_ascii_whitespace() {
            match opt.split_once('=') {
                Some(("loglevel", v)) => match parse_level(v) {
                    Some(l) => out.loglevel = l,
                    None => bad(opt),
                },
                Some(("unplug_floor_mib", v)) => match parse_u64(v) {
                    Some(n) if n <= u64::MAX >> 20 => out.unplug_floor_mib = n,
                    _ => bad(opt),
                },
                Some(("memhp_online", "movable")) => out.memhp_online_normal = false,
                Some(("memhp_online", "normal")) => out.memhp_online_normal = true,
                Some(("memmap_on_memory", "on")) => out.memmap_on_memory = true,
                Some(("memmap_on_memory", "off")) => out.memmap_on_memory = false,
                Some(("pci_msi", "on")) => out.pci_msi = true,
                Some(("pci_msi", "off")) => out.pci_msi = false,
                Some(("inject", v)) => match crate::inject::parse_bootarg(v) {
                    Ok(plan) => out.inject = plan,
                    Err(_) => bad(opt),
                },
                _ => bad(opt),
            }
        }
        out
    }
}

fn parse_level(v: &str) -> Option<log::LevelFilter> {
    use log::LevelFilter::*;
    Some(match v {
        "off" | "0" => Off,
        "error" | "1" => Error,
        "warn" | "2" => Warn,
        "info" | "3" => Info,
        "debug" | "4" => Debug,
        "trace" | "5" => Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(ed: &mut LineEditor, s: &[u8]) -> Vec<Feed> {
        s.iter()
            .map(|&b| ed.feed(b))
            .filter(|f| *f != Feed::None)
            .collect()
    }

    #[test]
    fn editing() {
        let mut ed = LineEditor::default();
        let out = feed_all(&mut ed, b"memx\x7f\r\n");
        assert_eq!(
            out.last(),
            Some(&Feed::Line(ArrayString::from("mem").unwrap()))
        );
        assert!(out.contains(&Feed::Echo(ArrayString::from("\x08 \x08").unwrap())));
        // CRLF gives one line, a lone LF another.
        let out = feed_all(&mut ed, b"a\nb\r");
        assert_eq!(
            out.iter().filter(|f| matches!(f, Feed::Line(_))).count(),
            2,
            "{out:?}"
        );
        // Backspace on empty line does nothing; overlong input rings the bell.
        assert_eq!(ed.feed(0x7f), Feed::None);
        for _ in 0..MAX_LINE {
            ed.feed(b'x');
        }
        assert_eq!(
            ed.feed(b'x'),
            Feed::Echo(ArrayString::from("\x07").unwrap())
        );
    }

    #[test]
    fn parsing() {
        assert_eq!(parse("  mem "), Ok(Command::Mem));
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse("memtest 64"), Ok(Command::Memtest { mib: 64 }));
        assert_eq!(parse("memtest 0x10"), Ok(Command::Memtest { mib: 16 }));
        assert!(matches!(parse("memtest"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("memtest -1"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("memtest 0"), Err(ParseError::Usage(_))));
        assert_eq!(parse("memtest sample"), Ok(Command::MemtestSample));
        assert!(matches!(
            parse("memtest sample 1"),
            Err(ParseError::Usage(_))
        ));
        assert!(matches!(
            parse("memtest samples"),
            Err(ParseError::Usage(_))
        ));
        assert!(matches!(
            parse("memtest 1 sample"),
            Err(ParseError::Usage(_))
        ));
        assert!(matches!(
            parse("mem extra args"),
            Err(ParseError::Usage("mem"))
        ));
        assert!(matches!(
            parse("nosuchcommand"),
            Err(ParseError::Unknown(_))
        ));
        let long = "x".repeat(150);
        assert!(matches!(parse(&long), Err(ParseError::Unknown(_))));
        assert!(matches!(
            parse("memtest 1 2 3 4 5 6 7 8 9 10"),
            Err(ParseError::Usage(_))
        ));
    }

    #[test]
    fn parsing_vmem() {
        assert_eq!(parse("vmem"), Ok(Command::Vmem));
        let wait = |dev, timeout_ms| Ok(Command::VmemWait { dev, timeout_ms });
        assert_eq!(parse("vmem wait"), wait(None, VMEM_WAIT_DEFAULT_MS));
        assert_eq!(
            parse("vmem wait vmem1"),
            wait(Some(1), VMEM_WAIT_DEFAULT_MS)
        );
        assert_eq!(parse("vmem wait 500"), wait(None, 500));
        assert_eq!(parse("vmem wait vmem0 0"), wait(Some(0), 0));
        let fail = |cmd, reason| Err(ParseError::Fail { cmd, reason });
        assert_eq!(parse("vmem wait vmemx"), fail("vmem wait", "bad_device"));
        assert_eq!(parse("vmem wait soon"), fail("vmem wait", "bad_timeout"));
        assert_eq!(
            parse("vmem wait vmem0 -1"),
            fail("vmem wait", "bad_timeout")
        );
        assert_eq!(
            parse("vmem wait 99999999999"),
            fail("vmem wait", "bad_timeout")
        );
        assert!(matches!(parse("vmem wait 1 2"), Err(ParseError::Usage(_))));
        assert!(matches!(
            parse("vmem wait vmem0 1 2"),
            Err(ParseError::Usage(_))
        ));
        assert_eq!(
            parse("vmem state vmem0 0x140000000 2M"),
            Ok(Command::VmemState {
                dev: 0,
                addr: 0x1_4000_0000,
                size: 2 << 20
            })
        );
        assert_eq!(
            parse("vmem state vmem12 4096 0x1000"),
            Ok(Command::VmemState {
                dev: 12,
                addr: 4096,
                size: 4096
            })
        );
        assert_eq!(
            parse("vmem state vmem0 0 1g"),
            Ok(Command::VmemState {
                dev: 0,
                addr: 0,
                size: 1 << 30
            })
        );
        assert_eq!(parse("vmem state 0 0 1M"), fail("vmem state", "bad_device"));
        assert_eq!(
            parse("vmem state vmem0 x 1M"),
            fail("vmem state", "bad_addr")
        );
        assert_eq!(
            parse("vmem state vmem0 0 1T"),
            fail("vmem state", "bad_size")
        );
        assert_eq!(
            parse("vmem state vmem0 0 M"),
            fail("vmem state", "bad_size")
        );
        assert_eq!(
            parse("vmem state vmem0 0 0xffffffffffffG"),
            fail("vmem state", "bad_size")
        );
        assert!(matches!(
            parse("vmem state vmem0 0"),
            Err(ParseError::Usage(_))
        ));
        assert!(matches!(parse("vmem statz"), Err(ParseError::Usage(_))));
        assert_eq!(
            ParseError::Fail {
                cmd: "vmem wait",
                reason: "bad_timeout"
            }
            .to_string(),
            "vmem wait: FAIL bad_timeout"
        );
        // Every subcommand is in `help`.
        for c in ["vmem wait", "vmem state"] {
            assert!(HELP.iter().any(|(h, _)| h.starts_with(c)), "{c}");
        }
    }

    #[test]
    fn parsing_tasks() {
        assert_eq!(parse("ps"), Ok(Command::Ps));
        assert_eq!(parse("irqs"), Ok(Command::Irqs));
        assert!(matches!(parse("irqs 1"), Err(ParseError::Usage("irqs"))));
        assert_eq!(
            parse("hog 1536"),
            Ok(Command::HogStart {
                mib: 1536,
                tasks: None
            })
        );
        assert_eq!(
            parse("hog 64 1"),
            Ok(Command::HogStart {
                mib: 64,
                tasks: Some(1)
            })
        );
        assert!(matches!(parse("hog 64 0"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("hog 64 1 2"), Err(ParseError::Usage(_))));
        assert_eq!(parse("hog status"), Ok(Command::HogStatus));
        assert_eq!(parse("hog stop"), Ok(Command::HogStop));
        assert!(matches!(parse("hog"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("hog 0"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("hog start"), Err(ParseError::Usage(_))));
        assert_eq!(parse("pin 64"), Ok(Command::Pin { mib: 64 }));
        assert!(matches!(parse("pin"), Err(ParseError::Usage(_))));
        assert_eq!(parse("unpin"), Ok(Command::Unpin));
        assert_eq!(parse("locks"), Ok(Command::Locks));
        assert_eq!(parse("locks reset"), Ok(Command::LocksReset));
        assert_eq!(parse("vmem stats"), Ok(Command::VmemStats));
        assert_eq!(parse("vmem stats reset"), Ok(Command::VmemStatsReset));
        assert!(matches!(parse("vmem stats x"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("locks x"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("locks reset 1"), Err(ParseError::Usage(_))));
        assert!(matches!(parse("ps 1"), Err(ParseError::Usage("ps"))));
        assert_eq!(parse("spin 4 500"), Ok(Command::Spin { tasks: 4, ms: 500 }));
        for bad in [
            "spin",
            "spin 4",
            "spin 0 10",
            "spin 65 10",
            "spin 4 0",
            "spin x 1",
        ] {
            assert!(matches!(parse(bad), Err(ParseError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn parsing_inject() {
        use crate::inject;
        assert_eq!(parse("inject"), Ok(Command::Inject(inject::Command::Show)));
        assert_eq!(
            parse("inject off"),
            Ok(Command::Inject(inject::Command::Off))
        );
        assert!(matches!(
            parse("inject reply refuse busy plug count=2"),
            Ok(Command::Inject(inject::Command::Arm(_)))
        ));
        assert!(matches!(parse("inject now"), Err(ParseError::Usage(_))));
        assert!(HELP.iter().any(|(c, _)| c.starts_with("inject")));
    }

    #[test]
    fn bootargs() {
        let mut bad = vec![];
        let a = BootArgs::parse("loglevel=debug foo loglevel=bogus", |s| bad.push(s));
        assert_eq!(a.loglevel, log::LevelFilter::Debug);
        assert_eq!(bad, vec!["foo", "loglevel=bogus"]);
        assert_eq!(BootArgs::parse("", |_| {}), BootArgs::default());
        let a = BootArgs::parse("unplug_floor_mib=128 memhp_online=normal", |_| panic!());
        assert_eq!((a.unplug_floor_mib, a.memhp_online_normal), (128, true));
        let mut bad = vec![];
        let a = BootArgs::parse("unplug_floor_mib=x memhp_online=zone", |s| bad.push(s));
        assert_eq!(bad, vec!["unplug_floor_mib=x", "memhp_online=zone"]);
        assert_eq!((a.unplug_floor_mib, a.memhp_online_normal), (64, false));
        let a = BootArgs::parse("inject=seed,3;reply,refuse,nack,plug", |_| panic!());
        assert_eq!(a.inject.seed(), 3);
        assert_eq!(a.inject.rules().count(), 1);
        let mut bad = vec![];
        let a = BootArgs::parse("inject=reply,refuse", |s| bad.push(s));
        assert_eq!(
            (bad, a.inject),
            (vec!["inject=reply,refuse"], Default::default())
        );
        assert!(!BootArgs::default().memmap_on_memory);
        assert!(BootArgs::parse("memmap_on_memory=on", |_| panic!()).memmap_on_memory);
        let mut bad = vec![];
        let a = BootArgs::parse("memmap_on_memory=on memmap_on_memory=yes", |s| bad.push(s));
        assert_eq!(
            (bad, a.memmap_on_memory),
            (vec!["memmap_on_memory=yes"], true)
        );
        assert!(
            !BootArgs::parse("memmap_on_memory=on memmap_on_memory=off", |_| panic!())
                .memmap_on_memory
        );
        assert!(BootArgs::default().pci_msi);
        let mut bad = vec![];
        let a = BootArgs::parse("pci_msi=off pci_msi=no", |s| bad.push(s));
        assert_eq!((bad, a.pci_msi), (vec!["pci_msi=no"], false));
    }
}
