//! One error type for the harness: every way a launch, a console wait or a QMP command can fail.
//!
//! Each variant says what was being waited for, so a failing test names the step that broke before
//! the long report (console tail, QMP transcript, command line) that [`crate::Qemu::report`] prints.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// What went wrong while driving QEMU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel image is not there; nothing is silently skipped.
    #[error("kernel image {} not found: run `make kernel` first (or set HOTMEM_IMAGE)", path.display())]
    ImageMissing {
        /// Where it was looked for.
        path: PathBuf,
    },

    /// The QEMU binary could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The QEMU binary.
        program: String,
        /// Why it did not start.
        source: std::io::Error,
    },

    /// An I/O error on a pipe, socket or file, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A deadline passed before the awaited thing happened.
    #[error("timed out after {:.1?} waiting for {what}", waited)]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },

    /// The console shows a `PANIC:` line that the caller did not expect.
    #[error("guest panicked while waiting for {what}: {line}")]
    GuestPanic {
        /// What was awaited.
        what: String,
        /// The `PANIC:` line.
        line: String,
    },

    /// QEMU exited (or closed the console) while we still expected something from it.
    #[error("QEMU exited ({}) while waiting for {what}{}", status.map_or("status unknown".to_string(), |s| s.to_string()), stderr_suffix(stderr))]
    QemuExited {
        /// What was awaited.
        what: String,
        /// QEMU's exit status, when known.
        status: Option<ExitStatus>,
        /// What QEMU wrote to stderr (explains a refused command line).
        stderr: String,
    },

    /// QEMU answered a QMP command with an error, or the QMP stream made no sense.
    #[error("QMP {command}: {message}")]
    Qmp {
        /// The command (or what was being read).
        command: String,
        /// QEMU's error class and description, or what made no sense.
        message: String,
    },

    /// A libvirt daemon or `virsh` command failed (the daemons need root and `make deps`).
    #[error("{command}: {message}")]
    Virsh {
        /// The command line (or the daemon) that failed.
        command: String,
        /// Its stderr, or why it could not run.
        message: String,
    },

    /// The console output did not follow the shell contract, or a record did not parse.
    #[error("{0}")]
    Protocol(String),

    /// A machine description that QEMU would refuse or that the harness cannot express.
    #[error("invalid machine: {0}")]
    Machine(String),
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("; QEMU stderr:\n{s}")
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
