//! QMP client: the outside truth about the machine, over QEMU's QMP unix socket.
//!
//! Built on the `qapi` crate's synchronous [`qapi::Qmp`] (typed commands and replies generated
//! from QEMU's schema). Two things are added around it:
//! - a *tap* between `qapi` and the socket records every line sent and received, with the time
//!   since connect, into a transcript that failing tests print ([`Qmp::transcript`]);
//! - deadlines: before each command the socket's read and write timeouts are set to the time left,
//!   so a silent QEMU turns into [`Error::Timeout`]. After any I/O error the connection is marked
//!   broken (a reply may be half read) and later commands fail at once.
//!
//! `qapi` 0.15's schema predates QEMU 10; replies and events it does not know fail to decode
//! (the raw line is in the transcript). The commands used here have been stable for years.
//!
//! Events that arrive while waiting for a reply are queued; take them with [`Qmp::events`]. Note
//! that `MEMORY_DEVICE_SIZE_CHANGE` is rate-limited by QEMU to one per second per device, so
//! measuring plug progress means polling [`Qmp::virtio_mem_devices`]. QMP sends events only
//! along with replies to a reader, so [`Qmp::wait_device_deleted`] asks `query-version` between
//! looks at the queue; the events it passes over stay queued for [`Qmp::events`].
//!
//! Device and migration commands: [`Qmp::device_add`] (a virtio-mem from its
//! [`Machine::virtio_mem_props`]), [`Qmp::device_del`] (QEMU refuses it, with a QMP error, while
//! the device has memory plugged or requested) and [`Qmp::wait_device_deleted`]; saving a VM to
//! a file and restoring it: [`Qmp::stop`], [`Qmp::migrate`] to `file:PATH`,
//! [`Qmp::wait_migration`] until `completed`, on the restore target (started with
//! `-incoming defer`) [`Qmp::migrate_incoming`], then [`Qmp::cont`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use qapi::qmp;

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::machine::Machine;

/// Pause between two `query-version`s of [`Qmp::wait_device_deleted`] and two
/// `query-migrate`s of [`Qmp::wait_migration`].
const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A virtio-mem device as `query-memory-devices` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioMemInfo {
    /// QEMU id (`vm0`, ...).
    pub id: Option<String>,
    /// Guest physical start of the device region.
    pub memaddr: u64,
    /// `block-size`.
    pub block_size_bytes: u64,
    /// Plugged now (`size`).
    pub plugged_bytes: u64,
    /// `requested-size`.
    pub requested_bytes: u64,
    /// The backend size.
    pub max_bytes: u64,
    /// NUMA node of the device's memory.
    pub node: i64,
    /// QOM path of the backend (`/objects/mem0`).
    pub memdev: String,
}

/// `query-memory-size-summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySummary {
    /// Boot RAM.
    pub base_bytes: u64,
    /// Memory plugged through memory devices.
    pub plugged_bytes: u64,
}

#[derive(Default)]
struct Log {
    entries: Vec<String>,
    partial_in: Vec<u8>,
    partial_out: Vec<u8>,
}

/// Shared, line-oriented record of the QMP conversation.
#[derive(Clone)]
struct Transcript {
    started: Instant,
    log: Arc<Mutex<Log>>,
}

impl Transcript {
    fn record(&self, incoming: bool, bytes: &[u8]) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let log = &mut *log;
        let partial = if incoming {
            &mut log.partial_in
        } else {
            &mut log.partial_out
        };
        partial.extend_from_slice(bytes);
        while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            let arrow = if incoming { "<-" } else { "->" };
            log.entries.push(format!(
                "[{:8.3}s] {arrow} {}",
                self.started.elapsed().as_secs_f64(),
                text.trim_end()
            ));
        }
    }

    fn note(&self, text: &str) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.entries.push(format!(
            "[{:8.3}s] -- {text}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    fn render(&self) -> String {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = log.entries.join("\n");
        for (dir, partial) in [("<-", &log.partial_in), ("->", &log.partial_out)] {
            if !partial.is_empty() {
                out.push_str(&format!(
                    "\n[ partial ] {dir} {}",
                    String::from_utf8_lossy(partial)
                ));
            }
        }
        out
    }
}

/// The socket with a recorder on both directions.
struct Tap {
    socket: UnixStream,
    transcript: Transcript,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.transcript.record(true, &buf[..n]);
        Ok(n)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.socket.write(buf)?;
        self.transcript.record(false, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

type Stream = qapi::Stream<BufReader<Tap>, Tap>;

/// A QMP connection in command mode. See the module docs.
pub struct Qmp {
    inner: qapi::Qmp<Stream>,
    socket: UnixStream,
    transcript: Transcript,
    broken: Option<String>,
    version: String,
    /// Events taken off `qapi`'s queue by a wait that was looking for another one.
    held: Vec<qmp::Event>,
}

impl Qmp {
    /// Connects to the QMP socket at `path`, retrying until `deadline` while the socket does not
    /// exist yet. `alive` is asked between attempts and should fail when QEMU has exited, so that a
    /// refused command line is reported at once. Then reads the greeting and negotiates
    /// capabilities.
    pub fn connect(
        path: &Path,
        deadline: impl Into<Deadline>,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<Qmp> {
        let deadline = deadline.into();
        let started = Instant::now();
        let socket = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    alive()?;
                    if deadline.expired() {
                        return Err(Error::Timeout {
                            what: format!("QMP socket {} ({e})", path.display()),
                            waited: started.elapsed(),
                        });
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let transcript = Transcript {
            started: Instant::now(),
            log: Arc::default(),
        };
        transcript.note(&format!("connected to {}", path.display()));
        let clone = |s: &UnixStream| {
            s.try_clone()
                .map_err(|e| Error::io("cloning the QMP socket", e))
        };
        let tap = |s| Tap {
            socket: s,
            transcript: transcript.clone(),
        };
        let mut stream: Stream =
            qapi::Stream::new(BufReader::new(tap(clone(&socket)?)), tap(clone(&socket)?));

        set_timeouts(&socket, deadline, "the QMP greeting")?;
        let mut greeting = String::new();
        match stream.read_line(&mut greeting) {
            Ok(0) => {
                return Err(Error::QemuExited {
                    what: "the QMP greeting".into(),
                    status: None,
                    stderr: String::new(),
                })
            }
            Ok(_) => {}
            Err(e) => return Err(io_error("the QMP greeting", e)),
        }
        let version = parse_greeting(&greeting)?;

        let mut qmp = Qmp {
            inner: qapi::Qmp::new(stream),
            socket,
            transcript,
            broken: None,
            version,
            held: Vec::new(),
        };
        qmp.execute(&qmp::qmp_capabilities { enable: None }, deadline)?;
        Ok(qmp)
    }

    /// QEMU's version from the greeting, e.g. `10.0.2`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every line sent (`->`) and received (`<-`) so far, with timestamps.
    pub fn transcript(&self) -> String {
        self.transcript.render()
    }

    /// A transcript handle that stays readable after the client is gone or borrowed.
    pub fn transcript_handle(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let t = self.transcript.clone();
        move || t.render()
    }

    /// Events received so far, oldest first.
    pub fn events(&mut self) -> Vec<qmp::Event> {
        let mut all = std::mem::take(&mut self.held);
        all.extend(self.inner.events());
        all
    }

    /// Runs any typed QMP command from `qapi::qmp`.
    pub fn execute<C: qapi::Command>(
        &mut self,
        command: &C,
        deadline: impl Into<Deadline>,
    ) -> Result<C::Ok> {
        let what = format!("the reply to QMP {}", C::NAME);
        if let Some(why) = &self.broken {
            return Err(Error::Qmp {
                command: C::NAME.into(),
                message: format!("connection unusable after an earlier error: {why}"),
            });
        }
        set_timeouts(&self.socket, deadline.into(), &what)?;
        match self.inner.execute(command) {
            Ok(v) => Ok(v),
            Err(qapi::ExecuteError::Qapi(e)) => Err(Error::Qmp {
                command: C::NAME.into(),
                message: format!("{:?}: {}", e.class, e.desc),
            }),
            Err(qapi::ExecuteError::Io(e)) => {
                self.broken = Some(e.to_string());
                Err(io_error(&what, e))
            }
        }
    }

    /// `query-memory-devices`, keeping the virtio-mem devices.
    pub fn virtio_mem_devices(
        &mut self,
        deadline: impl Into<Deadline>,
    ) -> Result<Vec<VirtioMemInfo>> {
        let all = self.execute(&qmp::query_memory_devices {}, deadline)?;
        Ok(all
            .into_iter()
            .filter_map(|d| match d {
                qmp::MemoryDeviceInfo::virtio_mem(w) => Some(w.data),
                _ => None,
            })
            .map(|d| VirtioMemInfo {
                id: d.id,
                memaddr: d.memaddr,
                block_size_bytes: d.block_size,
                plugged_bytes: d.size,
                requested_bytes: d.requested_size,
                max_bytes: d.max_size,
                node: d.node,
                memdev: d.memdev,
            })
            .collect())
    }

    /// The virtio-mem device with QEMU id `id`.
    pub fn virtio_mem(&mut self, id: &str, deadline: impl Into<Deadline>) -> Result<VirtioMemInfo> {
        let mut one = self.virtio_mem_in_order(&[id.to_string()], deadline)?;
        Ok(one.remove(0))
    }

    /// The virtio-mem devices with QEMU ids `ids`, in that order.
    pub fn virtio_mem_in_order(
        &mut self,
        ids: &[String],
        deadline: impl Into<Deadline>,
    ) -> Result<Vec<VirtioMemInfo>> {
        let devs = self.virtio_mem_devices(deadline)?;
        ids.iter()
            .map(|id| {
                devs.iter()
                    .find(|d| d.id.as_deref() == Some(id.as_str()))
                    .cloned()
                    .ok_or_else(|| Error::Qmp {
                        command: "query-memory-devices".into(),
                        message: format!("no virtio-mem device with id {id}: {devs:?}"),
                    })
            })
            .collect()
    }

    /// `query-memory-size-summary`.
    pub fn memory_size_summary(&mut self, deadline: impl Into<Deadline>) -> Result<MemorySummary> {
        let m = self.execute(&qmp::query_memory_size_summary {}, deadline)?;
        Ok(MemorySummary {
            base_bytes: m.base_memory,
            plugged_bytes: m.plugged_memory.unwrap_or(0),
        })
    }

    /// `qom-set <id> requested-size <bytes>`: asks the guest to resize a virtio-mem device.
    pub fn set_requested_size(
        &mut self,
        id: &str,
        bytes: u64,
        deadline: impl Into<Deadline>,
    ) -> Result<()> {
        self.qom_set(id, "requested-size", bytes.into(), deadline)
    }

    /// `qom-set`.
    pub fn qom_set(
        &mut self,
        path: &str,
        property: &str,
        value: serde_json::Value,
        deadline: impl Into<Deadline>,
    ) -> Result<()> {
        let cmd = qmp::qom_set {
            path: path.into(),
            property: property.into(),
            value,
        };
        self.execute(&cmd, deadline).map(drop)
    }

    /// `qom-get`.
    pub fn qom_get(
        &mut self,
        path: &str,
        property: &str,
        deadline: impl Into<Deadline>,
    ) -> Result<serde_json::Value> {
        let cmd = qmp::qom_get {
            path: path.into(),
            property: property.into(),
        };
        self.execute(&cmd, deadline)
    }

    /// `human-monitor-command`: runs one HMP command (`info registers -a`, `info pic`, ...) and
    /// returns the text the monitor printed.
    pub fn hmp(&mut self, command: &str, deadline: impl Into<Deadline>) -> Result<String> {
        let cmd = qmp::human_monitor_command {
            command_line: command.into(),
            cpu_index: None,
        };
        self.execute(&cmd, deadline)
    }

    /// `system_reset`: QEMU resets the machine (and unplugs all virtio-mem memory).
    pub fn system_reset(&mut self, deadline: impl Into<Deadline>) -> Result<()> {
        self.execute(&qmp::system_reset {}, deadline).map(drop)
    }

    /// `device_add` of virtio-mem device `index` of `machine` (a [`crate::VirtioMem::hot`]
    /// device, whose backend `mem<index>` is already there), with id `vm<index>` behind its
    /// `bus`.
    pub fn device_add(
        &mut self,
        machine: &Machine,
        index: usize,
        deadline: impl Into<Deadline>,
    ) -> Result<()> {
        let id = Machine::virtio_mem_id(index);
        let props = machine.virtio_mem_props(index).ok_or_else(|| {
            Error::Machine(format!("device_add {id}: the machine has no such device"))
        })?;
        let cmd = qmp::device_add {
            driver: "virtio-mem-pci".into(),
            id: Some(id),
            bus: machine.virtio_mem[index].bus.clone(),
            arguments: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.json()))
                .collect(),
        };
        self.execute(&cmd, deadline).map(drop)
    }

    /// `device_del`: asks for the device's removal. Success means the request went out; the
    /// device is gone at `DEVICE_DELETED` ([`Qmp::wait_device_deleted`]).
    pub fn device_del(&mut self, id: &str, deadline: impl Into<Deadline>) -> Result<()> {
        self.execute(&qmp::device_del { id: id.into() }, deadline)
            .map(drop)
    }

    /// Waits for the `DEVICE_DELETED` event of device `id`.
    pub fn wait_device_deleted(&mut self, id: &str, deadline: impl Into<Deadline>) -> Result<()> {
        let deadline = deadline.into();
        let started = Instant::now();
        loop {
            let mut found = false;
            for event in self.inner.events().collect::<Vec<_>>() {
                match &event {
                    qmp::Event::DEVICE_DELETED { data, .. }
                        if data.device.as_deref() == Some(id) =>
                    {
                        found = true;
                    }
                    _ => self.held.push(event),
                }
            }
            if found {
                return Ok(());
            }
            if deadline.expired() {
                return Err(Error::Timeout {
                    what: format!("DEVICE_DELETED of {id}"),
                    waited: started.elapsed(),
                });
            }
            thread::sleep(EVENT_POLL_INTERVAL);
            self.execute(&qmp::query_version {}, deadline)?;
        }
    }

    /// `stop`: pauses the vCPUs.
    pub fn stop(&mut self, deadline: impl Into<Deadline>) -> Result<()> {
        self.execute(&qmp::stop {}, deadline).map(drop)
    }

    /// `cont`: resumes the vCPUs (after [`Qmp::stop`], or after an incoming migration).
    pub fn cont(&mut self, deadline: impl Into<Deadline>) -> Result<()> {
        self.execute(&qmp::cont {}, deadline).map(drop)
    }

    /// `migrate` to `uri` (`file:/path` saves the VM to a file). Returns at once; see
    /// [`Qmp::wait_migration`].
    pub fn migrate(&mut self, uri: &str, deadline: impl Into<Deadline>) -> Result<()> {
        let cmd = qmp::migrate {
            uri: Some(uri.into()),
            channels: None,
            detach: None,
            resume: None,
        };
        self.execute(&cmd, deadline).map(drop)
    }

    /// `migrate-incoming` from `uri` on a QEMU started with `-incoming defer`. Sent through HMP
    /// (`migrate_incoming`): `qapi` 0.15 expects a list in the QMP reply, which is `{}`.
    /// HMP reports a refusal as text, returned as an error.
    pub fn migrate_incoming(&mut self, uri: &str, deadline: impl Into<Deadline>) -> Result<()> {
        let out = self.hmp(&format!("migrate_incoming {uri}"), deadline)?;
        if out.trim().is_empty() {
            Ok(())
        } else {
            Err(Error::Qmp {
                command: "migrate_incoming".into(),
                message: out.trim().into(),
            })
        }
    }

    /// Polls `query-migrate` until the migration (outgoing, or incoming on a restore target)
    /// is `completed`; `failed` or `cancelled` is an error with QEMU's reason.
    pub fn wait_migration(&mut self, deadline: impl Into<Deadline>) -> Result<()> {
        let deadline = deadline.into();
        let started = Instant::now();
        loop {
            let info = self.execute(&qmp::query_migrate {}, deadline)?;
            match info.status {
                Some(qmp::MigrationStatus::completed) => return Ok(()),
                Some(s @ (qmp::MigrationStatus::failed | qmp::MigrationStatus::cancelled)) => {
                    return Err(Error::Qmp {
                        command: "query-migrate".into(),
                        message: format!(
                            "migration {s:?}: {}",
                            info.error_desc.unwrap_or_default()
                        ),
                    })
                }
                status => {
                    if deadline.expired() {
                        return Err(Error::Timeout {
                            what: format!("the migration to complete (status {status:?})"),
                            waited: started.elapsed(),
                        });
                    }
                }
            }
            thread::sleep(EVENT_POLL_INTERVAL);
        }
    }

    /// `quit`: QEMU exits. A connection closed before the reply counts as success.
    pub fn quit(&mut self, deadline: impl Into<Deadline>) -> Result<()> {
        match self.execute(&qmp::quit {}, deadline) {
            Ok(_) | Err(Error::QemuExited { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn set_timeouts(socket: &UnixStream, deadline: Deadline, what: &str) -> Result<()> {
    let left = deadline.remaining().ok_or_else(|| Error::Timeout {
        what: what.to_string(),
        waited: Duration::ZERO,
    })?;
    socket
        .set_read_timeout(Some(left))
        .and_then(|()| socket.set_write_timeout(Some(left)))
        .map_err(|e| Error::io("setting QMP socket timeouts", e))
}

fn io_error(what: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
            what: what.to_string(),
            waited: Duration::ZERO,
        },
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe => Error::QemuExited {
            what: what.to_string(),
            status: None,
            stderr: String::new(),
        },
        _ => Error::Qmp {
            command: what.to_string(),
            message: e.to_string(),
        },
    }
}

/// Extracts `major.minor.micro` from the QMP greeting line.
fn parse_greeting(line: &str) -> Result<String> {
    let bad = |why: &str| Error::Qmp {
        command: "greeting".into(),
        message: format!("{why}: {}", line.trim()),
    };
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
    let q = &v["QMP"]["version"]["qemu"];
    match (
        q["major"].as_u64(),
        q["minor"].as_u64(),
        q["micro"].as_u64(),
    ) {
        (Some(a), Some(b), Some(c)) => Ok(format!("{a}.{b}.{c}")),
        _ => Err(bad("no QMP.version.qemu")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_version() {
        let g = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
        assert_eq!(parse_greeting(g).unwrap(), "10.0.2");
        assert!(parse_greeting("{}").is_err());
        assert!(parse_greeting("nonsense").is_err());
    }

    #[test]
    fn transcript_splits_lines_in_both_directions() {
        let t = Transcript {
            started: Instant::now(),
            log: Arc::default(),
        };
        t.record(false, b"{\"execute\":");
        t.record(false, b"\"quit\"}\n");
        t.record(true, b"{\"return\": {}}\n{\"event\"");
        let r = t.render();
        assert!(r.contains("-> {\"execute\":\"quit\"}"), "{r}");
        assert!(r.contains("<- {\"return\": {}}"), "{r}");
        assert!(r.contains("partial ] <- {\"event\""), "{r}");
    }
}
