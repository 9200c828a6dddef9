//! Fault injection: the plan of faults to inject, its grammar and its seeded decisions, as plain
//! data. The kernel keeps one [`Plan`] behind a lock and asks it at a few thin hooks (the
//! virtio-mem driver glue, the page allocator, the heap, the migration engine's page-table
//! hooks); the shell's `inject …` command and the bootarg `inject=` change it. Nothing here
//! knows the kernel, and the hotplug policy knows nothing of injection: it only sees answers,
//! configurations and allocation results that a misbehaving device or a short memory could
//! have produced.
//!
//! # Faults
//! - **reply, replace**: the request reaches the device, which does what it was asked (ACK);
//!   the guest is told NACK, BUSY or ERROR instead. The device state *did* change. A replace
//!   rule fires only on a request the device acknowledged, so "the state changed" always holds.
//! - **reply, refuse**: the request is not sent; the guest sees the chosen answer. The device
//!   state did not change.
//! - **config torn**: a configuration read sees the generation counter change mid-read (the
//!   driver must read again); **config unaligned**: the read sees a `requested_size` that is
//!   not a multiple of the block size (the driver must refuse it).
//! - **alloc**: the model's page allocator fails (`pages`: any allocation, `movable`: movable
//!   ones, i.e. workloads and migration destinations, `kernel`: unmovable ones), or the heap
//!   returns null (`heap`; many heap users still treat that as fatal, so arm it only where a
//!   failure is expected).
//! - **migrate**: a page chosen for migration fails to move, as if a pin had arrived while it
//!   was being moved.
//!
//! # Rules and triggers
//! A [`Plan`] holds up to [`MAX_RULES`] rules, each a [`Spec`]: a fault and its trigger. Every
//! event that a rule matches (a request of the named type, a configuration read, an allocation
//! of the named kind, a page about to migrate) is a chance to fire:
//! - `count=N` alone: the next N matching events fire, then the rule is spent;
//! - `ppm=P` alone: each matching event fires with probability P per million, until `off`;
//! - both: with probability P per million, at most N times;
//! - neither: `count=1`.
//!
//! Rules are asked in slot order and the first that fires decides. A spent rule stays listed
//! (with `left=0` and how often it fired) until `inject off`; a new rule takes a free slot, or
//! else the slot of a spent one.
//!
//! # Seeds
//! Each rule draws from its own [`SplitMix64`] stream, derived from the plan's seed and the
//! rule's arming number (the first rule armed after boot or `off` is number 0, the next
//! 1, …). So a rule's decisions depend only on the seed, the order rules were armed in and the
//! sequence of events it matched: the same seed and the same commands replay the same faults.
//! `seed N` re-derives every armed rule's stream.
//!
//! # Grammar (shell)
//! ```text
//! inject                                         what is armed: `inject: seed=… armed=…`
//!                                                and one `rule=…` record per rule
//! inject help                                    this grammar
//! inject off                                     disarm everything (the seed stays)
//! inject seed <N>                                reseed
//! inject reply <replace|refuse> <nack|busy|error> <plug|unplug|unplug-all|state|any> [T]
//! inject config <torn|unaligned> [T]
//! inject alloc <pages|movable|kernel|heap> [T]
//! inject migrate [T]
//!   T = [count=N] [ppm=P]   N >= 1, 1 <= P <= 1000000; neither means count=1
//! ```
//!
//! # Grammar (bootarg)
//! Bootargs are separated by spaces, so `inject=` takes the same specs with `,` between the
//! words and `;` between the specs: `inject=seed,7;reply,refuse,busy,plug,count=3`. Only
//! `seed` and arming specs are allowed there; a bad spec makes the whole option ignored (and
//! reported) rather than half applied.
//!
//! # Records
//! `inject` alone prints `inject: seed=<N> armed=<active rules>`, then per rule, in slot order:
//! `rule=<slot> kind=reply mode=<m> answer=<a> request=<r> left=<N|-> ppm=<P> fired=<N>`, with
//! `kind=config fault=<torn|unaligned>`, `kind=alloc site=<site>` or `kind=migrate` in place of
//! the reply fields. `left=-` means no limit; `ppm=1000000` means every matching event.
//!
//! Locks: none here; the kernel's lock around its one `Plan` is a leaf (nothing allocates or
//! takes another lock while holding it), so every hook may take it, the heap's included.
#![forbid(unsafe_code)]

use core::fmt;
use hotmem_drivers::virtio_mem::{Request, Response};

#[cfg(test)]
mod tests;

/// Most rules a plan holds.
pub const MAX_RULES: usize = 8;
/// `ppm=` of a rule that fires on every matching event.
pub const PPM_ALWAYS: u32 = 1_000_000;

/// SplitMix64 (Steele, Lea, Flood 2014): the whole state is one word and every seed is fine,
/// so a rule's stream is cheap to keep and to re-derive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The stream for `seed`.
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// True with probability `ppm` per million.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        ((u128::from(self.next_u64()) * 1_000_000) >> 64) < u128::from(ppm)
    }
}

/// SplitMix64's output function: a bijection that scatters nearby inputs.
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How a reply fault treats the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sent; the device's ACK is replaced by the answer.
    Replace,
    /// Not sent; the answer is all the guest sees.
    Refuse,
}

/// The answer a reply fault gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// NACK.
    Nack,
    /// BUSY.
    Busy,
    /// ERROR.
    Error,
}

impl Answer {
    /// The device response it stands for.
    pub fn response(self) -> Response {
        match self {
            Answer::Nack => Response::Nack,
            Answer::Busy => Response::Busy,
            Answer::Error => Response::Error,
        }
    }
}

/// The requests a reply fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// PLUG.
    Plug,
    /// UNPLUG.
    Unplug,
    /// UNPLUG_ALL.
    UnplugAll,
    /// STATE.
    State,
    /// Every request.
    Any,
}

impl On {
    /// Whether `req` is of this type.
    pub fn matches(self, req: &Request) -> bool {
        matches!(
            (self, req),
            (On::Any, _)
                | (On::Plug, Request::Plug { .. })
                | (On::Unplug, Request::Unplug { .. })
                | (On::UnplugAll, Request::UnplugAll)
                | (On::State, Request::State { .. })
        )
    }
}

/// A torn configuration read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFault {
    /// The generation counter changes between the read's first and last look at it.
    Torn,
    /// `requested_size` reads as a value that is not a multiple of the block size.
    Unaligned,
}

/// Which allocations an alloc fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocSite {
    /// Every page allocation of the model.
    Pages,
    /// Movable page allocations: workloads and migration destinations.
    Movable,
    /// Unmovable page allocations: the kernel's (stacks, tables, heap pages, buffers).
    Kernel,
    /// Heap allocations.
    Heap,
}

impl AllocSite {
    /// Whether a rule for `self` applies to an allocation of `event` (which is `Movable`,
    /// `Kernel` or `Heap`, never `Pages`).
    fn covers(self, event: AllocSite) -> bool {
        self == event || (self == AllocSite::Pages && event != AllocSite::Heap)
    }
}

/// What a rule injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A device reply.
    Reply {
        /// Replace the real answer or refuse to send.
        mode: Mode,
        /// What the guest is told.
        answer: Answer,
        /// Which requests.
        on: On,
    },
    /// A torn configuration read.
    Config(ConfigFault),
    /// An allocation failure.
    Alloc(AllocSite),
    /// A migration failure.
    Migrate,
}

/// When a rule fires (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// Fire at most this many times (`None`: no limit).
    pub count: Option<u32>,
    /// Probability per million of each matching event ([`PPM_ALWAYS`]: every one).
    pub ppm: u32,
}

/// One rule as armed: a fault and its trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// What to inject.
    pub fault: Fault,
    /// When.
    pub trigger: Trigger,
}

/// A parsed `inject` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `inject`: print the plan.
    Show,
    /// `inject help`.
    Help,
    /// `inject off`.
    Off,
    /// `inject seed <N>`.
    Seed(u64),
    /// Arm a rule.
    Arm(Spec),
}

/// The grammar, one line per form, for `inject help`.
pub const HELP: &[&str] = &[
    "inject                          what is armed (one rule=... record per rule)",
    "inject off                      disarm every rule",
    "inject seed <N>                 reseed (same seed, same commands: same faults)",
    "inject reply <replace|refuse> <nack|busy|error> <plug|unplug|unplug-all|state|any> [T]",
    "inject config <torn|unaligned> [T]",
    "inject alloc <pages|movable|kernel|heap> [T]",
    "inject migrate [T]",
    "  T = [count=N] [ppm=P]: at most N times, each with P per million; default count=1",
    "  replace: the device acts, its ACK is replaced; refuse: the request is not sent",
    "  bootarg: inject=<spec>;<spec>... with ',' between words, e.g. inject=seed,7;migrate,ppm=500",
];

/// The usage line of a malformed `inject` command.
pub const USAGE: &str = "inject [off|seed <N>|reply ...|config ...|alloc ...|migrate ...|help]";

/// Why a rule could not be armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmError {
    /// Every slot holds an active rule.
    Full,
}

impl fmt::Display for ArmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArmError::Full => write!(f, "no free rule (at most {MAX_RULES}); 'inject off' first"),
        }
    }
}

/// The words of the grammar, one table per kind, read both ways: `name` gives a value's
/// word (for the records), `from_word` the value a word stands for (for the parser). So the
/// records always print what the parser reads.
macro_rules! words {
    ($ty:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $ty {
            fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $word,)+
                }
            }

            fn from_word(word: &str) -> Option<$ty> {
                match word {
                    $($word => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

words!(Mode { Replace => "replace", Refuse => "refuse" });
words!(Answer { Nack => "nack", Busy => "busy", Error => "error" });
words!(On {
    Plug => "plug", Unplug => "unplug", UnplugAll => "unplug-all", State => "state", Any => "any"
});
words!(ConfigFault { Torn => "torn", Unaligned => "unaligned" });
words!(AllocSite { Pages => "pages", Movable => "movable", Kernel => "kernel", Heap => "heap" });

/// Parses the words after `inject` (see the module doc's grammar).
pub fn parse(words: &[&str]) -> Result<Command, &'static str> {
    match words {
        [] => Ok(Command::Show),
        ["help"] => Ok(Command::Help),
        ["off"] => Ok(Command::Off),
        ["seed", n] => parse_num(n).map(Command::Seed).ok_or("inject seed <N>"),
        ["reply", mode, answer, on, trigger @ ..] => {
            let (Some(mode), Some(answer), Some(on)) = (
                Mode::from_word(mode),
                Answer::from_word(answer),
                On::from_word(on),
            ) else {
                return Err(HELP[3]);
            };
            arm(Fault::Reply { mode, answer, on }, trigger, HELP[3])
        }
        ["config", what, trigger @ ..] => match ConfigFault::from_word(what) {
            Some(what) => arm(Fault::Config(what), trigger, HELP[4]),
            None => Err(HELP[4]),
        },
        ["alloc", site, trigger @ ..] => match AllocSite::from_word(site) {
            Some(site) => arm(Fault::Alloc(site), trigger, HELP[5]),
            None => Err(HELP[5]),
        },
        ["migrate", trigger @ ..] => arm(Fault::Migrate, trigger, HELP[6]),
        _ => Err(USAGE),
    }
}

fn arm(fault: Fault, words: &[&str], usage: &'static str) -> Result<Command, &'static str> {
    let (mut count, mut ppm) = (None, None);
    for w in words {
        match w.split_once('=') {
            Some(("count", v)) if count.is_none() => {
                count = Some(
                    parse_num(v)
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|&n| n > 0),
                )
            }
            Some(("ppm", v)) if ppm.is_none() => {
                ppm = Some(
                    parse_num(v)
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| (1..=PPM_ALWAYS).contains(n)),
                )
            }
            _ => return Err(usage),
        }
    }
    let trigger = match (count, ppm) {
        (Some(None), _) | (_, Some(None)) => return Err(usage),
        (None, None) => Trigger {
            count: Some(1),
            ppm: PPM_ALWAYS,
        },
        (count, ppm) => Trigger {
            count: count.flatten(),
            ppm: ppm.flatten().unwrap_or(PPM_ALWAYS),
        },
    };
    Ok(Command::Arm(Spec { fault, trigger }))
}

fn parse_num(s: &str) -> Option<u64> {
    crate::shell::parse_u64(s)
}

/// Why the bootarg `inject=` was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootargError {
    /// A spec is malformed, or is neither `seed` nor an arming spec.
    Malformed,
    /// More rules than [`MAX_RULES`].
    TooManyRules,
}

/// Parses the value of the bootarg `inject=` into a plan (see the module doc).
pub fn parse_bootarg(value: &str) -> Result<Plan, BootargError> {
    let mut plan = Plan::new();
    for spec in value.split(';').filter(|s| !s.is_empty()) {
        let mut words = [""; 8];
        let mut n = 0;
        for w in spec.split(',') {
            *words.get_mut(n).ok_or(BootargError::Malformed)? = w;
            n += 1;
        }
        match parse(&words[..n]) {
            Ok(c @ (Command::Seed(_) | Command::Arm(_))) => {
                plan.apply(c).map_err(|_| BootargError::TooManyRules)?;
            }
            _ => return Err(BootargError::Malformed),
        }
    }
    Ok(plan)
}

/// Which kinds of fault have an active rule: a cheap test a hook makes before taking the
/// plan's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Armed(u8);

impl Armed {
    /// Reply rules.
    pub const REPLY: Armed = Armed(1 << 0);
    /// Config rules.
    pub const CONFIG: Armed = Armed(1 << 1);
    /// Page-allocation rules (`pages`, `movable`, `kernel`).
    pub const PAGES: Armed = Armed(1 << 2);
    /// Heap rules.
    pub const HEAP: Armed = Armed(1 << 3);
    /// Migration rules.
    pub const MIGRATE: Armed = Armed(1 << 4);

    /// The bits, for an atomic.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Whether any kind of `other` is armed in `bits`.
    pub const fn any_in(bits: u8, other: Armed) -> bool {
        bits & other.0 != 0
    }

    fn of(fault: &Fault) -> Armed {
        match fault {
            Fault::Reply { .. } => Armed::REPLY,
            Fault::Config(_) => Armed::CONFIG,
            Fault::Alloc(AllocSite::Heap) => Armed::HEAP,
            Fault::Alloc(_) => Armed::PAGES,
            Fault::Migrate => Armed::MIGRATE,
        }
    }
}

/// One armed rule and what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The fault and trigger as armed.
    pub spec: Spec,
    /// Firings left (`None`: no limit).
    pub left: Option<u32>,
    /// Times it fired.
    pub fired: u64,
    /// Its arming number (see the module doc's seeds).
    serial: u32,
    rng: SplitMix64,
}

impl Rule {
    /// Whether it can still fire.
    pub fn active(&self) -> bool {
        self.left != Some(0)
    }

    /// One matching event: fire or not (and count it).
    fn roll(&mut self) -> bool {
        if !self.active() {
            return false;
        }
        if self.spec.trigger.ppm < PPM_ALWAYS && !self.rng.chance_ppm(self.spec.trigger.ppm) {
            return false;
        }
        if let Some(n) = &mut self.left {
            *n -= 1;
        }
        self.fired += 1;
        true
    }
}

/// The stream of the rule armed `serial`-th under `seed`.
fn stream(seed: u64, serial: u32) -> SplitMix64 {
    SplitMix64::new(mix(seed ^ mix(u64::from(serial) + 1)))
}

/// The faults armed, and the seed their decisions come from (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    seed: u64,
    rules: [Option<Rule>; MAX_RULES],
    next_serial: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Plan::new()
    }
}

/// What [`Plan::apply`] did, for the command's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing changed (`Show`, `Help`).
    Nothing,
    /// Every rule is gone.
    Off,
    /// The new seed.
    Seed(u64),
    /// The slot of the new rule.
    Armed(usize),
}

impl Plan {
    /// Nothing armed, seed 0.
    pub const fn new() -> Plan {
        Plan {
            seed: 0,
            rules: [None; MAX_RULES],
            next_serial: 0,
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The rules by slot (`None`: free).
    pub fn rules(&self) -> impl Iterator<Item = (usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
    }

    /// The rule in `slot`, if any.
    pub fn rule(&self, slot: usize) -> Option<&Rule> {
        self.rules.get(slot)?.as_ref()
    }

    /// Which kinds have an active rule.
    pub fn armed(&self) -> Armed {
        Armed(
            self.rules()
                .filter(|(_, r)| r.active())
                .fold(0, |bits, (_, r)| bits | Armed::of(&r.spec.fault).0),
        )
    }

    /// Carries out a command; only arming can fail.
    pub fn apply(&mut self, cmd: Command) -> Result<Applied, ArmError> {
        match cmd {
            Command::Show | Command::Help => Ok(Applied::Nothing),
            Command::Off => {
                self.rules = [None; MAX_RULES];
                self.next_serial = 0;
                Ok(Applied::Off)
            }
            Command::Seed(seed) => {
                self.seed = seed;
                for r in self.rules.iter_mut().flatten() {
                    r.rng = stream(seed, r.serial);
                }
                Ok(Applied::Seed(seed))
            }
            Command::Arm(spec) => {
                let slot = self
                    .rules
                    .iter()
                    .position(Option::is_none)
                    .or_else(|| {
                        self.rules
                            .iter()
                            .position(|r| r.is_some_and(|r| !r.active()))
                    })
                    .ok_or(ArmError::Full)?;
                let serial = self.next_serial;
                self.next_serial += 1;
                self.rules[slot] = Some(Rule {
                    spec,
                    left: spec.trigger.count,
                    fired: 0,
                    serial,
                    rng: stream(self.seed, serial),
                });
                Ok(Applied::Armed(slot))
            }
        }
    }

    /// The first rule (in slot order) matching `matches` that fires on this event.
    fn fire(&mut self, matches: impl Fn(&Fault) -> bool) -> Option<Fault> {
        self.rules
            .iter_mut()
            .flatten()
            .filter(|r| matches(&r.spec.fault))
            .find_map(|r| r.roll().then_some(r.spec.fault))
    }

    /// About to send `req`: the answer to give instead of sending it, if a refuse rule fires.
    pub fn refuse(&mut self, req: &Request) -> Option<Response> {
        match self
            .fire(|f| matches!(f, Fault::Reply { mode: Mode::Refuse, on, .. } if on.matches(req)))
        {
            Some(Fault::Reply { answer, .. }) => Some(answer.response()),
            _ => None,
        }
    }

    /// The device answered `real` to `req`: the answer to give instead, if the device
    /// acknowledged and a replace rule fires.
    pub fn replace(&mut self, req: &Request, real: &Response) -> Option<Response> {
        if !matches!(real, Response::Ack | Response::AckState(_)) {
            return None;
        }
        match self
            .fire(|f| matches!(f, Fault::Reply { mode: Mode::Replace, on, .. } if on.matches(req)))
        {
            Some(Fault::Reply { answer, .. }) => Some(answer.response()),
            _ => None,
        }
    }

    /// A configuration read: whether it is torn this way.
    pub fn config(&mut self, what: ConfigFault) -> bool {
        self.fire(|f| *f == Fault::Config(what)).is_some()
    }

    /// An allocation of `site` (`Movable`, `Kernel` or `Heap`): whether it fails.
    pub fn alloc(&mut self, site: AllocSite) -> bool {
        self.fire(|f| matches!(f, Fault::Alloc(s) if s.covers(site)))
            .is_some()
    }

    /// A page about to migrate: whether its migration fails.
    pub fn migrate(&mut self) -> bool {
        self.fire(|f| *f == Fault::Migrate).is_some()
    }

    /// The header record `inject` prints before the rules.
    pub fn header(&self) -> impl fmt::Display + '_ {
        Header(self)
    }
}

struct Header<'a>(&'a Plan);

impl fmt::Display for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let armed = self.0.rules().filter(|(_, r)| r.active()).count();
        write!(f, "inject: seed={} armed={armed}", self.0.seed)
    }
}

impl fmt::Display for Fault {
    /// The kind-specific fields of a rule record.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Reply { mode, answer, on } => write!(
                f,
                "kind=reply mode={} answer={} request={}",
                mode.name(),
                answer.name(),
                on.name()
            ),
            Fault::Config(c) => write!(f, "kind=config fault={}", c.name()),
            Fault::Alloc(s) => write!(f, "kind=alloc site={}", s.name()),
            Fault::Migrate => f.write_str("kind=migrate"),
        }
    }
}

/// A rule's record, as `inject` prints it: `rule=<slot> <fault fields> left= ppm= fired=`.
pub struct RuleRecord<'a>(pub usize, pub &'a Rule);

impl fmt::Display for RuleRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RuleRecord(slot, r) = self;
        write!(f, "rule={slot} {} left=", r.spec.fault)?;
        match r.left {
            Some(n) => write!(f, "{n}")?,
            None => f.write_str("-")?,
        }
        write!(f, " ppm={} fired={}", r.spec.trigger.ppm, r.fired)
    }
}
