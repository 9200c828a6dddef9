//! libvirt: the hotmem domain under `libvirtd`, driven with `virsh` as a VMM tester drives it.
//!
//! Everything goes through the `virsh` command line on `qemu:///system` ([`URI`]), the way a user
//! types it; each call has a deadline and lands in a transcript that a failing test prints
//! ([`Domain::report`]). The pieces:
//! - [`Daemons::ensure`]: `virtlogd -d` and `libvirtd -d`, each started only when its pidfile
//!   (`/run/<daemon>.pid`) names no live process of that name, then `virsh list --all` until
//!   the daemon answers (not `virsh version`: that probes the host architecture's QEMU, which
//!   takes seconds and is redone on every start where KVM exists). Dropping the guard stops,
//!   by PID, only the daemons it started (SIGTERM, SIGKILL after [`DAEMON_STOP`]). libvirt's
//!   system daemons need root; without it, or without the packages (`make deps`), `ensure` fails
//!   and says so. Nothing is skipped.
//! - [`DomainSpec`] fills the placeholders of `qemu/libvirt/hotmem.xml` ([`TEMPLATE`]): name,
//!   image, sizes, the virtio-mem device's [`Placement`] (libvirt's default, behind a root port,
//!   or a fixed slot on `pcie.0`) and the [`ConsoleKind`] (a unix socket that the harness reads,
//!   or a pty for `virsh console`).
//! - [`Domain`]: a uniquely named domain (`hotmem-<pid>-<n>`). [`Domain::define`] copies the
//!   image to `/var/lib/libvirt/images/` (mode 644: QEMU runs as `libvirt-qemu`) and defines
//!   it; [`Domain::start`] starts it paused, connects a [`Console`] to its serial socket, then
//!   resumes it, so not a byte of the boot is lost (QEMU drops serial output while no client is
//!   connected). Dropping it destroys and undefines the domain and removes the image copy.
//! - The VMM's operations: [`Domain::update_memory_device`] (`virsh update-memory-device
//!   --requested-size`), [`Domain::memory_devices`] (`virsh dumpxml`, each `<memory
//!   model='virtio-mem'>` as a [`MemoryDevice`]: alias, size, requested, current, PCI address),
//!   [`Domain::attach`] / [`Domain::detach`] (`virsh attach-device` / `detach-device --live`
//!   with [`virtio_mem_xml`]).
//! - [`EventWatch`]: `virsh event DOM --all --loop` in the background, its output parsed into
//!   [`Event`]s with their arrival time. A watcher that has not registered yet misses events,
//!   so [`EventWatch::start`] returns only after it has seen the `metadata-change` of a title
//!   it set (`virsh desc --live --title`). [`EventWatch::wait`] waits for an event by kind and
//!   detail (`memory-device-size-change` with `alias` and `size`, `device-removed`).

//!
//! [`run_on_terminal`] is `make libvirt-run`: the daemons, a domain with a pty console, started
//! paused; `virsh console` on this terminal (Ctrl-] leaves it), then the domain is resumed; when
//! the console ends the domain is destroyed and undefined and the daemons this run started stop.
//!
//! Files: this one (constants, the `virsh` runner and its transcript, [`run_on_terminal`]), `daemons.rs`
//! ([`Daemons`]), `domain.rs` ([`DomainSpec`], [`Domain`], [`MemoryDevice`]), `events.rs`
//! ([`EventWatch`], [`Event`]).

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::machine::GIB;

mod daemons;
mod domain;
mod events;

pub use daemons::Daemons;
pub use domain::{
    parse_memory_devices, virtio_mem_xml, ConsoleKind, Domain, DomainSpec, MemoryDevice, Placement,
};
pub use events::{Event, EventWatch};

/// The libvirt connection: the system instance of the QEMU driver.
pub const URI: &str = "qemu:///system";
/// The domain template, `qemu/libvirt/hotmem.xml`.
pub const TEMPLATE: &str = include_str!("../../libvirt/hotmem.xml");
/// Where libvirt's QEMU (user `libvirt-qemu`) can read the image.
pub const IMAGES: &str = "/var/lib/libvirt/images";
/// Where the serial sockets go (owned by `libvirt-qemu`, where QEMU may create them).
pub const SOCKETS: &str = "/var/lib/libvirt/qemu";
/// From starting the daemons to `virsh list --all` answering (0.3 s here).
pub const DAEMON_READY: Duration = Duration::from_secs(30);
/// `virsh define`: the first one on a machine probes QEMU's capabilities (cached afterwards).
pub const DEFINE: Duration = Duration::from_secs(90);
/// From SIGTERM to a daemon's exit before SIGKILL.
pub const DAEMON_STOP: Duration = Duration::from_secs(10);
/// One `virsh` command.
pub const VIRSH: Duration = Duration::from_secs(30);
/// Console lines in [`Domain::report`].
pub(crate) const REPORT_TAIL_LINES: usize = 60;
/// Pause between two looks at a process, a pidfile or a socket.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Runs `virsh -c URI args...` within `deadline`; its stdout on success, an [`Error::Virsh`]
/// with its stderr otherwise. `log` gets the command and its outcome.
pub(crate) fn virsh(
    args: &[&str],
    deadline: impl Into<Deadline>,
    log: &Transcript,
) -> Result<String> {
    let deadline = deadline.into();
    let line = format!("virsh {}", args.join(" "));
    let started = Instant::now();
    let mut child = Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: "virsh (libvirt-clients: run `make deps`)".into(),
            source,
        })?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| Error::io("waiting for virsh", e))?
        {
            break s;
        }
        if deadline.expired() {
            let _ = child.kill();
            let _ = child.wait();
            log.note(&format!("{line}: timed out"));
            return Err(Error::Timeout {
                what: line,
                waited: started.elapsed(),
            });
        }
        thread::sleep(POLL_INTERVAL);
    };
    let (out, err) = (join(out), join(err));
    log.note(&format!(
        "{line} -> {status} ({:.0?}){}{}",
        started.elapsed(),
        indent(&out),
        indent(&err)
    ));
    if status.success() {
        Ok(out)
    } else {
        Err(Error::Virsh {
            command: line,
            message: err.trim().to_string(),
        })
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

fn join(h: thread::JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}

fn indent(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("\n    {l}"))
        .collect()
}

/// Timestamped notes: the `virsh` commands of a domain and what they printed.
#[derive(Clone)]
pub(crate) struct Transcript {
    started: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Transcript {
    pub(crate) fn new() -> Self {
        Transcript {
            started: Instant::now(),
            lines: Arc::default(),
        }
    }

    pub(crate) fn note(&self, text: &str) {
        let at = self.started.elapsed().as_secs_f64();
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.push(format!("[{at:8.3}s] {text}"));
    }

    pub(crate) fn render(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }
}

/// `make libvirt-run`: boots `image` as a libvirt domain (boot RAM `ram_bytes`, one virtio-mem
/// device of `vmem_bytes` at `placement`, 1 GiB of room for `virsh attach-device`) and attaches
/// this terminal with `virsh console`; returns `virsh console`'s status once it ends. Prints
/// the domain's name and how to resize it first.
pub fn run_on_terminal(
    image: &Path,
    ram_bytes: u64,
    vmem_bytes: u64,
    placement: Placement,
) -> Result<ExitStatus> {
    let _daemons = Daemons::ensure(DAEMON_READY)?;
    let name = Domain::unique_name();
    let spec = DomainSpec {
        name: name.clone(),
        image: image.to_path_buf(),
        ram_bytes,
        vmem_bytes,
        attach_bytes: GIB,
        placement,
        console: ConsoleKind::Pty,
    };
    let mut domain = Domain::define(spec, image)?;
    domain.start_paused()?;
    eprintln!(
        "# libvirt domain {name} ({URI}); in another terminal:\n\
         #   virsh -c {URI} update-memory-device {name} --requested-size 1GiB\n\
         #   virsh -c {URI} dumpxml {name}\n\
         # Ctrl-] leaves the console; the domain is then destroyed and undefined."
    );
    let mut console = Command::new("virsh")
        .args(["-c", URI, "console", &name, "--force"])
        .spawn()
        .map_err(|source| Error::Spawn {
            program: "virsh console".into(),
            source,
        })?;
    // `virsh console` needs a moment to open the pty; output before that would be lost.
    thread::sleep(Duration::from_millis(500));
    let resumed = domain.virsh(&["resume", &name], VIRSH);
    let status = console
        .wait()
        .map_err(|e| Error::io("waiting for virsh console", e))?;
    resumed?;
    Ok(status)
}
