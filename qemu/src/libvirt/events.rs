//! `virsh event DOM --all --loop` in the background, parsed into [`Event`]s.
//!
//! A reader thread folds the watcher's output into events (a line `event 'KIND' for domain
//! 'NAME': DETAIL`, then `key: value` lines for some kinds) with the time it read them, and
//! wakes waiters through a condvar. A watcher that has not registered with libvirtd yet misses
//! events and prints nothing to say it is ready, so [`EventWatch::start`] sets the domain's
//! title (`virsh desc --live --title`) until the watcher reports the `metadata-change`: every
//! event after that is seen.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::{Domain, URI};
use crate::deadline::Deadline;
use crate::error::{Error, Result};

/// One `virsh event` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When the watcher read it.
    pub at: Instant,
    /// The kind (`memory-device-size-change`, `device-removed`, `lifecycle`, …).
    pub kind: String,
    /// The text after `for domain 'NAME':` on the first line, then the lines that followed
    /// (`alias: virtiomem0`, `size: 1048576`), joined with `\n`.
    pub detail: String,
}

impl Event {
    /// The value of a `key: value` detail line.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.detail
            .lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    }
}

/// Folds `virsh event` output lines into events (see [`Event`]).
fn push_event_line(events: &mut Vec<Event>, line: &str, at: Instant) {
    if let Some(rest) = line.strip_prefix("event '") {
        if let Some((kind, tail)) = rest.split_once('\'') {
            let detail = tail.split_once("':").map_or("", |(_, d)| d).trim();
            events.push(Event {
                at,
                kind: kind.to_string(),
                detail: detail.to_string(),
            });
            return;
        }
    }
    if let Some(last) = events.last_mut() {
        if !line.trim().is_empty() && !line.starts_with("events received") {
            if !last.detail.is_empty() {
                last.detail.push('\n');
            }
            last.detail.push_str(line.trim());
        }
    }
}

struct Watched {
    events: Vec<Event>,
    closed: bool,
}

/// `virsh event DOM --all --loop` running in the background. See the module docs.
pub struct EventWatch {
    child: Child,
    shared: Arc<(Mutex<Watched>, Condvar)>,
}

impl EventWatch {
    /// Starts the watcher on `domain` and returns once it provably receives events.
    pub fn start(domain: &Domain, deadline: impl Into<Deadline>) -> Result<EventWatch> {
        let deadline = deadline.into();
        let mut child = Command::new("virsh")
            .args(["-c", URI, "event", domain.name(), "--all", "--loop"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "virsh event".into(),
                source,
            })?;
        let shared = Arc::new((
            Mutex::new(Watched {
                events: Vec::new(),
                closed: false,
            }),
            Condvar::new(),
        ));
        let stdout = child.stdout.take();
        let reader = Arc::clone(&shared);
        thread::spawn(move || {
            if let Some(out) = stdout {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let mut w = reader.0.lock().unwrap_or_else(PoisonError::into_inner);
                    push_event_line(&mut w.events, &line, Instant::now());
                    reader.1.notify_all();
                }
            }
            let mut w = reader.0.lock().unwrap_or_else(PoisonError::into_inner);
            w.closed = true;
            reader.1.notify_all();
        });
        let watch = EventWatch { child, shared };
        // The handshake: set titles until the watcher reports one.
        for n in 0.. {
            let title = format!("hotmem-watch-{n}");
            domain.virsh(
                &["desc", domain.name(), "--live", "--title", &title],
                deadline,
            )?;
            let step = Deadline::after(Duration::from_millis(500));
            let seen = watch.wait_until(step.min(deadline), |e| {
                e.kind == "metadata-change" && e.detail.contains("title")
            });
            if seen.is_ok() {
                return Ok(watch);
            }
            if deadline.expired() {
                return Err(Error::Timeout {
                    what: format!(
                        "`virsh event {} --all --loop` to report events",
                        domain.name()
                    ),
                    waited: Duration::ZERO,
                });
            }
        }
        unreachable!("the handshake loop only ends by returning")
    }

    /// The first event since the watcher started that `matches`; fails at the deadline or when
    /// `virsh event` exits.
    pub fn wait_until(
        &self,
        deadline: impl Into<Deadline>,
        mut matches: impl FnMut(&Event) -> bool,
    ) -> Result<Event> {
        let deadline = deadline.into();
        let started = Instant::now();
        let (lock, cond) = &*self.shared;
        let mut w = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(e) = w.events.iter().find(|e| matches(e)) {
                return Ok(e.clone());
            }
            if w.closed {
                return Err(Error::Virsh {
                    command: "virsh event --loop".into(),
                    message: "exited".into(),
                });
            }
            let Some(left) = deadline.remaining() else {
                let seen: Vec<String> = w
                    .events
                    .iter()
                    .map(|e| format!("{}: {}", e.kind, e.detail.replace('\n', ", ")))
                    .collect();
                return Err(Error::Timeout {
                    what: format!("a libvirt event (seen: {seen:?})"),
                    waited: started.elapsed(),
                });
            };
            w = cond
                .wait_timeout(w, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits for `memory-device-size-change` of `alias` reaching `size_kib`, after `since`.
    pub fn wait_size_change(
        &self,
        alias: &str,
        size_kib: u64,
        since: Instant,
        deadline: impl Into<Deadline>,
    ) -> Result<Event> {
        let size = size_kib.to_string();
        self.wait_until(deadline, |e| {
            e.at >= since
                && e.kind == "memory-device-size-change"
                && e.field("alias") == Some(alias)
                && e.field("size") == Some(size.as_str())
        })
    }

    /// Everything reported so far.
    pub fn events(&self) -> Vec<Event> {
        let w = self.shared.0.lock().unwrap_or_else(PoisonError::into_inner);
        w.events.clone()
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn virsh_event_lines() {
        let at = Instant::now();
        let mut events = Vec::new();
        for line in [
            "event 'metadata-change' for domain 'd': type title, uri <null>",
            "event 'memory-device-size-change' for domain 'd':",
            "alias: virtiomem0",
            "size: 1048576",
            "event 'device-removed' for domain 'd': virtiomem1",
            "",
            "events received: 3",
        ] {
            push_event_line(&mut events, line, at);
        }
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].kind, "metadata-change");
        assert_eq!(events[1].field("alias"), Some("virtiomem0"));
        assert_eq!(events[1].field("size"), Some("1048576"));
        assert_eq!(events[2].kind, "device-removed");
        assert_eq!(events[2].detail, "virtiomem1");
    }
}
