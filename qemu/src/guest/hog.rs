//! The hog's lines as types, and the actions on it.
//!
//! `hog <MiB>` starts max(1, CPUs - 1) tasks that map that much memory between them (4 KiB
//! pages), fill it with a pattern and verify it round after round, so memory that moves under
//! them (migration on unplug) is checked all the time. Each hog command prints one line:
//!
//! | command      | line                                        | type           |
//! |--------------|---------------------------------------------|----------------|
//! | `hog <MiB>`  | `hog: started tasks=N pages=P`              | [`HogStarted`] |
//! | `hog status` | `hog: tasks=N pages=P rounds=R errors=E`    | [`HogStatus`]  |
//! | `hog stop`   | `hog: stopped errors=E` (or `hog: not running`) | [`HogStopped`] |
//!
//! `pages` in the status is what the tasks mapped so far, `rounds` the fewest verify rounds any
//! task has completed (so `rounds >= 1` means all of it is mapped and checked once), `errors`
//! the pattern mismatches found: memory that changed under the hog. With no hog running the
//! status is all zero. Every user of the hog treats an error as a failure, so [`hog_clean`],
//! [`wait_hog`] and [`hog_stop`] fail as soon as one shows.

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::record::Record;

use super::{one_line, COMMAND};

/// `hog: started tasks=N pages=P`. Displays as the record after `hog: started`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HogStarted {
    /// Tasks started.
    pub tasks: u64,
    /// Pages they map together.
    pub pages: u64,
    record: Record,
}

/// `hog: tasks=N pages=P rounds=R errors=E`. Displays as the record after `hog:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HogStatus {
    /// Running tasks.
    pub tasks: u64,
    /// Pages mapped so far.
    pub pages: u64,
    /// Verify rounds completed by the slowest task.
    pub rounds: u64,
    /// Pattern mismatches found.
    pub errors: u64,
    record: Record,
}

/// `hog: stopped errors=E`. Displays as the record after `hog: stopped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HogStopped {
    /// Pattern mismatches found over the hog's life, its last round included.
    pub errors: u64,
    record: Record,
}

/// One line of a hog command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HogLine {
    /// After `hog <MiB>`.
    Started(HogStarted),
    /// After `hog status`.
    Status(HogStatus),
    /// After `hog stop`.
    Stopped(HogStopped),
}

impl HogLine {
    /// Parses a `hog: ...` line of the table in the module docs; `None` for anything else
    /// (`hog: not running`, `hog: already running; ...`, other commands' lines).
    pub fn parse(line: &str) -> Option<HogLine> {
        let rest = line.strip_prefix("hog:")?.trim_start();
        if let Some(r) = rest.strip_prefix("started") {
            let record = Record::parse(r).ok()?;
            return Some(HogLine::Started(HogStarted {
                tasks: record.u64("tasks").ok()?,
                pages: record.u64("pages").ok()?,
                record,
            }));
        }
        if let Some(r) = rest.strip_prefix("stopped") {
            let record = Record::parse(r).ok()?;
            return Some(HogLine::Stopped(HogStopped {
                errors: record.u64("errors").ok()?,
                record,
            }));
        }
        let record = Record::parse(rest).ok()?;
        Some(HogLine::Status(HogStatus {
            tasks: record.u64("tasks").ok()?,
            pages: record.u64("pages").ok()?,
            rounds: record.u64("rounds").ok()?,
            errors: record.u64("errors").ok()?,
            record,
        }))
    }
}

impl fmt::Display for HogStarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

impl fmt::Display for HogStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

impl fmt::Display for HogStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

/// Runs a hog command and returns its one line, parsed, and the line itself.
fn hog_command(
    console: &mut Console,
    cmd: &str,
    deadline: impl Into<Deadline>,
) -> Result<(Option<HogLine>, String)> {
    let line = one_line(console, cmd, deadline)?;
    Ok((HogLine::parse(&line), line))
}

/// `hog <mib>`: must print `hog: started ...` with at least one task. The tasks fill their
/// memory after this returns; [`wait_hog`] waits for that.
pub fn hog_start(
    console: &mut Console,
    mib: u64,
    deadline: impl Into<Deadline>,
) -> Result<HogStarted> {
    let cmd = format!("hog {mib}");
    match hog_command(console, &cmd, deadline)? {
        (Some(HogLine::Started(s)), _) if s.tasks > 0 => Ok(s),
        (_, line) => Err(Error::Protocol(format!(
            "`{cmd}` printed {line:?}: no task started"
        ))),
    }
}

/// `hog status`.
pub fn hog_status(console: &mut Console, deadline: impl Into<Deadline>) -> Result<HogStatus> {
    match hog_command(console, "hog status", deadline)? {
        (Some(HogLine::Status(s)), _) => Ok(s),
        (_, line) => Err(Error::Protocol(format!("`hog status` printed {line:?}"))),
    }
}

/// `hog status`, which must show no errors.
pub fn hog_clean(console: &mut Console, deadline: impl Into<Deadline>) -> Result<HogStatus> {
    let status = hog_status(console, deadline)?;
    if status.errors != 0 {
        return Err(Error::Protocol(format!(
            "the hog found corrupted pages: {status}"
        )));
    }
    Ok(status)
}

/// Reads `hog status` every `every` until `until` holds; fails on a hog error (see
/// [`hog_clean`]) and, naming `what` and the last status, once `deadline` has passed. Each
/// `hog status` gets [`COMMAND`] of its own.
pub fn wait_hog(
    console: &mut Console,
    what: &str,
    deadline: impl Into<Deadline>,
    every: Duration,
    mut until: impl FnMut(&HogStatus) -> bool,
) -> Result<HogStatus> {
    let deadline = deadline.into();
    let started = Instant::now();
    loop {
        let status = hog_clean(console, COMMAND)?;
        if until(&status) {
            return Ok(status);
        }
        if deadline.expired() {
            return Err(Error::Timeout {
                what: format!("{what} (last `{status}`)"),
                waited: started.elapsed(),
            });
        }
        thread::sleep(every);
    }
}

/// `hog stop`: must print `hog: stopped errors=0` (its last verify round is clean too).
pub fn hog_stop(console: &mut Console, deadline: impl Into<Deadline>) -> Result<HogStopped> {
    match hog_command(console, "hog stop", deadline)? {
        (Some(HogLine::Stopped(s)), _) if s.errors == 0 => Ok(s),
        (_, line) => Err(Error::Protocol(format!("`hog stop` printed {line:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hog_lines() {
        let Some(HogLine::Status(s)) = HogLine::parse("hog: tasks=1 pages=32768 rounds=4 errors=0")
        else {
            panic!("status line");
        };
        assert_eq!((s.tasks, s.pages, s.rounds, s.errors), (1, 32768, 4, 0));
        assert_eq!(s.to_string(), "tasks=1 pages=32768 rounds=4 errors=0");
        let Some(HogLine::Started(s)) = HogLine::parse("hog: started tasks=3 pages=1024") else {
            panic!("started line");
        };
        assert_eq!((s.tasks, s.pages), (3, 1024));
        let Some(HogLine::Stopped(s)) = HogLine::parse("hog: stopped errors=2") else {
            panic!("stopped line");
        };
        assert_eq!(s.errors, 2);
        assert_eq!(s.to_string(), "errors=2");
        for other in [
            "hog: not running",
            "tasks=1",
            "hog: tasks=1 pages=2",
            "hog: already running; 'hog stop' first",
        ] {
            assert_eq!(HogLine::parse(other), None, "{other}");
        }
    }
}
