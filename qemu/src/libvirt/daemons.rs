//! The libvirt daemons: started when missing, stopped by PID when this process started them.
//!
//! A daemon runs when `/run/<name>.pid` names a live process of that name (`virtlogd`,
//! `libvirtd`; both write it when started by root with `-d`). [`Daemons::ensure`] starts each
//! missing one with `-d`, records the pid from its pidfile, and waits for `virsh list --all` to
//! answer; [`Daemons`]'s `Drop` sends SIGTERM to exactly those pids and SIGKILL to any still
//! alive after [`DAEMON_STOP`]. A daemon that was already running is never touched.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{virsh, Transcript, DAEMON_STOP, POLL_INTERVAL, URI};
use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// The libvirt daemons this process started. See the module docs.
pub struct Daemons {
    /// (name, pid), in start order.
    started: Vec<(&'static str, u32)>,
}

/// Whether a process called `name` still has `pid`. A daemon removes its pidfile before it has
/// exited, so this does not look at the pidfile; and its main thread turns zombie while the
/// others finish, so a zombie counts as still there until it is reaped.
fn alive(name: &str, pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
}

/// The pid in `/run/<name>.pid` if a process called `name` runs under it.
fn running(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/run/{name}.pid")).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == name).then_some(pid)
}

impl Daemons {
    /// Starts `virtlogd` and `libvirtd` unless they run, and waits for `virsh` to get an answer.
    pub fn ensure(deadline: impl Into<Deadline>) -> Result<Daemons> {
        let deadline = deadline.into();
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|l| l.split_whitespace().next().map(String::from))
            });
        if uid.as_deref() != Some("0") {
            return Err(Error::Virsh {
                command: "libvirtd -d".into(),
                message: format!(
                    "the libvirt system daemons ({URI}) need root; running as uid {}",
                    uid.unwrap_or_else(|| "?".into())
                ),
            });
        }
        let mut daemons = Daemons {
            started: Vec::new(),
        };
        for name in ["virtlogd", "libvirtd"] {
            if running(name).is_some() {
                continue;
            }
            let status = Command::new(name)
                .arg("-d")
                .stdin(Stdio::null())
                .status()
                .map_err(|source| Error::Spawn {
                    program: format!("{name} (libvirt-daemon: run `make deps`)"),
                    source,
                })?;
            if !status.success() {
                return Err(Error::Virsh {
                    command: format!("{name} -d"),
                    message: format!("exited with {status}"),
                });
            }
            let started = Instant::now();
            let pid = loop {
                if let Some(pid) = running(name) {
                    break pid;
                }
                if deadline.expired() {
                    return Err(Error::Timeout {
                        what: format!("{name} -d to write /run/{name}.pid"),
                        waited: started.elapsed(),
                    });
                }
                thread::sleep(POLL_INTERVAL);
            };
            daemons.started.push((name, pid));
        }
        let log = Transcript::new();
        let started = Instant::now();
        loop {
            match virsh(&["list", "--all"], deadline, &log) {
                Ok(_) => return Ok(daemons),
                Err(e) if deadline.expired() => {
                    return Err(Error::Virsh {
                        command: "virsh list --all".into(),
                        message: format!(
                            "libvirtd did not answer within {:.0?}: {e}\n{}",
                            started.elapsed(),
                            log.render()
                        ),
                    })
                }
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The daemons this guard started, by name and pid.
    pub fn started(&self) -> &[(&'static str, u32)] {
        &self.started
    }
}

impl Drop for Daemons {
    /// SIGTERM to every daemon this guard started at once (each takes about 2 s to exit), then
    /// SIGKILL to those still alive after [`DAEMON_STOP`].
    fn drop(&mut self) {
        let signal = |sig: &str, pid: u32| {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        };
        for &(_, pid) in self.started.iter().rev() {
            signal("-TERM", pid);
        }
        let deadline = Deadline::after(DAEMON_STOP);
        while self.started.iter().any(|&(n, p)| alive(n, p)) && !deadline.expired() {
            thread::sleep(POLL_INTERVAL);
        }
        for &(name, pid) in &self.started {
            if alive(name, pid) {
                signal("-KILL", pid);
            }
        }
    }
}
