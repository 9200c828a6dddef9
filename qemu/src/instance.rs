//! Launcher: one running QEMU with its console and QMP connection.
//!
//! [`Qemu::launch`] renders the [`Machine`], adds the harness's wiring and spawns QEMU:
//! - `-serial stdio -monitor none`: the guest console is QEMU's stdin/stdout, read by a
//!   [`Console`]; QEMU's stderr is collected separately (it explains refused command lines);
//! - `-qmp unix:<tmp>/qmp.sock,server=on,wait=off`: QMP on a socket in a per-instance temporary
//!   directory, connected with retries until a deadline (failing at once if QEMU exits).
//!
//! The image is `$HOTMEM_IMAGE`, else `<workspace>/target/hotmem.img`; a missing image is an
//! error that says to run `make kernel`. The QEMU binary is `$HOTMEM_QEMU`, else
//! `qemu-system-aarch64` from `PATH`. [`LaunchOptions::wrapper`] runs QEMU through another
//! command (e.g. `unshare -m sh -c '<set-up> && exec "$@"' sh`, which must end by exec'ing its
//! arguments so that the pid the harness kills is QEMU's).
//!
//! Dropping a [`Qemu`] kills the process and removes the temporary directory. [`Qemu::report`]
//! gathers what a failing test prints: the command line, QEMU's stderr and exit status, the QMP
//! transcript and the console tail.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::console::Console;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::qmp::Qmp;

/// How long QEMU gets to create its QMP socket and greet.
pub const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Console lines in [`Qemu::report`].
pub const REPORT_TAIL_LINES: usize = 60;

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The kernel image to boot: `$HOTMEM_IMAGE` or `<workspace>/target/hotmem.img`.
pub fn default_image() -> PathBuf {
    match std::env::var_os("HOTMEM_IMAGE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target").join("hotmem.img"),
    }
}

/// The QEMU binary: `$HOTMEM_QEMU` or `qemu-system-aarch64`.
pub fn qemu_binary() -> String {
    std::env::var("HOTMEM_QEMU")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "qemu-system-aarch64".into())
}

/// Launch options beyond the machine itself; the default (every field `None` or empty) is the
/// default image and QEMU, [`QMP_CONNECT_TIMEOUT`] and no wrapper.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Kernel image; [`default_image`] when `None`.
    pub image: Option<PathBuf>,
    /// QEMU binary; [`qemu_binary`] when `None`.
    pub qemu: Option<String>,
    /// Deadline for the QMP connection; [`QMP_CONNECT_TIMEOUT`] when `None`.
    pub qmp_timeout: Option<Duration>,
    /// A command (program and arguments) that QEMU's command line is appended to, empty for
    /// none. It must exec its arguments (see the module doc).
    pub wrapper: Vec<String>,
}

/// A running QEMU. See the module docs.
pub struct Qemu {
    child: Child,
    console: Console,
    qmp: Qmp,
    stderr: Arc<Mutex<String>>,
    command_line: Vec<String>,
    machine: Machine,
    started: Instant,
    exit_status: Option<ExitStatus>,
    // Dropped last: holds the QMP socket.
    _dir: tempfile::TempDir,
}

impl Qemu {
    /// Starts `machine` with the default image and QEMU.
    pub fn launch(machine: &Machine) -> Result<Qemu> {
        Qemu::launch_with(machine, &LaunchOptions::default())
    }

    /// Starts `machine` with `options`.
    pub fn launch_with(machine: &Machine, options: &LaunchOptions) -> Result<Qemu> {
        machine.validate()?;
        let image = options.image.clone().unwrap_or_else(default_image);
        if !image.is_file() {
            return Err(Error::ImageMissing { path: image });
        }
        let program = options.qemu.clone().unwrap_or_else(qemu_binary);
        let dir = tempfile::Builder::new()
            .prefix("hotmem-qemu-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let socket = dir.path().join("qmp.sock");

        let mut args = machine.args(&image);
        args.extend(
            [
                "-serial",
                "stdio",
                "-monitor",
                "none",
                "-qmp",
                &format!("unix:{},server=on,wait=off", socket.display()),
            ]
            .map(String::from),
        );
        let mut command_line = options.wrapper.clone();
        command_line.push(program.clone());
        command_line.extend(args.iter().cloned());

        let mut child = Command::new(&command_line[0])
            .args(&command_line[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: command_line[0].clone(),
                source,
            })?;
        let started = Instant::now();

        let (Some(stdin), Some(stdout), Some(stderr_pipe)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Protocol("QEMU started without piped stdio".into()));
        };
        let console = Console::new(stdout, stdin);
        let stderr = Arc::new(Mutex::new(String::new()));
        spawn_stderr_reader(stderr_pipe, Arc::clone(&stderr));

        let qmp = {
            let stderr = Arc::clone(&stderr);
            let child = &mut child;
            let timeout = options.qmp_timeout.unwrap_or(QMP_CONNECT_TIMEOUT);
            Qmp::connect(&socket, timeout, || match child.try_wait() {
                Ok(Some(status)) => {
                    // Give the stderr reader a moment to drain QEMU's last words.
                    thread::sleep(Duration::from_millis(100));
                    Err(Error::QemuExited {
                        what: "the QMP socket".into(),
                        status: Some(status),
                        stderr: lock(&stderr).clone(),
                    })
                }
                _ => Ok(()),
            })
        };
        let qmp = match qmp {
            Ok(q) => q,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(with_command_line(e, &command_line, &stderr));
            }
        };

        Ok(Qemu {
            child,
            console,
            qmp,
            stderr,
            command_line,
            machine: machine.clone(),
            started,
            exit_status: None,
            _dir: dir,
        })
    }

    /// The guest console.
    pub fn console(&mut self) -> &mut Console {
        &mut self.console
    }

    /// The QMP connection.
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// The console and the QMP connection at once, e.g. to poll both from two threads.
    pub fn console_and_qmp(&mut self) -> (&mut Console, &mut Qmp) {
        (&mut self.console, &mut self.qmp)
    }

    /// The machine this QEMU runs.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// When QEMU was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the first shell prompt; returns the time from spawn to the prompt.
    pub fn wait_for_boot(&mut self, deadline: impl Into<Deadline>) -> Result<Duration> {
        self.console.wait_for_prompt(deadline)?;
        Ok(self.started.elapsed())
    }

    /// The QEMU command line, shell-quoted.
    pub fn command_line(&self) -> String {
        shell_join(&self.command_line)
    }

    /// What QEMU wrote to stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// The exit status, if QEMU has exited (does not wait).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = self.child.try_wait().ok().flatten();
        }
        self.exit_status
    }

    /// Waits for QEMU to exit by itself; also waits (within the same deadline) for the console to
    /// drain, so the transcript is complete.
    pub fn wait_exit(&mut self, deadline: impl Into<Deadline>) -> Result<ExitStatus> {
        let deadline = deadline.into();
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.try_exit_status() {
                break s;
            }
            if deadline.expired() {
                return Err(Error::Timeout {
                    what: "QEMU to exit".into(),
                    waited: started.elapsed(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.console.wait_closed(deadline)?;
        Ok(status)
    }

    /// Sends `poweroff` to the shell and waits for QEMU to exit; returns its status.
    pub fn poweroff(&mut self, deadline: impl Into<Deadline>) -> Result<ExitStatus> {
        let deadline = deadline.into();
        self.console.send(b"poweroff\r")?;
        self.wait_exit(deadline)
    }

    /// Kills QEMU (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_exit_status().is_none() {
            let _ = self.child.kill();
            self.exit_status = self.child.wait().ok();
        }
    }

    /// Everything a failing test should print: command line, exit status, stderr, QMP transcript,
    /// console tail.
    pub fn report(&mut self) -> String {
        let status = self
            .try_exit_status()
            .map_or("still running".to_string(), |s| s.to_string());
        let mut r = String::new();
        let _ = writeln!(r, "==== machine: {}", self.machine);
        let _ = writeln!(r, "==== QEMU command line:\n{}", self.command_line());
        let _ = writeln!(
            r,
            "==== QEMU status: {status} (up {:.1?})",
            self.started.elapsed()
        );
        let stderr = self.stderr();
        if !stderr.trim().is_empty() {
            let _ = writeln!(r, "==== QEMU stderr:\n{}", stderr.trim_end());
        }
        let _ = writeln!(r, "==== QMP transcript:\n{}", self.qmp.transcript());
        let _ = writeln!(
            r,
            "==== console (last {REPORT_TAIL_LINES} lines):\n{}",
            self.console.tail(REPORT_TAIL_LINES)
        );
        let _ = writeln!(r, "==== end of report");
        r
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock(m: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_stderr_reader(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    let _ = thread::Builder::new()
        .name("hotmem-qemu-stderr".into())
        .spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                lock(&sink).push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
}

/// Adds the command line (and stderr) to errors from before the [`Qemu`] exists.
fn with_command_line(e: Error, command_line: &[String], stderr: &Mutex<String>) -> Error {
    let stderr = lock(stderr).clone();
    let detail = match e {
        Error::QemuExited { what, status, .. } => {
            return Error::QemuExited {
                what: format!("{what}; command line: {}", shell_join(command_line)),
                status,
                stderr,
            }
        }
        other => other.to_string(),
    };
    Error::Protocol(format!(
        "{detail}\ncommand line: {}\nQEMU stderr: {}",
        shell_join(command_line),
        stderr.trim()
    ))
}

/// Joins arguments into one shell-pasteable line.
pub fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/+@%".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let args = ["a".to_string(), "b c".into(), "it's".into(), String::new()];
        assert_eq!(shell_join(&args), r"a 'b c' 'it'\''s' ''");
    }

    #[test]
    fn missing_image_says_make_kernel() {
        let opts = LaunchOptions {
            image: Some("/nonexistent/hotmem.img".into()),
            ..LaunchOptions::default()
        };
        let err = Qemu::launch_with(&Machine::default(), &opts)
            .err()
            .expect("missing image must fail");
        assert!(err.to_string().contains("make kernel"), "{err}");
    }

    #[test]
    fn workspace_root_has_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("qemu").is_dir());
    }
}
